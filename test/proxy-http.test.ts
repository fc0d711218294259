// What a client and a backend see through the proxy: request and response bytes, streaming, header
// hygiene, connection reuse and stale pooled connections. In-process proxies in front of real backends:
// Bun.serve where its normalisation does not matter, a raw TCP backend where exact bytes, header lines,
// 1xx answers or framing do.
import { afterEach, describe, expect, test } from "bun:test";
import { REQUEST_BODY_BUFFER_BYTES_MAX } from "../src/core/limits.ts";
import {
  backend,
  headerMap,
  parseRawResponse,
  proxy,
  type RawClient,
  type RawRequest,
  type RawResponse,
  rawClient,
  rawHttpBackend,
  waitFor,
} from "./helpers.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function serveBackend(handler: Parameters<typeof backend>[0]) {
  const b = backend(handler);
  cleanups.push(b.stop);
  return b;
}

function rawBackendOf(
  onRequest: Parameters<typeof rawHttpBackend>[0],
  onData?: Parameters<typeof rawHttpBackend>[1],
) {
  const b = rawHttpBackend(onRequest, onData);
  cleanups.push(b.stop);
  return b;
}

function lb(port: number, extra: string[] = []) {
  const p = proxy([`127.0.0.1:${port}`], extra);
  cleanups.push(p.close);
  return p;
}

async function client(port: number): Promise<RawClient> {
  const c = await rawClient(port);
  cleanups.push(() => c.close());
  return c;
}

/** Waits for the complete response that starts at byte `from` of what `c` received. */
async function responseAt(c: RawClient, from = 0, noBody = false): Promise<RawResponse> {
  return await waitFor("a complete response from the proxy", () =>
    parseRawResponse(c.received().subarray(from), noBody, c.closed),
  );
}

/** A minimal complete response with a body, as a raw backend writes it. */
function ok(body = "ok", extra = ""): string {
  return `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n${extra}Content-Length: ${body.length}\r\n\r\n${body}`;
}

function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  // getRandomValues fills at most 64 KiB per call.
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  return out;
}

function sha256(bytes: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
}

/**
 * A Bun.serve backend answering every request with `total` bytes generated on demand from 16 fixed
 * random blocks, so that the backend (in this same process) allocates nothing per chunk.
 */
function generatingBackend(total: number) {
  const CHUNK = 256 * 1024;
  const blocks = Array.from({ length: 16 }, () => randomBytes(CHUNK));
  let sent = "";
  const be = serveBackend(() => {
    const hasher = new Bun.CryptoHasher("sha256");
    let produced = 0;
    return new Response(
      new ReadableStream<Uint8Array>({
        pull(ctl) {
          if (produced >= total) {
            sent = hasher.digest("hex");
            ctl.close();
            return;
          }
          const chunk = blocks[(produced / CHUNK) % blocks.length]!.subarray(
            0,
            Math.min(CHUNK, total - produced),
          );
          hasher.update(chunk);
          produced += chunk.length;
          ctl.enqueue(chunk);
        },
      }),
      { headers: { "content-type": "application/octet-stream", "content-length": String(total) } },
    );
  });
  return Object.assign(be, { sentSha256: () => sent });
}

/**
 * Downloads `url` like a client slower than the backend (a 1 ms pause every 4 reads: a deliberate slow
 * reader, not a wait for anything), hashing as it goes and, with `sampleRss`, sampling RSS after
 * collecting garbage.
 */
async function slowDownload(url: string, sampleRss = true) {
  const res = await fetch(url);
  const hasher = new Bun.CryptoHasher("sha256");
  let bytes = 0;
  let reads = 0;
  let rssPeak = process.memoryUsage.rss();
  for await (const chunk of res.body!) {
    hasher.update(chunk);
    bytes += chunk.length;
    if (++reads % 16 === 0 && sampleRss) {
      Bun.gc(true);
      rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
    }
    if (reads % 4 === 0) await new Promise((r) => setTimeout(r, 1));
  }
  return { status: res.status, bytes, sha256: hasher.digest("hex"), rssPeak };
}

const text = (b: Uint8Array) => Buffer.from(b).toString("latin1");
const names = (lines: readonly string[]) => lines.map((l) => l.slice(0, l.indexOf(":")).toLowerCase());

describe("request", () => {
  test("methods pass through unchanged, including a custom token", async () => {
    const be = serveBackend((req) => new Response(req.method));
    const p = lb(be.port);
    const methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"];
    for (const method of methods) {
      const res = await fetch(`${p.url}/m`, { method });
      expect(res.status).toBe(200);
      expect(await res.text()).toBe(method);
    }
    expect(be.seen.map((s) => s.method)).toEqual(methods);
  });

  test("path and query reach the backend byte for byte", async () => {
    const be = rawBackendOf((_req, conn) => conn.write(ok()));
    const p = lb(be.port);
    const c = await client(p.port);
    const targets = [
      "/a%2Fb/c?x=%41&y=1&y=2&z",
      "//double//slash?",
      "/sp%20ace/%E2%82%AC/a+b;p=1?q=%2F%3F%26&e=&=&&",
      "/?",
    ];
    let from = 0;
    for (const target of targets) {
      c.write(`GET ${target} HTTP/1.1\r\nHost: example.test\r\n\r\n`);
      const res = await responseAt(c, from);
      expect(res.status).toBe(200);
      from = c.received().length - res.rest.length;
    }
    expect(be.requests.map((r) => r.target)).toEqual(targets);
    // The request line is the exact target and HTTP/1.1.
    expect(be.requests[0]!.head.split("\r\n")[0]).toBe("GET /a%2Fb/c?x=%41&y=1&y=2&z HTTP/1.1");
  });

  test("random binary bodies arrive byte for byte (POST, PUT, PATCH, DELETE)", async () => {
    const be = serveBackend(async (req) => new Response(sha256(new Uint8Array(await req.arrayBuffer()))));
    const p = lb(be.port);
    for (const method of ["POST", "PUT", "PATCH", "DELETE"]) {
      const body = randomBytes(100_000 + Math.floor(Math.random() * 1000));
      const res = await fetch(`${p.url}/body`, { method, body });
      expect(res.status).toBe(200);
      expect(await res.text()).toBe(sha256(body));
      const seen = be.seen.at(-1)!;
      expect(seen.method).toBe(method);
      expect(seen.body.length).toBe(body.length);
      expect(Buffer.compare(seen.body, body)).toBe(0);
    }
  });

  test("a POST without a body is sent upstream with content-length: 0", async () => {
    const be = rawBackendOf((_req, conn) => conn.write(ok()));
    const p = lb(be.port);
    // fetch without a body, a raw client with Content-Length: 0, and a raw client with no framing at all
    // (RFC 9112 §6.3: no body). Backends often answer 411 to a POST without Content-Length.
    expect((await fetch(`${p.url}/empty-fetch`, { method: "POST" })).status).toBe(200);
    const c = await client(p.port);
    c.write("POST /empty-cl0 HTTP/1.1\r\nHost: example.test\r\nContent-Length: 0\r\n\r\n");
    const first = await responseAt(c);
    expect(first.status).toBe(200);
    const at = c.received().length;
    c.write("POST /empty-none HTTP/1.1\r\nHost: example.test\r\n\r\n");
    expect((await responseAt(c, at)).status).toBe(200);

    expect(be.requests.map((r) => r.target)).toEqual(["/empty-fetch", "/empty-cl0", "/empty-none"]);
    for (const req of be.requests) {
      const fields = headerMap(req.lines);
      expect({ target: req.target, cl: fields.get("content-length") }).toEqual({
        target: req.target,
        cl: ["0"],
      });
      expect(fields.has("transfer-encoding")).toBe(false);
      expect(req.body.length).toBe(0);
    }
  });

  test("a chunked request body (extensions, binary data) arrives intact", async () => {
    const be = rawBackendOf((_req, conn) => conn.write(ok()));
    const p = lb(be.port);
    const parts = [randomBytes(1), randomBytes(4096), randomBytes(70_000), Buffer.from("\r\n0\r\n\r\n")];
    const c = await client(p.port);
    c.write("POST /chunked HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (const [i, part] of parts.entries()) {
      // Bun.serve itself refuses a quoted extension value with a space, or BWS before ";" (400).
      c.write(`${part.length.toString(16)}${i === 1 ? ';ext=1;q="ab";flag' : ""}\r\n`);
      c.write(part);
      c.write("\r\n");
    }
    c.write("0\r\n\r\n");
    const res = await responseAt(c);
    expect(res.status).toBe(200);
    expect(be.requests).toHaveLength(1);
    const req = be.requests[0]!;
    // Upstream framing may be chunked or a length; what matters is that the bytes are exact.
    const fields = headerMap(req.lines);
    expect(req.chunked || fields.has("content-length")).toBe(true);
    expect(Buffer.compare(req.body, Buffer.concat(parts))).toBe(0);
  });
});

describe("streaming", () => {
  test("a 5 MB upload arrives with the exact bytes", async () => {
    const be = serveBackend(async (req) => {
      // Hash while reading, so the backend does not need the whole body in memory either.
      const h = new Bun.CryptoHasher("sha256");
      let n = 0;
      for await (const chunk of req.body!) {
        h.update(chunk);
        n += chunk.length;
      }
      return new Response(`${n} ${h.digest("hex")}`);
    });
    const p = lb(be.port);
    const body = randomBytes(5 * 1024 * 1024);
    const res = await fetch(`${p.url}/upload`, { method: "POST", body });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(`${body.length} ${sha256(body)}`);
  });

  test("a 50 MB download to a slow client arrives exact while the proxy's memory stays flat", async () => {
    const TOTAL = 50 * 1024 * 1024;
    const be = generatingBackend(TOTAL);
    const p = lb(be.port);
    Bun.gc(true);
    const rssBefore = process.memoryUsage.rss();
    const got = await slowDownload(`${p.url}/download`);
    expect(got.status).toBe(200);
    expect(got.bytes).toBe(TOTAL);
    expect(got.sha256).toBe(be.sentSha256());
    // Backend, proxy and client share this process, so the RSS includes all three. Garbage is collected
    // while reading so that the peak measures what is held, not what the GC has yet to free. Measured
    // here (2 cores): 5-16 MB of growth. Without backpressure toward the backend (socket never paused)
    // it was 35-53 MB, and a proxy that buffered the whole body would hold the 50 MB itself (reading
    // the body whole on the client side alone grew 108-130 MB). 32 MB separates the two with room for
    // a busy machine.
    const growthMb = (got.rssPeak - rssBefore) / (1024 * 1024);
    expect(growthMb).toBeLessThan(32);
  });

  test("large streamed responses leave the pooled connection readable for the next request", async () => {
    // Regression: when the last chunk of a body filled the response queue, the backend socket was paused
    // and went back to the pool paused; the next request on it never saw its response (504 after
    // --upstream-timeout-ms). Whether the last chunk finds the queue full depends on timing, and a
    // deterministic trigger would need the proxy's queue state, which no socket reveals. Measured here
    // with the fix taken out: 20 rounds of 16 MB caught the bug in 5 of 6 runs (about 1 s when passing).
    const ROUNDS = 20;
    const be = generatingBackend(16 * 1024 * 1024);
    const p = lb(be.port, ["--upstream-timeout-ms", "2000"]);
    for (let round = 0; round < ROUNDS; round++) {
      const got = await slowDownload(`${p.url}/round-${round}`, false);
      expect({ round, status: got.status }).toEqual({ round, status: 200 });
      expect(got.sha256).toBe(be.sentSha256());
    }
    expect(p.pools[0]!.stats.opened).toBe(1);
    expect(p.pools[0]!.stats.reused).toBe(ROUNDS - 1);
  });

  test("the backend receives the body while the client is still sending it", async () => {
    // Bodies up to REQUEST_BODY_BUFFER_BYTES_MAX are read whole on purpose (one write, replayable);
    // larger ones must stream. Both parts together are well over that size.
    const size = REQUEST_BODY_BUFFER_BYTES_MAX;
    const first = Buffer.from("FIRST-PART:" + "a".repeat(size));
    const last = Buffer.from("LAST-PART:" + "b".repeat(size));
    const be = rawBackendOf((_req, conn) => conn.write(ok("done")));
    const p = lb(be.port);
    const c = await client(p.port);
    c.write(
      `POST /slow HTTP/1.1\r\nHost: example.test\r\nContent-Type: text/plain\r\n` +
        `Content-Length: ${first.length + last.length}\r\n\r\n`,
    );
    c.write(first);
    // The last part is only sent once the backend has seen the first one: a proxy that buffers the whole
    // body before forwarding would time out here.
    await waitFor("the backend to receive the first part of the body", () =>
      be.conns.some((conn) => text(conn.received).includes(first.toString("latin1"))),
    );
    const sawBeforeLast = be.conns.reduce((n, conn) => n + conn.received.length, 0);
    expect(be.requests).toHaveLength(0); // the request is not complete yet
    c.write(last);
    const res = await responseAt(c);
    expect(res.status).toBe(200);
    expect(text(res.body)).toBe("done");
    expect(sawBeforeLast).toBeGreaterThan(first.length);
    expect(be.requests).toHaveLength(1);
    expect(Buffer.compare(be.requests[0]!.body, Buffer.concat([first, last]))).toBe(0);
  });
});

describe("response", () => {
  test("status codes pass through unchanged", async () => {
    const be = serveBackend((req) => {
      const status = Number(new URL(req.url).pathname.slice(1));
      return new Response(`status ${status}`, { status });
    });
    const p = lb(be.port);
    for (const status of [200, 201, 404, 418, 503]) {
      const res = await fetch(`${p.url}/${status}`);
      expect(res.status).toBe(status);
      expect(await res.text()).toBe(`status ${status}`);
    }
  });

  test("headers keep their order and each Set-Cookie stays its own line", async () => {
    const cookieB = "b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT; HttpOnly";
    const be = rawBackendOf((_req, conn) =>
      conn.write(
        "HTTP/1.1 200 OK\r\nX-First: 1\r\nSet-Cookie: a=1; Path=/\r\nX-Second: two words\r\n" +
          `Set-Cookie: ${cookieB}\r\nX-Third: 3\r\nSet-Cookie: c=3\r\nContent-Type: text/plain\r\n` +
          "X-Repeat: a\r\nX-Repeat: b\r\nCache-Control: no-store\r\nContent-Length: 2\r\n\r\nok",
      ),
    );
    const p = lb(be.port);
    const c = await client(p.port);
    c.write("GET / HTTP/1.1\r\nHost: example.test\r\n\r\n");
    const res = await responseAt(c);
    expect(res.status).toBe(200);
    expect(text(res.body)).toBe("ok");
    const cookies = res.lines
      .filter((l) => /^set-cookie:/i.test(l))
      .map((l) => l.slice(l.indexOf(":") + 1).trim());
    expect(cookies).toEqual(["a=1; Path=/", cookieB, "c=3"]);
    // Bun.serve writes Set-Cookie lines first, then the fields it knows by name (Content-Type,
    // Cache-Control, ...), then the rest; within each group the backend's order is kept.
    const got = names(res.lines);
    expect(got.filter((n) => n.startsWith("x-"))).toEqual(["x-first", "x-second", "x-third", "x-repeat"]);
    expect(got.filter((n) => n === "content-type" || n === "cache-control")).toEqual([
      "content-type",
      "cache-control",
    ]);
    // Bun.serve merges repeated non-cookie fields into one line (RFC 9110 §5.3 says that is equivalent).
    expect(headerMap(res.lines).get("x-repeat")).toEqual(["a, b"]);
    expect(headerMap(res.lines).get("x-second")).toEqual(["two words"]);
  });

  test("gzip passes through untouched with its Content-Encoding", async () => {
    const small = Bun.gzipSync(Buffer.from("hello gzip ".repeat(1000)));
    // Incompressible data: a body that spans many socket reads (the streamed path).
    const large = Bun.gzipSync(randomBytes(600_000));
    const be = serveBackend((req) => {
      const body = new URL(req.url).pathname === "/large" ? large : small;
      return new Response(body, { headers: { "content-encoding": "gzip", "content-type": "text/plain" } });
    });
    const p = lb(be.port);
    for (const [path, gz] of [
      ["/small", small],
      ["/large", large],
    ] as const) {
      const res = await fetch(`${p.url}${path}`, {
        decompress: false,
        headers: { "accept-encoding": "gzip" },
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("content-encoding")).toBe("gzip");
      const got = new Uint8Array(await res.arrayBuffer());
      expect(got.length).toBe(gz.length);
      expect(Buffer.compare(got, gz)).toBe(0);
    }
    // And on the wire, to be independent of the client's decoding.
    const c = await client(p.port);
    c.write("GET /small HTTP/1.1\r\nHost: example.test\r\nAccept-Encoding: gzip\r\n\r\n");
    const res = await responseAt(c);
    expect(headerMap(res.lines).get("content-encoding")).toEqual(["gzip"]);
    expect(Buffer.compare(res.body, small)).toBe(0);
    expect(be.seen.every((s) => s.headers.get("accept-encoding") === "gzip")).toBe(true);
  });

  test("redirects are passed to the client, not followed", async () => {
    const be = serveBackend((req) =>
      new URL(req.url).pathname === "/old"
        ? new Response(null, { status: 302, headers: { location: "/new?from=old" } })
        : new Response("new"),
    );
    const p = lb(be.port);
    const res = await fetch(`${p.url}/old`, { redirect: "manual" });
    expect(res.status).toBe(302);
    expect(res.headers.get("location")).toBe("/new?from=old");
    expect(be.seen.map((s) => new URL(s.url).pathname)).toEqual(["/old"]);
  });

  test("HEAD, 204 and 304 carry no body and the connection stays usable", async () => {
    const be = rawBackendOf((req, conn) => {
      if (req.method === "HEAD")
        conn.write("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1234\r\n\r\n");
      else if (req.target === "/204") conn.write("HTTP/1.1 204 No Content\r\nX-Kind: 204\r\n\r\n");
      else if (req.target === "/304") conn.write('HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n');
      else conn.write(ok(`next ${req.target}`));
    });
    const p = lb(be.port);
    const c = await client(p.port);
    const cases = [
      { req: "HEAD /head HTTP/1.1", status: 200, noBody: true },
      { req: "DELETE /204 HTTP/1.1", status: 204, noBody: true },
      { req: 'GET /304 HTTP/1.1\r\nIf-None-Match: "v1"', status: 304, noBody: true },
    ];
    let from = 0;
    for (const [i, k] of cases.entries()) {
      c.write(`${k.req}\r\nHost: example.test\r\n\r\n`);
      const res = await responseAt(c, from, true);
      expect(res.status).toBe(k.status);
      // The next request on the same connection: its response must start right after the bodiless
      // head, i.e. no byte was sent as a body in between.
      const at = c.received().length;
      expect(at - from).toBe(res.head.length + 4);
      c.write(`GET /after-${i} HTTP/1.1\r\nHost: example.test\r\n\r\n`);
      const next = await responseAt(c, at);
      expect(next.status).toBe(200);
      expect(text(next.body)).toBe(`next /after-${i}`);
      expect(next.rest.length).toBe(0);
      from = c.received().length;
    }
    expect(c.closed).toBe(false);
    const first = parseRawResponse(c.received(), true)!;
    expect(headerMap(first.lines).get("content-type")).toEqual(["text/html"]);
    // HEAD reports the length a GET would have (RFC 9110 §9.3.2), not 0.
    expect(headerMap(first.lines).get("content-length")).toEqual(["1234"]);
    expect(be.requests.map((r) => r.method)).toEqual(["HEAD", "GET", "DELETE", "GET", "GET", "GET"]);
  });

  test("1xx informational answers are consumed; the client gets the final response", async () => {
    const interim =
      "HTTP/1.1 100 Continue\r\n\r\n" + "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n";
    const be = rawBackendOf((req, conn) => {
      if (req.target === "/together") conn.write(interim + ok("final body"));
      else {
        // Each answer in its own write, so the proxy sees them in separate reads.
        conn.write("HTTP/1.1 100 Continue\r\n\r\n");
        setTimeout(() => conn.write("HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\n"), 5);
        setTimeout(() => conn.write(ok("final body")), 10);
      }
    });
    const p = lb(be.port);
    for (const path of ["/together", "/apart"]) {
      const res = await fetch(`${p.url}${path}`);
      expect(res.status).toBe(200);
      expect(await res.text()).toBe("final body");
    }
    // On the wire: exactly one response, the final one.
    const c = await client(p.port);
    c.write("GET /together HTTP/1.1\r\nHost: example.test\r\n\r\n");
    const res = await responseAt(c);
    expect(res.status).toBe(200);
    expect(text(c.received())).not.toContain("HTTP/1.1 1");
  });

  test("a response without Content-Type gets none added", async () => {
    const big = "z".repeat(200_000);
    const be = rawBackendOf((req, conn) => {
      if (req.target === "/whole") conn.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
      else if (req.target === "/empty") conn.write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
      else if (req.target === "/split") {
        conn.write(`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n`);
        setTimeout(() => conn.write(big), 5);
      } else conn.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    });
    const p = lb(be.port);
    const c = await client(p.port);
    let from = 0;
    for (const [path, body] of [
      ["/whole", "hello"],
      ["/empty", ""],
      ["/split", big],
      ["/chunked", "hello"],
    ] as const) {
      c.write(`GET ${path} HTTP/1.1\r\nHost: example.test\r\n\r\n`);
      const res = await responseAt(c, from);
      expect(res.status).toBe(200);
      expect(text(res.body)).toBe(body);
      expect({ path, contentType: headerMap(res.lines).get("content-type") }).toEqual({
        path,
        contentType: undefined,
      });
      from = c.received().length - res.rest.length;
    }
  });

  test("a close-delimited response arrives complete", async () => {
    const body = randomBytes(300_000);
    const be = rawBackendOf((_req, conn) => {
      conn.write("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n");
      conn.write(body.subarray(0, 1000));
      setTimeout(() => {
        conn.write(body.subarray(1000));
        conn.end();
      }, 5);
    });
    const p = lb(be.port);
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${p.url}/close-${i}`);
      expect(res.status).toBe(200);
      const got = new Uint8Array(await res.arrayBuffer());
      expect(got.length).toBe(body.length);
      expect(Buffer.compare(got, body)).toBe(0);
    }
    // Each response used up its connection.
    expect(be.conns.length).toBe(2);
  });

  test("a chunked response with extensions and trailers arrives with the exact body", async () => {
    const a = randomBytes(3000);
    const b = randomBytes(70_000);
    const be = rawBackendOf((_req, conn) => {
      conn.write(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n" +
          "Trailer: X-Checksum\r\n\r\n",
      );
      conn.write(`${a.length.toString(16)};name=value;flag\r\n`);
      conn.write(a);
      conn.write(`\r\n${b.length.toString(16).toUpperCase()} ; q="x y"\r\n`);
      conn.write(b);
      conn.write("\r\n0;last=1\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n");
    });
    const p = lb(be.port);
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${p.url}/chunked`);
      expect(res.status).toBe(200);
      const got = new Uint8Array(await res.arrayBuffer());
      expect(Buffer.compare(got, Buffer.concat([a, b]))).toBe(0);
    }
    // The chunked body ended cleanly, so the connection was reused.
    expect(be.conns.length).toBe(1);
  });
});

describe("header hygiene", () => {
  const HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "x-secret"];

  test("hop-by-hop request headers and those named in Connection do not reach the backend", async () => {
    const be = rawBackendOf((_req, conn) => conn.write(ok()));
    const p = lb(be.port);
    const c = await client(p.port);
    c.write(
      "GET /hop HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Secret, Upgrade\r\n" +
        "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\n" +
        "Upgrade: h2c\r\nX-Secret: 1\r\nX-Keep: yes\r\n\r\n",
    );
    expect((await responseAt(c)).status).toBe(200);
    const req: RawRequest = be.requests[0]!;
    const sent = names(req.lines);
    for (const n of HOP) expect({ n, present: sent.includes(n) }).toEqual({ n, present: false });
    expect(headerMap(req.lines).get("x-keep")).toEqual(["yes"]);
  });

  test("hop-by-hop response headers and those named in Connection do not reach the client", async () => {
    const be = rawBackendOf((_req, conn) =>
      conn.write(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5, max=100\r\n" +
          "Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Secret: 1\r\n" +
          "X-Visible: yes\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
      ),
    );
    const p = lb(be.port);
    const c = await client(p.port);
    c.write("GET /hop HTTP/1.1\r\nHost: example.test\r\n\r\n");
    const res = await responseAt(c);
    expect(res.status).toBe(200);
    expect(text(res.body)).toBe("ok");
    const got = names(res.lines);
    for (const n of HOP) expect({ n, present: got.includes(n) }).toEqual({ n, present: false });
    expect(headerMap(res.lines).get("x-visible")).toEqual(["yes"]);
  });

  test("X-Forwarded-For / -Proto / -Host", async () => {
    const be = serveBackend(() => new Response("ok"));
    const p = lb(be.port);
    await fetch(`${p.url}/a`);
    await fetch(`${p.url}/b`, { headers: { "x-forwarded-for": "1.2.3.4" } });
    const [a, b] = be.seen;
    expect(a!.headers.get("x-forwarded-for")).toBe("127.0.0.1");
    expect(b!.headers.get("x-forwarded-for")).toBe("1.2.3.4, 127.0.0.1");
    for (const s of be.seen) {
      expect(s.headers.get("x-forwarded-proto")).toBe("http");
      expect(s.headers.get("x-forwarded-host")).toBe(`127.0.0.1:${p.port}`);
    }
    // A client-chosen Host is what X-Forwarded-Host reports, on one line each.
    const raw = rawBackendOf((_req, conn) => conn.write(ok()));
    const p2 = lb(raw.port);
    const c = await client(p2.port);
    c.write("GET / HTTP/1.1\r\nHost: app.example.test:8080\r\nX-Forwarded-For: 10.0.0.1, 1.2.3.4\r\n\r\n");
    expect((await responseAt(c)).status).toBe(200);
    const fields = headerMap(raw.requests[0]!.lines);
    expect(fields.get("x-forwarded-for")).toEqual(["10.0.0.1, 1.2.3.4, 127.0.0.1"]);
    expect(fields.get("x-forwarded-proto")).toEqual(["http"]);
    expect(fields.get("x-forwarded-host")).toEqual(["app.example.test:8080"]);
  });

  test("Host: the client's by default and with preserve, the backend's with --host-header backend", async () => {
    const be = rawBackendOf((_req, conn) => conn.write(ok()));
    for (const [flags, expected] of [
      [[], "app.example.test"],
      [["--host-header", "preserve"], "app.example.test"],
      [["--host-header", "backend"], `127.0.0.1:${be.port}`],
    ] as const) {
      const p = lb(be.port, [...flags]);
      const c = await client(p.port);
      c.write("GET /host HTTP/1.1\r\nHost: app.example.test\r\n\r\n");
      expect((await responseAt(c)).status).toBe(200);
      const fields = headerMap(be.requests.at(-1)!.lines);
      expect({ flags, host: fields.get("host") }).toEqual({ flags, host: [expected] });
      expect(fields.get("x-forwarded-host")).toEqual(["app.example.test"]);
    }
  });
});

describe("upstream connections", () => {
  test("50 sequential requests use one upstream connection", async () => {
    const ports = new Set<number>();
    const be = serveBackend(async (req, server) => {
      ports.add(server.requestIP(req)!.port);
      return new Response(`${req.method} ${(await req.arrayBuffer()).byteLength}`);
    });
    const p = lb(be.port);
    for (let i = 0; i < 50; i++) {
      // Alternating GET and POST with a body: both leave the connection reusable.
      const res =
        i % 2 === 0
          ? await fetch(`${p.url}/${i}`)
          : await fetch(`${p.url}/${i}`, { method: "POST", body: "x".repeat(i) });
      expect(await res.text()).toBe(i % 2 === 0 ? "GET 0" : `POST ${i}`);
    }
    expect(be.seen).toHaveLength(50);
    expect(ports.size).toBe(1);
    expect(p.pools[0]!.stats.opened).toBe(1);
    expect(p.pools[0]!.stats.reused).toBe(49);
  });

  test("a backend that closed its idle connection: the next GET and POST still succeed, once each", async () => {
    // The backend promises keep-alive, then closes right after each response.
    const be = rawBackendOf((req, conn) => {
      conn.write(ok(`${req.method} ${req.target}`, "Connection: keep-alive\r\n"));
      conn.end();
    });
    const p = lb(be.port);
    const pool = p.pools[0]!;
    expect(await (await fetch(`${p.url}/1`)).text()).toBe("GET /1");
    const res = await fetch(`${p.url}/2`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("GET /2");
    const post = await fetch(`${p.url}/3`, { method: "POST", body: "payload" });
    expect(post.status).toBe(200);
    expect(await post.text()).toBe("POST /3");
    expect(be.requests.map((r) => `${r.method} ${r.target}`)).toEqual(["GET /1", "GET /2", "POST /3"]);
    expect(be.conns.length).toBe(3);
    expect(pool.stats.opened).toBe(3);
  });

  test("a pooled connection that dies under a request: GET is retried once, POST is not sent twice", async () => {
    // The backend answers the first request on a connection with keep-alive and drops the connection
    // when a second request arrives on it, without answering: the race where the backend's idle close
    // crosses the proxy's next request.
    const be = rawBackendOf((req, conn) => {
      if (conn.requests.length === 1)
        conn.write(ok(`${req.method} ${req.target}`, "Connection: keep-alive\r\n"));
      else conn.destroy();
    });
    const p = lb(be.port);
    const pool = p.pools[0]!;
    expect(await (await fetch(`${p.url}/warm-1`)).text()).toBe("GET /warm-1");
    await waitFor("the connection to be pooled", () => pool.stats.idle === 1);

    const get = await fetch(`${p.url}/get`);
    expect(get.status).toBe(200);
    expect(await get.text()).toBe("GET /get");
    // Sent on the stale connection (dropped unanswered), then once more on a fresh one.
    expect(be.requests.filter((r) => r.target === "/get").map((r) => r.conn.id)).toEqual([1, 2]);
    expect(pool.stats.reused).toBe(1);
    expect(pool.stats.opened).toBe(2);

    await waitFor("the fresh connection to be pooled", () => pool.stats.idle === 1);
    const post = await fetch(`${p.url}/post`, { method: "POST", body: "pay once" });
    // The POST reached the backend on the dying connection; the proxy cannot know whether it was
    // processed, so it must not replay it.
    expect(post.status).toBe(502);
    expect(be.requests.filter((r) => r.target === "/post")).toHaveLength(1);

    // An empty-bodied POST is not replayed either.
    expect(await (await fetch(`${p.url}/warm-2`)).text()).toBe("GET /warm-2");
    await waitFor("a connection to be pooled", () => pool.stats.idle === 1);
    const emptyPost = await fetch(`${p.url}/post-empty`, { method: "POST" });
    expect(emptyPost.status).toBe(502);
    expect(be.requests.filter((r) => r.target === "/post-empty")).toHaveLength(1);
  });
});
