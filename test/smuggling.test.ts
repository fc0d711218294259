// Request smuggling and framing refusals, over raw sockets. For every bad request the client must get the
// refusal status, the connection must be closed, and the backend must receive nothing: neither the bad request
// nor a request pipelined after it. Each group has a positive control in the same shape, so the assertions are
// shown to be able to fail. See docs/bun-serve-framing.md for which refusals come from Bun and which from us.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { proxy, type RawConn, type RawResult, rawBackend, rawSession, statusOf, waitFor } from "./helpers.ts";

interface Seen {
  /** Request line, e.g. "POST /ok HTTP/1.1". */
  line: string;
  head: string;
  body: string;
}

/**
 * A raw backend that understands just enough HTTP/1.1 (Content-Length and chunked bodies) to record every
 * COMPLETE request it receives and answer each with 200 "ok". Incomplete requests stay in conn.received only.
 */
function recordingBackend() {
  const requests: Seen[] = [];
  const parsed = new Map<RawConn, number>();
  const b = rawBackend((conn) => {
    let off = parsed.get(conn) ?? 0;
    // Bounded: each iteration consumes one complete request or stops.
    for (let i = 0; i < 1_000; i++) {
      const buf = conn.received;
      const headEnd = buf.indexOf("\r\n\r\n", off);
      if (headEnd < 0) break;
      const head = buf.slice(off, headEnd);
      const lower = head.toLowerCase();
      let bodyStart = headEnd + 4;
      let body = "";
      let end: number;
      if (/\r\ntransfer-encoding:[ \t]*chunked/.test(lower)) {
        // Decode chunks; stop if the body is not complete yet.
        let p = bodyStart;
        let complete = false;
        for (let guard = 0; guard < 100_000; guard++) {
          const lineEnd = buf.indexOf("\r\n", p);
          if (lineEnd < 0) break;
          const size = Number.parseInt(buf.slice(p, lineEnd).split(";")[0]!, 16);
          if (size === 0) {
            // No trailers: the last chunk is "0\r\n\r\n".
            if (buf.startsWith("\r\n\r\n", lineEnd)) {
              end = lineEnd + 4;
              complete = true;
            }
            break;
          }
          if (buf.length < lineEnd + 2 + size + 2) break;
          body += buf.slice(lineEnd + 2, lineEnd + 2 + size);
          p = lineEnd + 2 + size + 2;
        }
        if (!complete) break;
      } else {
        const cl = /\r\ncontent-length:[ \t]*(\d+)/.exec(lower);
        const n = cl ? Number(cl[1]) : 0;
        if (buf.length < bodyStart + n) break;
        body = buf.slice(bodyStart, bodyStart + n);
        end = bodyStart + n;
        bodyStart = end;
      }
      requests.push({ line: head.slice(0, head.indexOf("\r\n")), head, body });
      conn.sock.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok");
      off = end!;
      parsed.set(conn, off);
    }
  });
  return { ...b, requests };
}

let b: ReturnType<typeof recordingBackend>;
let p: ReturnType<typeof proxy>;

beforeEach(() => {
  b = recordingBackend();
  p = proxy([`127.0.0.1:${b.port}`]);
});

afterEach(async () => {
  p.close();
  b.stop();
});

/** Appended to every bad request: it must not reach the backend either. */
const SECOND = "GET /second HTTP/1.1\r\nHost: x\r\n\r\n";
const FENCE = "GET /fence HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/** Count of HTTP responses in a raw exchange (status lines at the start of the text or after a CRLF). */
function responsesIn(raw: string): number {
  return raw.split(/(?:^|\r\n)HTTP\/1\.[01] \d{3}/).length - 1;
}

/**
 * Sends `bad` followed by a pipelined GET, checks the refusal, then sends a valid request on a new connection
 * and waits for it at the backend: once the fence arrived, anything the bad exchange forwarded would have
 * arrived too (the handler had finished before the refusal was written).
 */
async function expectRefused(bad: string, statuses: number | number[]) {
  const r = await rawSession(p.port, bad + SECOND);
  const accepted = Array.isArray(statuses) ? statuses : [statuses];
  expect(accepted).toContain(statusOf(r.text));
  expect({ closed: r.closed, responses: responsesIn(r.text) }).toEqual({ closed: true, responses: 1 });

  const fence = await rawSession(p.port, FENCE);
  expect(statusOf(fence.text)).toBe(200);
  await waitFor("the fence request at the backend", () => b.requests.some((q) => q.line.includes("/fence")));
  expect(b.requests.map((q) => q.line)).toEqual(["GET /fence HTTP/1.1"]);
  const everything = b.conns.map((c) => c.received).join("");
  expect(everything).not.toContain("/bad");
  expect(everything).not.toContain("/second");
  return r;
}

/** Sends a valid request and returns what the backend recorded for it. */
async function expectForwarded(good: string): Promise<Seen> {
  // Connection: close lets the exchange end at once instead of after the idle wait.
  const r = await rawSession(p.port, good.replace("\r\n", "\r\nConnection: close\r\n"));
  expect(statusOf(r.text)).toBe(200);
  expect(r.text.endsWith("\r\n\r\nok")).toBe(true);
  const seen = await waitFor("the request at the backend", () =>
    b.requests.find((q) => q.line.includes("/ok")),
  );
  expect(b.requests).toHaveLength(1);
  return seen!;
}

/**
 * Writes `first`, waits until `ready()` (e.g. the backend got the forwarded head), then writes `rest`;
 * collects the answer until the server closes the connection or falls silent.
 */
async function staged(first: string, ready: () => unknown, rest: string): Promise<RawResult> {
  const chunks: Buffer[] = [];
  let closed = false;
  const sock = await Bun.connect({
    hostname: "127.0.0.1",
    port: p.port,
    socket: {
      data(_s, d) {
        chunks.push(Buffer.from(d));
      },
      close() {
        closed = true;
      },
      error() {
        closed = true;
      },
    },
  });
  try {
    sock.write(first);
    await waitFor("the first part to be forwarded", ready);
    sock.write(rest);
    await waitFor("the proxy to close the client connection", () => closed);
  } finally {
    sock.end();
  }
  return { text: Buffer.concat(chunks).toString("latin1"), closed, error: null };
}

const CHUNKED_HELLO = "5\r\nhello\r\n0\r\n\r\n";
const post = (fields: string, body: string) => `POST /bad HTTP/1.1\r\nHost: x\r\n${fields}\r\n${body}`;

describe("Transfer-Encoding", () => {
  const cases: [string, string, number | number[]][] = [
    ["CL then TE", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400],
    ["TE then CL", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400],
    ["xchunked", "Transfer-Encoding: xchunked\r\n", 400],
    ["space before colon", "Transfer-Encoding : chunked\r\n", 400],
    ["chunked, identity", "Transfer-Encoding: chunked, identity\r\n", 400],
    ["two TE lines chunked + identity", "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", 400],
    ["two TE lines chunked + chunked", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400],
    // RFC 9112 says 501 (an unknown coding before chunked); Bun 1.4.5 answers 400 before we see it.
    ["gzip, chunked", "Transfer-Encoding: gzip, chunked\r\n", [400, 501]],
  ];
  for (const [name, fields, status] of cases) {
    test(`${name} -> refused, closed, nothing forwarded`, async () => {
      await expectRefused(post(fields, CHUNKED_HELLO), status);
    });
  }

  test("positive control: a valid chunked POST is forwarded with its body", async () => {
    const seen = await expectForwarded(
      `POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${CHUNKED_HELLO}`,
    );
    expect(seen.body).toBe("hello");
  });
});

describe("Content-Length", () => {
  const cases: [string, string, number][] = [
    ["+5", "Content-Length: +5\r\n", 400],
    ["0x5", "Content-Length: 0x5\r\n", 400],
    ["5 5", "Content-Length: 5 5\r\n", 400],
    ["2^64", "Content-Length: 18446744073709551616\r\n", 400],
    ["differing duplicates 5 / 6", "Content-Length: 5\r\nContent-Length: 6\r\n", 400],
    // Legal per RFC 9110, but a proxy that merges them cannot be sure the backend will: we refuse.
    ["identical duplicates 5 / 5", "Content-Length: 5\r\nContent-Length: 5\r\n", 400],
    ["2^53 + 1 (over the body limit)", "Content-Length: 9007199254740993\r\n", 413],
  ];
  for (const [name, fields, status] of cases) {
    test(`Content-Length ${name} -> ${status}, closed, nothing forwarded`, async () => {
      await expectRefused(post(fields, "hello"), status);
    });
  }

  test("positive control: Content-Length: 5 is forwarded with its body", async () => {
    const seen = await expectForwarded("POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    expect(seen.body).toBe("hello");
    expect(seen.head.toLowerCase()).toContain("content-length: 5");
  });
});

describe("chunked body", () => {
  // Bun runs the handler on the head and fails the body stream afterwards (docs/bun-serve-framing.md §4), so
  // the proxy may already have started the upstream request. The backend must then see the connection closed
  // before a complete body: a complete request is what it would act on.
  const cases: [string, string][] = [
    ["zz", "zz\r\nhello\r\n0\r\n\r\n"],
    ["-1", "-1\r\nhello\r\n0\r\n\r\n"],
    ["huge (2^64 + 5)", "10000000000000005\r\nhello\r\n0\r\n\r\n"],
    ["20 hex digits", "ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"],
  ];
  for (const [name, body] of cases) {
    test(`chunk size ${name} -> 400, closed, backend never gets a complete request`, async () => {
      const r = await rawSession(
        p.port,
        `POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${body}${SECOND}`,
      );
      expect(statusOf(r.text)).toBe(400);
      expect({ closed: r.closed, responses: responsesIn(r.text) }).toEqual({ closed: true, responses: 1 });
      // Every upstream connection that got any byte of the bad request must be closed by the proxy.
      for (const c of b.conns) {
        if (c.received.length > 0) await waitFor(`upstream connection ${c.id} closed`, () => c.closed);
      }
      const fence = await rawSession(p.port, FENCE);
      expect(statusOf(fence.text)).toBe(200);
      await waitFor("the fence request", () => b.requests.some((q) => q.line.includes("/fence")));
      expect(b.requests.map((q) => q.line)).toEqual(["GET /fence HTTP/1.1"]);
      const everything = b.conns.map((c) => c.received).join("");
      expect(everything).not.toContain("/second");
      expect(everything).not.toContain("hello");
    });
  }

  // The same failure after the upstream request has started: the head (and a good first chunk) are already
  // at the backend, so the proxy must cut that connection rather than finish the body with "0\r\n\r\n".
  for (const [name, first, bad] of [
    ["bad size after the head", "", "zz\r\nhello\r\n0\r\n\r\n"],
    ["bad size after a good chunk", "5\r\nhello\r\n", "-1\r\nworld\r\n0\r\n\r\n"],
  ] as const) {
    test(`${name}, once the upstream request has started -> backend sees the connection closed`, async () => {
      const r = await staged(
        `POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${first}`,
        () => b.conns.some((c) => c.received.includes(first === "" ? "\r\n\r\n" : "hello\r\n")),
        bad + SECOND,
      );
      expect(statusOf(r.text)).toBe(400);
      expect(r.closed).toBe(true);
      const upstream = b.conns.find((c) => c.received.includes("POST /bad"))!;
      await waitFor("the proxy to close the started upstream request", () => upstream.closed);
      expect(b.requests).toEqual([]);
      expect(upstream.received).not.toContain("0\r\n\r\n");
      expect(upstream.received).not.toContain("world");
      expect(b.conns.map((c) => c.received).join("")).not.toContain("/second");
    });
  }

  test("positive control: a chunk extension is fine and the body arrives", async () => {
    const seen = await expectForwarded(
      "POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n",
    );
    expect(seen.body).toBe("hello");
  });
});

describe("header syntax", () => {
  const get = (fields: string) => `GET /bad HTTP/1.1\r\nHost: x\r\n${fields}\r\n`;
  const cases: [string, string][] = [
    ["CR in a value", "X-A: a\rb\r\n"],
    ["bare LF in a value", "X-A: a\nb\r\n"],
    ["NUL in a value", "X-A: a\0b\r\n"],
    ["space before colon", "X-A : 1\r\n"],
    ["tab before colon", "X-A\t: 1\r\n"],
    ["obs-fold", "X-A: 1\r\n 2\r\n"],
  ];
  for (const [name, fields] of cases) {
    test(`${name} -> 400, closed, nothing forwarded`, async () => {
      await expectRefused(get(fields), 400);
    });
  }

  test("positive control: a tab inside a value is legal and forwarded as sent", async () => {
    const seen = await expectForwarded("GET /ok HTTP/1.1\r\nHost: x\r\nX-A: a\tb\r\n\r\n");
    // Bun lower-cases names; the value travels byte for byte.
    expect(seen.head).toContain("\r\nx-a: a\tb\r\n");
  });
});

describe("Host", () => {
  const cases: [string, string][] = [
    ["missing on HTTP/1.1", "GET /bad HTTP/1.1\r\nX-A: 1\r\n\r\n"],
    ["duplicated, same value", "GET /bad HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n"],
    ["duplicated, different values", "GET /bad HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"],
    ["with user info", "GET /bad HTTP/1.1\r\nHost: u@x\r\n\r\n"],
  ];
  for (const [name, raw] of cases) {
    test(`Host ${name} -> 400, closed, nothing forwarded`, async () => {
      await expectRefused(raw, 400);
    });
  }

  test("positive control: one Host is forwarded as sent", async () => {
    const seen = await expectForwarded("GET /ok HTTP/1.1\r\nHost: x.example:8080\r\n\r\n");
    expect(seen.head.toLowerCase()).toContain("\r\nhost: x.example:8080");
  });
});

describe("method, target and version", () => {
  const cases: [string, string, number][] = [
    [
      "GET with a body (Content-Length: 5)",
      "GET /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
      400,
    ],
    [
      "GET with a chunked body",
      `GET /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${CHUNKED_HELLO}`,
      400,
    ],
    ["CONNECT", "CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n", 501],
    ["a #fragment", "GET /bad#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400],
    ["HTTP/1.2", "GET /bad HTTP/1.2\r\nHost: x\r\n\r\n", 505],
    ["HTTP/2.0", "GET /bad HTTP/2.0\r\nHost: x\r\n\r\n", 505],
  ];
  for (const [name, raw, status] of cases) {
    test(`${name} -> ${status}, closed, nothing forwarded`, async () => {
      await expectRefused(raw, status);
    });
  }

  test("positive control: GET with Content-Length: 0 is forwarded", async () => {
    const seen = await expectForwarded("GET /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    expect(seen.body).toBe("");
  });

  test("positive control: a query without a fragment is forwarded", async () => {
    const seen = await expectForwarded("GET /ok?a=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    expect(seen.line).toBe("GET /ok?a=1 HTTP/1.1");
  });
});

describe("limits", () => {
  test("URI longer than 8 KiB -> 414, closed, nothing forwarded", async () => {
    await expectRefused(`GET /bad?${"a".repeat(9 * 1024)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414);
  });

  test("header block bigger than 8 KiB -> 431, closed, nothing forwarded", async () => {
    const fields = Array.from({ length: 9 }, (_, i) => `X-Pad-${i}: ${"v".repeat(1000)}\r\n`).join("");
    await expectRefused(`GET /bad HTTP/1.1\r\nHost: x\r\n${fields}\r\n`, 431);
  });

  test("positive control: an 8000-byte request-target is forwarded", async () => {
    const target = `/ok?${"a".repeat(8000 - 4)}`;
    const seen = await expectForwarded(`GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(seen.line).toBe(`GET ${target} HTTP/1.1`);
  });

  test("positive control: a 7 KiB header block is forwarded", async () => {
    const fields = Array.from({ length: 7 }, (_, i) => `X-Pad-${i}: ${"v".repeat(1000)}\r\n`).join("");
    const seen = await expectForwarded(`GET /ok HTTP/1.1\r\nHost: x\r\n${fields}\r\n`);
    expect(seen.head).toContain(`\r\nx-pad-6: ${"v".repeat(1000)}\r\n`);
  });
});
