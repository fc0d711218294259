// Raw HTTP/1.1 clients over TCP for the process-level tests (mp, upgrades, the compiled binary): "one
// request per new connection" and "one persistent connection" are exactly that (fetch's pool decides
// neither), and nothing is retried, so every lost request shows.
import type { Socket } from "bun";
import { parseRawResponse } from "./helpers.ts";

const HOST = "127.0.0.1";
/** One request through the proxy; anything slower is a failure, not a wait. */
const REQUEST_TIMEOUT_MS = 10_000;
/** Hard cap on requests any load loop sends, so a broken stop condition cannot run forever. */
export const LOAD_REQUESTS_MAX = 100_000;

export interface Outcome {
  readonly ok: boolean;
  readonly status: number;
  readonly body: string;
  /** What went wrong, for the failure report ("" when ok). */
  readonly error: string;
}

const failed = (error: string): Outcome => ({ ok: false, status: 0, body: "", error });

function requestText(path: string, close: boolean): string {
  return `GET ${path} HTTP/1.1\r\nHost: lb.test\r\n${close ? "Connection: close\r\n" : ""}\r\n`;
}

function outcomeOf(buf: Uint8Array, closed: boolean): Outcome | null {
  const r = parseRawResponse(buf, false, closed);
  if (r === null) return null;
  const body = Buffer.from(r.body).toString("latin1");
  return r.status === 200
    ? { ok: true, status: 200, body, error: "" }
    : { ok: false, status: r.status, body, error: `status ${r.status}: ${body.trim()}` };
}

/** How the server ended a connection: an orderly close (FIN) or a reset. */
export function closeHow(err: Error | undefined): string {
  return err === undefined
    ? "connection closed by the server"
    : `connection reset (${(err as NodeJS.ErrnoException).code ?? err.message})`;
}

/** One request on a new TCP connection (Connection: close). Never rejects. */
export function httpOnce(port: number, path: string): Promise<Outcome> {
  return new Promise<Outcome>((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    let sock: Socket<undefined> | null = null;
    const finish = (o: Outcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock?.end();
      resolve(o);
    };
    const timer = setTimeout(() => {
      finish(failed(`no complete response within ${REQUEST_TIMEOUT_MS} ms`));
      sock?.terminate();
    }, REQUEST_TIMEOUT_MS);
    Bun.connect({
      hostname: HOST,
      port,
      socket: {
        open(s) {
          sock = s;
          s.write(requestText(path, true));
        },
        data(_s, d) {
          chunks.push(Buffer.from(d));
          const o = outcomeOf(Buffer.concat(chunks), false);
          if (o) finish(o);
        },
        close(_s, err) {
          const bytes = Buffer.concat(chunks);
          finish(outcomeOf(bytes, true) ?? failed(`${closeHow(err)} after ${bytes.length} response bytes`));
        },
        error(_s, err) {
          finish(failed(`socket error ${(err as NodeJS.ErrnoException).code ?? err.message}`));
        },
      },
    }).catch((err: NodeJS.ErrnoException) => finish(failed(`connect: ${err.code ?? err.message}`)));
  });
}

/**
 * One persistent connection, sequential requests. A connection the server closes while idle is noticed
 * and replaced before the next request; a request that gets no complete response is a failure (the
 * client then reconnects for the next one). Nothing is retried.
 */
export class KeepAliveClient {
  private sock: Socket<undefined> | null = null;
  private buf: Buffer = Buffer.alloc(0);
  private waiting: ((closed: boolean, error: string) => void) | null = null;
  /** Requests sent on the current connection. */
  private onConn = 0;
  /** When the previous response on this connection completed (performance.now()). */
  private lastResponseAtMs = 0;
  connections = 0;

  constructor(private readonly port: number) {}

  async request(path: string): Promise<Outcome> {
    if (this.sock === null) {
      try {
        await this.connect();
      } catch (err) {
        return failed(`connect: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
    }
    const sock = this.sock!;
    const nth = ++this.onConn;
    const idleMs = nth === 1 ? 0 : performance.now() - this.lastResponseAtMs;
    return await new Promise<Outcome>((resolve) => {
      const timer = setTimeout(() => {
        this.drop();
        resolve(
          failed(`request #${nth} on a connection: no complete response within ${REQUEST_TIMEOUT_MS} ms`),
        );
      }, REQUEST_TIMEOUT_MS);
      this.waiting = (closed, error) => {
        const o = outcomeOf(this.buf, closed);
        if (o === null && !closed && error === "") return;
        clearTimeout(timer);
        this.waiting = null;
        if (o === null) {
          this.drop();
          resolve(
            failed(
              `request #${nth} on ${nth === 1 ? "a new connection" : `a reused connection (idle ${idleMs.toFixed(1)} ms before it)`}: ${error} after ${this.buf.length} response bytes`,
            ),
          );
          return;
        }
        const r = parseRawResponse(this.buf, false, closed)!;
        this.buf = Buffer.from(r.rest);
        this.lastResponseAtMs = performance.now();
        if (closed || r.lines.some((l) => /^connection:\s*close/i.test(l))) this.drop();
        resolve(o);
      };
      sock.write(requestText(path, false));
    });
  }

  private async connect(): Promise<void> {
    this.buf = Buffer.alloc(0);
    this.onConn = 0;
    this.connections++;
    const owner = this;
    const s = await Bun.connect({
      hostname: HOST,
      port: this.port,
      socket: {
        data(sk, d) {
          if (sk !== owner.sock) return;
          owner.buf = Buffer.concat([owner.buf, Buffer.from(d)]);
          owner.waiting?.(false, "");
        },
        close(sk, err) {
          if (sk !== owner.sock) return;
          if (owner.waiting) owner.waiting(true, closeHow(err));
          else owner.sock = null;
        },
        error(sk, err) {
          if (sk !== owner.sock) return;
          if (owner.waiting)
            owner.waiting(true, `socket error ${(err as NodeJS.ErrnoException).code ?? err.message}`);
          else owner.sock = null;
        },
      },
    });
    this.sock = s;
  }

  private drop(): void {
    const s = this.sock;
    this.sock = null;
    s?.terminate();
  }

  close(): void {
    this.drop();
  }
}

export interface ClientStats {
  readonly name: string;
  readonly kind: "keep-alive" | "fresh";
  ok: number;
  /** performance.now() of each failure. */
  failuresAtMs: number[];
  lastOkAtMs: number;
}

export interface Failure {
  readonly client: string;
  /** The request target, unique per request: whether the backend saw it tells where it was lost. */
  readonly target: string;
  readonly atMs: number;
  readonly error: string;
}

/**
 * Clients that send GET `path` in a loop (each one request at a time) until stop() or LOAD_REQUESTS_MAX.
 * Keep-alive clients each hold one connection; fresh ones open a connection per request. The caller
 * stops it (stop()) when the test ends.
 */
export class Load {
  readonly clients: ClientStats[] = [];
  readonly failures: Failure[] = [];
  readonly bodies = new Map<string, number>();
  total = 0;
  private stopped = false;
  private readonly loops: Promise<void>[] = [];

  constructor(port: number, opts: { keepAlive: number; fresh: number; path?: string }) {
    const path = opts.path ?? "/";
    for (let i = 0; i < opts.keepAlive; i++) this.spawn(`ka${i}`, "keep-alive", port, path);
    for (let i = 0; i < opts.fresh; i++) this.spawn(`fresh${i}`, "fresh", port, path);
  }

  private spawn(name: string, kind: ClientStats["kind"], port: number, path: string): void {
    const st: ClientStats = { name, kind, ok: 0, failuresAtMs: [], lastOkAtMs: 0 };
    this.clients.push(st);
    const ka = kind === "keep-alive" ? new KeepAliveClient(port) : null;
    this.loops.push(
      (async () => {
        while (!this.stopped && this.total < LOAD_REQUESTS_MAX) {
          this.total++;
          const target = `${path}?c=${name}&n=${st.ok + st.failuresAtMs.length}`;
          const o = ka ? await ka.request(target) : await httpOnce(port, target);
          const now = performance.now();
          if (o.ok) {
            st.ok++;
            st.lastOkAtMs = now;
            this.bodies.set(o.body, (this.bodies.get(o.body) ?? 0) + 1);
          } else {
            st.failuresAtMs.push(now);
            this.failures.push({ client: name, target, atMs: now, error: o.error });
          }
        }
        ka?.close();
      })(),
    );
  }

  get ok(): number {
    return this.clients.reduce((n, c) => n + c.ok, 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }
}

/** `n` requests on fresh connections, `concurrency` at a time; returns the outcomes. */
export async function burst(port: number, n: number, concurrency: number, path = "/"): Promise<Outcome[]> {
  const out: Outcome[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        next++;
        out.push(await httpOnce(port, path));
      }
    }),
  );
  return out;
}

export const errorsOf = (outcomes: readonly Outcome[]) => outcomes.filter((o) => !o.ok).map((o) => o.error);
