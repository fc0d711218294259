// Failures between the proxy and its backends: what the client gets, what the backend's socket sees,
// and the one log line that names the cause.
import { afterEach, describe, expect, test } from "bun:test";
import { errorResponse, RETRY_AFTER_S_NO_BACKEND } from "../src/proxy/errors.ts";
import {
  backend,
  closedPort,
  logLines,
  proxy,
  type RawConn,
  rawBackend,
  rawSession,
  statusOf,
  waitFor,
} from "./helpers.ts";

/** Everything started by a test, stopped after it whatever happened. */
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function startProxy(backends: string[], extra: string[] = []) {
  const p = proxy(backends, extra);
  cleanups.push(p.close);
  return p;
}

function startRaw(onData: (conn: RawConn, chunk: string) => void) {
  const b = rawBackend(onData);
  cleanups.push(b.stop);
  return b;
}

/** Calls `respond` once per complete request head on a connection (bodyless requests only). */
function onEachHead(respond: (conn: RawConn, head: string) => void) {
  const answered = new Map<RawConn, number>();
  return (conn: RawConn) => {
    const heads = conn.received.split("\r\n\r\n").slice(0, -1);
    for (let i = answered.get(conn) ?? 0; i < heads.length; i++) {
      answered.set(conn, i + 1);
      respond(conn, heads[i]!);
    }
  };
}

/** Log lines written since `from` (an index into logLines). */
const logSince = (from: number) => logLines.slice(from);

/** True when a raw HTTP/1.1 response is missing body bytes its own framing promised. */
function cutShort(raw: string): boolean {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0) return true;
  const head = raw.slice(0, end).toLowerCase();
  const body = raw.slice(end + 4);
  const cl = /\r\ncontent-length: *(\d+)/.exec(head);
  if (cl) return body.length < Number(cl[1]);
  if (/\r\ntransfer-encoding: *chunked/.test(head)) return !body.endsWith("0\r\n\r\n");
  return false; // close-delimited: cannot tell, so it does not count as visibly cut
}

const GET = "GET / HTTP/1.1\r\nHost: test\r\n\r\n";

describe("backend unreachable", () => {
  test("connection refused -> 502, short text body, one warn line naming connect_refused", async () => {
    const port = closedPort();
    const p = startProxy([`127.0.0.1:${port}`]);
    const from = logLines.length;
    const res = await fetch(p.url + "/x");
    const body = await res.text();
    expect(res.status).toBe(502);
    expect(res.headers.get("content-type")).toStartWith("text/plain");
    expect(body.length).toBeLessThan(200);
    // The backend's address is internal: it goes to the log, not to the client.
    expect(body).not.toContain(String(port));
    const lines = logSince(from).filter((l) => l.startsWith("warn(proxy):"));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("connect_refused");
    expect(lines[0]).toContain("/x");
  });

  test("no backend configured -> 503 with Retry-After", async () => {
    // main.ts refuses to start without -b, but parseArgs and startProxy accept an empty list, so the
    // in-process proxy reaches the "no_backend" path for real.
    const p = startProxy([]);
    const res = await fetch(p.url + "/");
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe(String(RETRY_AFTER_S_NO_BACKEND));
    expect(await res.text()).toContain("503");
  });

  test("errorResponse maps every code to its status; only 503 carries Retry-After", async () => {
    const cases = [
      ["no_backend", 503],
      ["connect_refused", 502],
      ["connect_timeout", 504],
      ["tls_failed", 502],
      ["upstream_reset", 502],
      ["bad_response", 502],
      ["upstream_timeout", 504],
    ] as const;
    for (const [code, status] of cases) {
      const res = errorResponse(code);
      expect({ code, status: res.status }).toEqual({ code, status });
      expect({ code, retry: res.headers.get("retry-after") }).toEqual({
        code,
        retry: status === 503 ? "1" : null,
      });
      expect(await res.text()).toStartWith(`${status} `);
    }
  });
});

describe("backend misbehaves", () => {
  for (const how of ["end", "terminate"] as const) {
    test(`backend ${how}s mid-body (Content-Length 1000, 10 bytes sent) -> client connection cut short`, async () => {
      const b = startRaw(
        onEachHead((conn) => {
          conn.sock.write(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n0123456789",
          );
          conn.sock.flush();
          // A short delay lets the head reach the proxy first, so this is a mid-body failure.
          setTimeout(() => (how === "end" ? conn.sock.end() : conn.sock.terminate()), 20);
        }),
      );
      const p = startProxy([`127.0.0.1:${b.port}`]);
      const from = logLines.length;
      const r = await rawSession(p.port, GET, 3_000);
      expect(r.closed).toBe(true);
      // Either the status line was already sent and the body stops early, or nothing complete at all.
      if (statusOf(r.text) === 200) expect(cutShort(r.text)).toBe(true);
      else expect(statusOf(r.text)).toBe(502);
      await waitFor("a log line about the cut response", () =>
        logSince(from).some((l) => l.startsWith("warn(proxy):") && /cut short|upstream_reset/.test(l)),
      );
    });
  }

  test("fetch through the proxy rejects when the backend dies mid-body", async () => {
    const b = startRaw(
      onEachHead((conn) => {
        conn.sock.write(
          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n0123456789",
        );
        setTimeout(() => conn.sock.terminate(), 20);
      }),
    );
    const p = startProxy([`127.0.0.1:${b.port}`]);
    const res = await fetch(p.url + "/");
    expect(res.status).toBe(200);
    let got = -1;
    const failed = await res.arrayBuffer().then(
      (buf) => {
        got = buf.byteLength;
        return false;
      },
      () => true,
    );
    // A complete-looking 1000-byte body would hide the failure from the client.
    expect({ failed, got }).toEqual({ failed: true, got: -1 });
  });

  const garbage: [string, string][] = [
    ["not HTTP at all", "HELLO WORLD\r\n\r\n"],
    ["4-digit status", "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"],
    ["non-numeric Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n"],
    [
      "Content-Length and Transfer-Encoding",
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
  ];
  for (const [name, reply] of garbage) {
    test(`garbage response (${name}) -> 502 and the upstream connection is dropped`, async () => {
      const b = startRaw(onEachHead((conn) => conn.sock.write(reply)));
      const p = startProxy([`127.0.0.1:${b.port}`]);
      const from = logLines.length;
      const res = await fetch(p.url + "/g");
      expect(res.status).toBe(502);
      expect(await res.text()).toContain("bad_response");
      expect(logSince(from).some((l) => l.startsWith("warn(proxy):") && l.includes("bad_response"))).toBe(
        true,
      );
      await waitFor("the proxy to close the upstream connection", () => b.conns[0]?.closed);
      expect(p.pools[0]!.stats.idle).toBe(0);
    });
  }

  test("positive control: the same raw backend answering correctly -> 200 and the body", async () => {
    const b = startRaw(
      onEachHead((conn) => conn.sock.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")),
    );
    const p = startProxy([`127.0.0.1:${b.port}`]);
    const res = await fetch(p.url + "/g");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("hello");
  });

  test("silent backend with --upstream-timeout-ms 300 -> 504 quickly, upstream socket closed", async () => {
    const b = startRaw(() => {}); // reads, never answers
    const p = startProxy([`127.0.0.1:${b.port}`], ["--upstream-timeout-ms", "300"]);
    const from = logLines.length;
    const t0 = performance.now();
    const res = await fetch(p.url + "/slow");
    const elapsedMs = performance.now() - t0;
    expect(res.status).toBe(504);
    expect(await res.text()).toContain("upstream_timeout");
    expect(elapsedMs).toBeGreaterThanOrEqual(250); // not answered before the timeout
    expect(elapsedMs).toBeLessThan(3_000); // sanity bound, not a performance target
    expect(b.conns[0]?.received).toContain("GET /slow HTTP/1.1");
    await waitFor("the proxy to close the silent upstream connection", () => b.conns[0]?.closed);
    expect(logSince(from).some((l) => l.startsWith("warn(proxy):") && l.includes("upstream_timeout"))).toBe(
      true,
    );
  });
});

describe("client goes away", () => {
  test("client disconnects while the backend holds the request -> upstream connection closed", async () => {
    const b = startRaw(() => {}); // holds every request
    const p = startProxy([`127.0.0.1:${b.port}`]);
    const client = await Bun.connect({
      hostname: "127.0.0.1",
      port: p.port,
      socket: { data() {} },
    });
    client.write("GET /held HTTP/1.1\r\nHost: test\r\n\r\n");
    await waitFor("the backend to receive the request", () => b.conns[0]?.received.includes("\r\n\r\n"));
    expect(b.conns[0]!.closed).toBe(false);
    client.end();
    await waitFor("the proxy to close the upstream connection", () => b.conns[0]!.closed);
    expect(p.pools[0]!.stats.idle).toBe(0);
  });

  test("fetch aborted by the client -> upstream connection closed", async () => {
    const b = startRaw(() => {});
    const p = startProxy([`127.0.0.1:${b.port}`]);
    const ac = new AbortController();
    const pending = fetch(p.url + "/held", { signal: ac.signal }).then(
      () => "answered",
      () => "aborted",
    );
    await waitFor("the backend to receive the request", () => b.conns[0]?.received.includes("\r\n\r\n"));
    ac.abort();
    expect(await pending).toBe("aborted");
    await waitFor("the proxy to close the upstream connection", () => b.conns[0]!.closed);
  });

  test("client disconnects mid-download -> upstream closed, not pooled, proxy keeps serving", async () => {
    const CHUNK = Buffer.alloc(256 * 1024, 0x61);
    const TOTAL_BYTES = 256 * 1024 * 1024;
    const b = startRaw(
      onEachHead((conn, head) => {
        if (!head.startsWith("GET /big ")) {
          conn.sock.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
          return;
        }
        conn.sock.write(
          `HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${TOTAL_BYTES}\r\n\r\n`,
        );
        let sent = 0;
        // Writes until the socket is full, then continues on drain; bounded by TOTAL_BYTES.
        const pump = () => {
          while (!conn.closed && sent < TOTAL_BYTES) {
            const n = conn.sock.write(CHUNK);
            sent += Math.max(n, 0);
            if (n < CHUNK.length) return; // the rest of this chunk is dropped: the test never reads to the end
          }
        };
        conn.onDrain = pump;
        pump();
      }),
    );
    const p = startProxy([`127.0.0.1:${b.port}`]);
    // Warm one pooled connection so "idle does not grow" compares against a non-trivial baseline.
    expect(await (await fetch(p.url + "/small")).text()).toBe("ok");
    const idleBefore = p.pools[0]!.stats.idle;
    expect(idleBefore).toBe(1);

    let received = 0;
    let cut = false;
    const client = await Bun.connect({
      hostname: "127.0.0.1",
      port: p.port,
      socket: {
        data(sock, d) {
          received += d.length;
          if (!cut && received >= 1024 * 1024) {
            cut = true;
            sock.terminate();
          }
        },
      },
    });
    client.write("GET /big HTTP/1.1\r\nHost: test\r\n\r\n");
    await waitFor("the client to read 1 MiB and disconnect", () => cut);
    const bigConn = await waitFor("the /big upstream connection", () =>
      b.conns.find((c) => c.received.includes("GET /big ")),
    );
    await waitFor("the proxy to close the /big upstream connection", () => bigConn!.closed);
    // The pooled connection was taken for /big and must not come back.
    expect(p.pools[0]!.stats.idle).toBeLessThanOrEqual(idleBefore - 1);

    const res = await fetch(p.url + "/after");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("ok");
  });
});

describe("slow clients", () => {
  test("a request body that does not arrive within --body-timeout-ms -> 408, connection closed, backend sees nothing", async () => {
    const b = startRaw(() => {});
    const p = startProxy([`127.0.0.1:${b.port}`], ["--body-timeout-ms", "300"]);
    const t0 = performance.now();
    // 10 of the 100 declared bytes, then nothing (a slow-body attack sends the rest bit by bit).
    const r = await rawSession(
      p.port,
      "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n0123456789",
      5_000,
    );
    const tookMs = performance.now() - t0;
    expect(statusOf(r.text)).toBe(408);
    expect(r.closed).toBe(true);
    expect(tookMs).toBeGreaterThanOrEqual(300);
    expect(b.conns).toHaveLength(0);
  });

  test("a complete body within the deadline is forwarded", async () => {
    const b = backend(async (req) => new Response(String((await req.arrayBuffer()).byteLength)));
    cleanups.push(b.stop);
    const p = startProxy([`127.0.0.1:${b.port}`], ["--body-timeout-ms", "300"]);
    const r = await fetch(p.url + "/upload", { method: "POST", body: "x".repeat(100) });
    expect(r.status).toBe(200);
    expect(await r.text()).toBe("100");
  });
});
