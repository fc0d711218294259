// Shared test plumbing: real servers on 127.0.0.1 port 0, raw sockets, condition waits.
import { join } from "node:path";
import type { Server, Subprocess } from "bun";
import { parseArgs } from "../src/cli/parse.ts";
import type { Options } from "../src/config/options.ts";
import { type Running, type StartOptions, startProxy } from "../src/proxy/server.ts";
import { setLogSink } from "../src/telemetry/log.ts";

/** Upper bound for any condition a test waits for. */
export const WAIT_DEADLINE_MS = 5_000;
const POLL_INTERVAL_MS = 10;

/** Polls `cond` until it is truthy or the deadline passes (then throws with `what`). */
export async function waitFor<T>(
  what: string,
  cond: () => T | Promise<T>,
  deadlineMs = WAIT_DEADLINE_MS,
): Promise<NonNullable<T>> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const v = await cond();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
  }
}

export type Handler = (req: Request, server: Server<undefined>) => Response | Promise<Response>;

/** A Bun backend on a free port that records what it received. */
export function backend(handler: Handler) {
  const seen: { method: string; url: string; headers: Headers; body: Uint8Array }[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req, srv) {
      const body = new Uint8Array(await req.clone().arrayBuffer());
      seen.push({ method: req.method, url: req.url, headers: req.headers, body });
      return handler(req, srv);
    },
  });
  return { server, port: server.port!, seen, stop: () => server.stop(true) };
}

/** Captured log lines of in-process proxies. */
export const logLines: string[] = [];
setLogSink((line) => {
  logLines.push(line);
  if (process.env.LB_TEST_LOG) process.stderr.write(line + "\n");
});

/** Options as the CLI would produce them from `args` (plus listen on 127.0.0.1:0, sp mode). */
export function optionsFrom(args: string[]): Options {
  const parsed = parseArgs(["--mode", "sp", "-h", "127.0.0.1", "-p", "1", ...args]);
  if (parsed.kind !== "run") throw new Error("expected run options");
  // port 0 is not a valid CLI value; tests need an ephemeral port.
  return { ...parsed.options, port: 0 };
}

/**
 * An in-process zzz-lb in front of `backends` ("host:port" specs). Active health probes are off
 * unless asked for, so backends see only the requests a test sends.
 */
export function proxy(
  backends: string[],
  extra: string[] = [],
  start: StartOptions = { activeProbes: false },
): Running & { port: number; url: string; close(): void } {
  const running = startProxy(optionsFrom([...backends.flatMap((b) => ["-b", b]), ...extra]), start);
  const port = running.server.port!;
  return Object.assign(running, {
    port,
    url: `http://127.0.0.1:${port}`,
    /** Test teardown: unlike stop(), no graceful drain, so a test that failed half-way holds nothing up. */
    close() {
      running.server.stop(true);
      void running.stop(); // closes the config watcher; the drain is already over
      running.fleet.close();
    },
  });
}

const REPO_ROOT = join(import.meta.dir, "..");
/** A spawned entry point that hangs is killed after this long, so the suite cannot hang on it. */
export const CHILD_TIMEOUT_MS = 20_000;

export interface MainProcess {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Resolves when stderr is closed (the process is gone). */
  stderrDone: Promise<void>;
}

/** Spawns `bun src/main.ts args` from the repo root, collecting stderr as it arrives. */
export function spawnMain(
  args: string[],
  env: Record<string, string | undefined> = process.env,
): MainProcess {
  const proc = Bun.spawn([process.execPath, "src/main.ts", ...args], {
    cwd: REPO_ROOT,
    env,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    timeout: CHILD_TIMEOUT_MS,
    killSignal: "SIGKILL",
  });
  let text = "";
  const stderrDone = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stderr) text += decoder.decode(chunk, { stream: true });
  })();
  return { proc, stderr: () => text, stderrDone };
}

/** Sends raw bytes and returns everything received until the server closes or `idleMs` of silence. */
export async function rawExchange(port: number, data: string | Uint8Array, idleMs = 500): Promise<string> {
  return (await rawSession(port, data, idleMs)).text;
}

export interface RawResult {
  /** Every byte received, latin1-decoded. */
  text: string;
  /** The server closed (or reset) the connection, as opposed to falling silent for `idleMs`. */
  closed: boolean;
  /** A socket error (e.g. a reset), if there was one. */
  error: Error | null;
}

/**
 * Sends raw bytes; also says whether the server closed the connection. Never rejects on a
 * socket error after connecting: a reset is an outcome tests assert on.
 */
export async function rawSession(
  port: number,
  data: string | Uint8Array,
  idleMs = 1_000,
): Promise<RawResult> {
  const chunks: Uint8Array[] = [];
  return await new Promise<RawResult>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | null = null;
    let settled = false;
    let error: Error | null = null;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      resolve({ text: Buffer.concat(chunks).toString("latin1"), closed, error });
    };
    const arm = (sock: { end(): void }) => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        finish(false);
        sock.end();
      }, idleMs);
    };
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(sock) {
          sock.write(data);
          arm(sock);
        },
        data(sock, d) {
          chunks.push(new Uint8Array(d));
          arm(sock);
        },
        end() {
          finish(true);
        },
        close() {
          finish(true);
        },
        error(_s, err) {
          error = err;
          finish(true);
        },
      },
    }).catch(reject);
  });
}

/** Status code of the first response in a raw exchange, or 0 when there is none. */
export function statusOf(raw: string): number {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(raw);
  return m ? Number(m[1]) : 0;
}

/** One accepted connection of a rawBackend. */
export interface RawConn {
  readonly id: number;
  /** Every byte received on it so far, latin1-decoded. */
  received: string;
  /** The proxy's side closed (or reset) it. */
  closed: boolean;
  readonly sock: import("bun").Socket<RawConn>;
  /** Called when the socket can take more after a short write. */
  onDrain?: () => void;
}

/**
 * A TCP backend with exact, hand-written misbehaviour: `onData` sees each connection's bytes as they
 * arrive (conn.received accumulates them) and writes whatever it likes to `conn.sock`.
 */
export function rawBackend(onData: (conn: RawConn, chunk: string) => void) {
  const conns: RawConn[] = [];
  const listener = Bun.listen<RawConn>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(sock) {
        const conn: RawConn = { id: conns.length, received: "", closed: false, sock };
        sock.data = conn;
        conns.push(conn);
      },
      data(sock, d) {
        const chunk = Buffer.from(d).toString("latin1");
        sock.data.received += chunk;
        onData(sock.data, chunk);
      },
      drain(sock) {
        sock.data.onDrain?.();
      },
      close(sock) {
        sock.data.closed = true;
      },
      error(sock) {
        sock.data.closed = true;
      },
    },
  });
  return { port: listener.port, conns, stop: () => listener.stop(true) };
}

/** A TCP port that nothing listens on (bound, then released). */
export function closedPort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

// ---------------------------------------------------------------------------------------------------------
// Raw TCP peers, for what Bun.serve and fetch would normalise: exact bytes, header lines, 1xx, framing.

function toBytes(data: string | Uint8Array): Uint8Array {
  return typeof data === "string" ? Buffer.from(data, "latin1") : data;
}

function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** One request as a raw backend received it; `head` is the request line and header lines (latin1). */
export interface RawRequest {
  readonly conn: RawBackendConn;
  readonly head: string;
  readonly method: string;
  readonly target: string;
  /** Header lines exactly as received ("Name: value"), in order. */
  readonly lines: string[];
  /** The body after removing the framing (Content-Length or chunked). */
  readonly body: Uint8Array;
  /** Whether the body arrived chunked. */
  readonly chunked: boolean;
}

/** Lower-cased name -> values, from "Name: value" lines. */
export function headerMap(lines: readonly string[]): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    const list = map.get(name);
    if (list) list.push(value);
    else map.set(name, [value]);
  }
  return map;
}

/**
 * Decodes a chunked body starting at `from`; returns the data and the offset after the final CRLF, or null
 * while incomplete. Extensions and trailers are skipped (the tests only need the data bytes).
 */
export function decodeChunked(buf: Uint8Array, from: number): { body: Uint8Array; end: number } | null {
  const parts: Uint8Array[] = [];
  let p = from;
  for (let guard = 0; guard < 1_000_000; guard++) {
    const lineEnd = Buffer.from(buf.buffer, buf.byteOffset, buf.length).indexOf("\r\n", p, "latin1");
    if (lineEnd < 0) return null;
    const sizeText = Buffer.from(buf.subarray(p, lineEnd)).toString("latin1").split(";")[0]!.trim();
    const size = Number.parseInt(sizeText, 16);
    if (!Number.isFinite(size)) throw new Error(`bad chunk size line ${JSON.stringify(sizeText)}`);
    p = lineEnd + 2;
    if (size === 0) {
      // Trailer section: lines until an empty one.
      const text = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
      for (let g = 0; g < 1000; g++) {
        const e = text.indexOf("\r\n", p, "latin1");
        if (e < 0) return null;
        const empty = e === p;
        p = e + 2;
        if (empty) return { body: Buffer.concat(parts), end: p };
      }
      throw new Error("too many trailer lines");
    }
    if (buf.length < p + size + 2) return null;
    parts.push(buf.subarray(p, p + size));
    p += size + 2;
  }
  throw new Error("too many chunks");
}

/** Splits one request off the front of `buf`; null while incomplete. */
function takeRequest(conn: RawBackendConn, buf: Uint8Array): { req: RawRequest; used: number } | null {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  const headEnd = b.indexOf("\r\n\r\n", 0, "latin1");
  if (headEnd < 0) return null;
  const head = b.toString("latin1", 0, headEnd);
  const [requestLine, ...lines] = head.split("\r\n");
  const [method = "", target = ""] = requestLine!.split(" ");
  const fields = headerMap(lines);
  const bodyStart = headEnd + 4;
  if ((fields.get("transfer-encoding")?.join(",") ?? "").toLowerCase().includes("chunked")) {
    const dec = decodeChunked(buf, bodyStart);
    if (dec === null) return null;
    return { req: { conn, head, method, target, lines, body: dec.body, chunked: true }, used: dec.end };
  }
  const cl = Number(fields.get("content-length")?.[0] ?? "0");
  if (buf.length < bodyStart + cl) return null;
  const body = buf.slice(bodyStart, bodyStart + cl);
  return { req: { conn, head, method, target, lines, body, chunked: false }, used: bodyStart + cl };
}

/** A connection accepted by rawHttpBackend(). */
export interface RawBackendConn {
  readonly id: number;
  /** Every byte received on this connection, in order. */
  received: Uint8Array;
  readonly requests: RawRequest[];
  closed: boolean;
  /** Writes everything eventually (continues on drain). */
  write(data: string | Uint8Array): void;
  /** Half-closes once everything written has gone out. */
  end(): void;
  /** Closes at once. */
  destroy(): void;
}

/**
 * A TCP backend that writes exactly what the test tells it to. `onRequest` runs for each complete request
 * (Content-Length or chunked framing; neither = no body); `onData`, if given, for every byte batch.
 */
export function rawHttpBackend(
  onRequest: (req: RawRequest, conn: RawBackendConn) => void,
  onData?: (conn: RawBackendConn, bytes: Uint8Array) => void,
) {
  interface State {
    conn: RawBackendConn;
    unparsed: Uint8Array;
    pending: Uint8Array | null;
    ending: boolean;
  }
  const conns: RawBackendConn[] = [];
  const requests: RawRequest[] = [];
  let nextId = 1;
  const flush = (sock: import("bun").Socket<State>) => {
    const st = sock.data;
    if (st.pending !== null) {
      const n = sock.write(st.pending);
      st.pending = n >= st.pending.length ? null : st.pending.subarray(Math.max(n, 0));
    }
    if (st.pending === null && st.ending) sock.end();
  };
  const listener = Bun.listen<State>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(sock) {
        const st: State = { conn: null!, unparsed: new Uint8Array(0), pending: null, ending: false };
        st.conn = {
          id: nextId++,
          received: new Uint8Array(0),
          requests: [],
          closed: false,
          write(data) {
            const bytes = toBytes(data);
            st.pending = st.pending === null ? bytes : concatBytes(st.pending, bytes);
            flush(sock);
          },
          end() {
            st.ending = true;
            flush(sock);
          },
          destroy() {
            sock.terminate();
          },
        };
        sock.data = st;
        conns.push(st.conn);
      },
      data(sock, chunk) {
        const st = sock.data;
        const bytes = new Uint8Array(chunk);
        st.conn.received = concatBytes(st.conn.received, bytes);
        onData?.(st.conn, bytes);
        st.unparsed = concatBytes(st.unparsed, bytes);
        for (let guard = 0; guard < 1000; guard++) {
          const got = takeRequest(st.conn, st.unparsed);
          if (got === null) break;
          st.unparsed = st.unparsed.subarray(got.used);
          st.conn.requests.push(got.req);
          requests.push(got.req);
          onRequest(got.req, st.conn);
        }
      },
      drain(sock) {
        flush(sock);
      },
      close(sock) {
        sock.data.conn.closed = true;
      },
      error() {},
    },
  });
  return { port: listener.port, conns, requests, stop: () => listener.stop(true) };
}

/** A raw client connection that keeps everything it receives. */
export interface RawClient {
  write(data: string | Uint8Array): void;
  received(): Uint8Array;
  /** Everything received so far as latin1 text. */
  text(): string;
  readonly closed: boolean;
  close(): void;
}

export async function rawClient(port: number): Promise<RawClient> {
  const chunks: Uint8Array[] = [];
  let closed = false;
  let pending: Uint8Array | null = null;
  const sock = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, d) {
        chunks.push(new Uint8Array(d));
      },
      drain(s) {
        if (pending === null) return;
        const n = s.write(pending);
        pending = n >= pending.length ? null : pending.subarray(Math.max(n, 0));
      },
      close() {
        closed = true;
      },
      error() {},
    },
  });
  return {
    write(data) {
      const bytes = toBytes(data);
      if (pending !== null) {
        pending = concatBytes(pending, bytes);
        return;
      }
      const n = sock.write(bytes);
      if (n < bytes.length) pending = bytes.subarray(Math.max(n, 0));
    },
    received: () => Buffer.concat(chunks),
    text: () => Buffer.concat(chunks).toString("latin1"),
    get closed() {
      return closed;
    },
    close: () => sock.terminate(),
  };
}

/** One response parsed off the front of raw client bytes. */
export interface RawResponse {
  status: number;
  /** Status line and header lines, without the final CRLF CRLF. */
  head: string;
  /** Header lines exactly as received, in order. */
  lines: string[];
  body: Uint8Array;
  /** Bytes after this response. */
  rest: Uint8Array;
}

/**
 * Parses the first response in `buf`; null while incomplete. `noBody` for HEAD, 1xx, 204, 304.
 * Without Content-Length or chunked, the body runs to the end of `buf` only when `closed`.
 */
export function parseRawResponse(buf: Uint8Array, noBody = false, closed = false): RawResponse | null {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  const headEnd = b.indexOf("\r\n\r\n", 0, "latin1");
  if (headEnd < 0) return null;
  const head = b.toString("latin1", 0, headEnd);
  const [statusLine, ...lines] = head.split("\r\n");
  const status = Number(statusLine!.slice(9, 12));
  const fields = headerMap(lines);
  const start = headEnd + 4;
  const done = (end: number, body: Uint8Array): RawResponse => ({
    status,
    head,
    lines,
    body,
    rest: buf.subarray(end),
  });
  if (noBody || status < 200 || status === 204 || status === 304) return done(start, new Uint8Array(0));
  if ((fields.get("transfer-encoding")?.join(",") ?? "").toLowerCase().includes("chunked")) {
    const dec = decodeChunked(buf, start);
    return dec === null ? null : done(dec.end, dec.body);
  }
  const cl = fields.get("content-length");
  if (cl !== undefined) {
    const n = Number(cl[0]);
    return buf.length < start + n ? null : done(start + n, buf.slice(start, start + n));
  }
  return closed ? done(buf.length, buf.slice(start)) : null;
}
