import { describe, expect, test } from "bun:test";
import { CHUNK_LINE_BYTES_MAX, HEADER_BYTES_MAX, HEADER_LINES_MAX } from "../core/limits.ts";
import { ChunkedDecoder, H1ParseError, parseResponseHead, type ResponseHead } from "./h1parse.ts";

/** Latin1 encoding: one byte per char, so tests can put any byte on the wire. */
const bytes = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
const text = (b: Uint8Array): string => String.fromCharCode(...b);

function parse(s: string, method = "GET", max?: number): ResponseHead | null {
  const b = bytes(s);
  return parseResponseHead(b, 0, b.length, method, max);
}

function errorCode(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof H1ParseError) return e.code;
    throw e;
  }
  throw new Error("expected an H1ParseError");
}

const headErr = (s: string, method = "GET", max?: number): string => errorCode(() => parse(s, method, max));

/** A head with the given status line and field lines, CRLF-terminated. */
const resp = (fields: string[], statusLine = "HTTP/1.1 200 OK"): string =>
  statusLine + "\r\n" + fields.map((f) => f + "\r\n").join("") + "\r\n";

describe("parseResponseHead: valid heads", () => {
  const typical = resp([
    "Date: Mon, 27 Jul 2009 12:28:53 GMT",
    "Server: nginx",
    "Content-Type: text/html; charset=utf-8",
    "Content-Length: 1234",
    "Connection: keep-alive",
    "Set-Cookie: a=1",
    "X-Empty:",
    "X-Ws: \t  inner  space \t ",
  ]);

  test("typical head", () => {
    const h = parse(typical + "BODY")!;
    expect(h).toEqual({
      status: 200,
      reason: "OK",
      headers: [
        "Date",
        "Mon, 27 Jul 2009 12:28:53 GMT",
        "Server",
        "nginx",
        "Content-Type",
        "text/html; charset=utf-8",
        "Content-Length",
        "1234",
        "Connection",
        "keep-alive",
        "Set-Cookie",
        "a=1",
        "X-Empty",
        "",
        "X-Ws",
        "inner  space",
      ],
      framing: "length",
      contentLength: 1234,
      keepAlive: true,
      headBytes: typical.length,
    });
  });

  const samples: [string, string, string][] = [
    ["typical", typical, "GET"],
    ["chunked", resp(["Transfer-Encoding: chunked", "X: y"]), "GET"],
    ["bare LF", "HTTP/1.1 404 Not Found\nContent-Length: 0\nA:b\n\n", "GET"],
    ["no reason, no SP", "HTTP/1.1 200\r\nContent-Length: 3\r\n\r\n", "GET"],
    ["HTTP/1.0", resp(["Connection: keep-alive", "Content-Length: 5"], "HTTP/1.0 200 OK"), "GET"],
    ["HEAD", resp(["Content-Length: 99"]), "HEAD"],
    ["no fields", "HTTP/1.1 204 No Content\r\n\r\n", "GET"],
  ];
  for (const [name, s, method] of samples) {
    test(`split at every byte boundary: ${name}`, () => {
      const full = parse(s, method);
      expect(full).not.toBeNull();
      expect(full!.headBytes).toBe(s.length);
      const b = bytes(s + "NEXT");
      for (let k = 0; k < s.length; k++) expect(parseResponseHead(b, 0, k, method)).toBeNull();
      for (let k = s.length; k <= b.length; k++) expect(parseResponseHead(b, 0, k, method)).toEqual(full);
    });
  }

  test("honours a non-zero start offset and ignores bytes before it", () => {
    const s = resp(["Content-Length: 2"]);
    const b = bytes("garbage\r\n\r\n" + s + "hi");
    const h = parseResponseHead(b, 11, b.length, "GET")!;
    expect(h.headBytes).toBe(s.length);
    expect(h.headers).toEqual(["Content-Length", "2"]);
    expect(parseResponseHead(b, 11, 11 + s.length - 1, "GET")).toBeNull();
  });

  test("bare LF and CRLF give the same result", () => {
    const crlf = parse(typical)!;
    const lf = parse(typical.replaceAll("\r\n", "\n"))!;
    expect({ ...lf, headBytes: 0 }).toEqual({ ...crlf, headBytes: 0 });
  });

  test("repeated Set-Cookie kept separate and in order, names keep their case", () => {
    const h = parse(
      resp(["Set-Cookie: a=1", "X: 1", "set-cookie: b=2, c=3", "SET-COOKIE: d=4", "Content-Length: 0"]),
    )!;
    expect(h.headers).toEqual([
      "Set-Cookie",
      "a=1",
      "X",
      "1",
      "set-cookie",
      "b=2, c=3",
      "SET-COOKIE",
      "d=4",
      "Content-Length",
      "0",
    ]);
  });

  test("reason phrase: empty, with SP, with HTAB and obs-text; obs-text decoded as latin1", () => {
    expect(parse("HTTP/1.1 200\r\n\r\n", "HEAD")!.reason).toBe("");
    expect(parse("HTTP/1.1 200 \r\n\r\n", "HEAD")!.reason).toBe("");
    expect(parse("HTTP/1.1 599 Some\tThing  Odd \r\n\r\n", "HEAD")!.reason).toBe("Some\tThing  Odd ");
    expect(parse("HTTP/1.1 200 Caf\xe9\x80\r\nX: \x80\xff\r\n\r\n", "HEAD")).toMatchObject({
      status: 200,
      reason: "Caf\xe9\x80",
      headers: ["X", "\x80\xff"],
    });
  });

  test("status codes 100..999 accepted", () => {
    expect(parse("HTTP/1.1 100 Continue\r\n\r\n")!.status).toBe(100);
    expect(parse("HTTP/1.1 999 Weird\r\nContent-Length: 0\r\n\r\n")!.status).toBe(999);
  });

  test("1xx followed by the final response in the same buffer", () => {
    const s =
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" +
      resp(["Content-Length: 1"]);
    const b = bytes(s + "x");
    const h1 = parseResponseHead(b, 0, b.length, "POST")!;
    expect(h1).toMatchObject({ status: 100, framing: "none", headBytes: 25 });
    const h2 = parseResponseHead(b, h1.headBytes, b.length, "POST")!;
    expect(h2).toMatchObject({ status: 103, framing: "none", headers: ["Link", "</a>"] });
    const h3 = parseResponseHead(b, h1.headBytes + h2.headBytes, b.length, "POST")!;
    expect(h3).toMatchObject({ status: 200, framing: "length", contentLength: 1 });
    expect(h1.headBytes + h2.headBytes + h3.headBytes).toBe(s.length);
  });
});

describe("parseResponseHead: status line rejections", () => {
  const bad = [
    "HTTP/2 200 OK",
    "HTTP/2.0 200 OK",
    "HTTP/1.2 200 OK",
    "HTTP/1.1200 OK",
    "ICY 200 OK",
    "http/1.1 200 OK",
    "Http/1.1 200 OK",
    " HTTP/1.1 200 OK",
    "HTTP/1.1  200 OK",
    "HTTP/1.1 20 OK",
    "HTTP/1.1 2000 OK",
    "HTTP/1.1 20x OK",
    "HTTP/1.1 -20 OK",
    "HTTP/1.1 099 Low",
    "HTTP/1.1 000 Zero",
    "HTTP/1.1 200\tOK",
    "HTTP/1.1 200 O\x00K",
    "HTTP/1.1 200 O\x7fK",
    "HTTP/1.1 200 O\rK",
    "HTTP/1.1 200 OK\r",
    "\x16\x03\x01\x02\x00",
    "<html>hello</html>",
  ];
  for (const line of bad) {
    test(JSON.stringify(line), () => {
      expect(headErr(line + "\r\nContent-Length: 0\r\n\r\n")).toBe("bad_status_line");
    });
  }

  test("non-HTTP peers are rejected from their first bytes", () => {
    expect(headErr("ICY")).toBe("bad_status_line");
    expect(headErr("X")).toBe("bad_status_line");
    expect(headErr("HTTP/2")).toBe("bad_status_line");
    expect(headErr("HTTP/1.1 2a")).toBe("bad_status_line");
    expect(parse("HTTP/1.1 20")).toBeNull();
  });
});

describe("parseResponseHead: field rejections", () => {
  const cases: [string, string][] = [
    ["space before colon", "Content-Length : 5"],
    ["tab before colon", "X\t: 5"],
    ["empty name", ": value"],
    ["no colon", "NoColonHere"],
    ["non-tchar in name", "X@Y: 1"],
    ["quote in name", 'X"Y: 1'],
    ["NUL in value", "X: a\x00b"],
    ["NUL at end of value", "X: ab\x00"],
    ["control char in value", "X: a\x01b"],
    ["DEL in value", "X: a\x7fb"],
    ["bare CR in value", "X: a\rb"],
    ["bare CR at end of value", "X: ab\r"],
    ["bare CR in name", "X\rY: 1"],
  ];
  for (const [name, field] of cases) {
    test(name, () => {
      expect(headErr(resp(["A: 1", field, "Content-Length: 0"]))).toBe("bad_header");
    });
  }

  test("obs-fold (continuation line) rejected", () => {
    expect(headErr(resp(["X-Long: part1", " part2", "Content-Length: 0"]))).toBe("bad_header");
    expect(headErr(resp(["X-Long: part1", "\tpart2", "Content-Length: 0"]))).toBe("bad_header");
  });

  test("whitespace line right after the status line rejected", () => {
    expect(headErr("HTTP/1.1 200 OK\r\n Content-Length: 0\r\n\r\n")).toBe("bad_header");
  });

  test("bare CR as line terminator or in the final empty line rejected", () => {
    expect(headErr("HTTP/1.1 200 OK\r\nA: 1\rB: 2\r\n\r\n")).toBe("bad_header");
    expect(headErr("HTTP/1.1 200 OK\r\nA: 1\r\n\rX")).toBe("bad_header");
  });

  test("invalid heads never yield a result for any prefix", () => {
    const s = resp(["A: 1", "B : 2", "Content-Length: 0"]);
    const b = bytes(s);
    for (let k = 0; k < s.length; k++) {
      try {
        expect(parseResponseHead(b, 0, k, "GET")).toBeNull();
      } catch (e) {
        expect((e as H1ParseError).code).toBe("bad_header");
      }
    }
  });
});

describe("parseResponseHead: limits", () => {
  test("head of exactly maxHeadBytes accepted, one more byte rejected", () => {
    const base = resp(["X: "]);
    const exact = resp(["X: " + "a".repeat(HEADER_BYTES_MAX - base.length)]);
    expect(exact.length).toBe(HEADER_BYTES_MAX);
    expect(parse(exact, "HEAD")!.headBytes).toBe(HEADER_BYTES_MAX);
    const over = resp(["X: " + "a".repeat(HEADER_BYTES_MAX - base.length + 1)]);
    expect(headErr(over, "HEAD")).toBe("header_too_large");
  });

  test("incomplete head rejected as soon as it reaches the limit", () => {
    const partial = "HTTP/1.1 200 OK\r\nX: " + "a".repeat(HEADER_BYTES_MAX);
    const b = bytes(partial);
    expect(parseResponseHead(b, 0, HEADER_BYTES_MAX - 1, "GET")).toBeNull();
    expect(errorCode(() => parseResponseHead(b, 0, HEADER_BYTES_MAX, "GET"))).toBe("header_too_large");
    expect(errorCode(() => parseResponseHead(b, 0, b.length, "GET"))).toBe("header_too_large");
  });

  test("custom maxHeadBytes", () => {
    const s = resp(["Content-Length: 0"]);
    expect(parse(s, "GET", s.length)).not.toBeNull();
    // The final CR sits right at the limit and would need one more byte for its LF.
    expect(headErr(s, "GET", s.length - 1)).toBe("header_too_large");
    expect(headErr(s, "GET", 10)).toBe("header_too_large");
  });

  test(`${HEADER_LINES_MAX} header lines accepted, one more rejected`, () => {
    const fields = Array.from({ length: HEADER_LINES_MAX }, (_, i) => `X${i}: ${i}`);
    expect(parse(resp(fields), "HEAD")!.headers.length).toBe(HEADER_LINES_MAX * 2);
    expect(headErr(resp([...fields, "Y: 1"]), "HEAD")).toBe("too_many_headers");
  });
});

describe("parseResponseHead: Content-Length", () => {
  const cl = (...values: string[]) => parse(resp(values.map((v) => "Content-Length: " + v)));
  const clErr = (...values: string[]) => headErr(resp(values.map((v) => "Content-Length: " + v)));

  test("valid values", () => {
    expect(cl("0")).toMatchObject({ framing: "length", contentLength: 0, keepAlive: true });
    expect(cl("1234")!.contentLength).toBe(1234);
    expect(cl("  42  ")!.contentLength).toBe(42);
    expect(cl("007")!.contentLength).toBe(7);
    expect(cl(String(Number.MAX_SAFE_INTEGER))!.contentLength).toBe(Number.MAX_SAFE_INTEGER);
    expect(parse(resp(["content-LENGTH: 5"]))!.contentLength).toBe(5);
  });

  test("identical repeated values collapse to one", () => {
    expect(cl("5", "5")!.contentLength).toBe(5);
    expect(cl("5, 5")!.contentLength).toBe(5);
    expect(cl("5,5,5", "5")!.contentLength).toBe(5);
    expect(cl("5 ,\t5")!.contentLength).toBe(5);
  });

  const bad: string[][] = [
    [""],
    ["+5"],
    ["-1"],
    ["0x10"],
    ["1e3"],
    ["5a"],
    ["a5"],
    ["5 5"],
    ["5.0"],
    ["5;"],
    ["5,"],
    [",5"],
    ["5,,5"],
    ["5, 6"],
    ["5", "6"],
    ["5", "5", "05x"],
    ["9007199254740992"],
    ["99999999999999999999999"],
    ["\xb9"],
  ];
  for (const values of bad) {
    test(`rejects ${JSON.stringify(values)}`, () => {
      expect(clErr(...values)).toBe("bad_content_length");
    });
  }

  test("validated even when the response has no body", () => {
    expect(headErr(resp(["Content-Length: x"]), "HEAD")).toBe("bad_content_length");
    expect(headErr(resp(["Content-Length: 1", "Content-Length: 2"], "HTTP/1.1 304 Not Modified"))).toBe(
      "bad_content_length",
    );
  });
});

describe("parseResponseHead: Transfer-Encoding", () => {
  const te = (...values: string[]) => parse(resp(values.map((v) => "Transfer-Encoding: " + v)));
  const teErr = (...values: string[]) => headErr(resp(values.map((v) => "Transfer-Encoding: " + v)));

  test("chunked final -> chunked", () => {
    for (const v of [
      ["chunked"],
      ["CHUNKED"],
      ["Chunked"],
      ["gzip, chunked"],
      ["gzip,chunked"],
      ["gzip", "chunked"],
    ]) {
      expect(te(...v)).toMatchObject({ framing: "chunked", contentLength: -1, keepAlive: true });
    }
    expect(te("gzip;level=1, chunked")!.framing).toBe("chunked");
    expect(te(' x;a="q\\"uo, ted" ; b=c , chunked ')!.framing).toBe("chunked");
    expect(te(", gzip , , chunked")!.framing).toBe("chunked");
    expect(parse(resp(["transfer-encoding: chunked"]))!.framing).toBe("chunked");
  });

  test("chunked not final -> read until close", () => {
    for (const v of [
      ["gzip"],
      ["chunked, gzip"],
      ["chunked", "gzip"],
      ["identity"],
      ['gzip;x="a, chunked"'],
    ]) {
      expect(te(...v)).toMatchObject({ framing: "close", contentLength: -1, keepAlive: false });
    }
  });

  test("the original field value is passed through unchanged", () => {
    expect(te("gzip, chunked")!.headers).toEqual(["Transfer-Encoding", "gzip, chunked"]);
  });

  const bad: string[][] = [
    [""],
    [","],
    ["chunked, chunked"],
    ["chunked", "chunked"],
    ["chunked", "gzip, chunked"],
    ["chunked;a=b"],
    ["gzip chunked"],
    ["gzip;"],
    ["gzip;a"],
    ["gzip;a="],
    ['gzip;a="unterminated, chunked'],
    ["gzip/1, chunked"],
  ];
  for (const values of bad) {
    test(`rejects ${JSON.stringify(values)}`, () => {
      expect(teErr(...values)).toBe("unsupported_transfer_coding");
    });
  }

  test("Transfer-Encoding with Content-Length -> conflicting_framing", () => {
    expect(headErr(resp(["Transfer-Encoding: chunked", "Content-Length: 5"]))).toBe("conflicting_framing");
    expect(headErr(resp(["Content-Length: 5", "Transfer-Encoding: gzip"]))).toBe("conflicting_framing");
    expect(headErr(resp(["Content-Length: 5", "Transfer-Encoding: chunked"]), "HEAD")).toBe(
      "conflicting_framing",
    );
  });

  test("Transfer-Encoding in HTTP/1.0 -> conflicting_framing", () => {
    expect(headErr(resp(["Transfer-Encoding: chunked"], "HTTP/1.0 200 OK"))).toBe("conflicting_framing");
  });
});

describe("parseResponseHead: framing and keep-alive", () => {
  test("neither Content-Length nor Transfer-Encoding -> close", () => {
    expect(parse(resp(["X: 1"]))).toMatchObject({ framing: "close", contentLength: -1, keepAlive: false });
    expect(parse(resp(["Connection: keep-alive"]))).toMatchObject({ framing: "close", keepAlive: false });
  });

  test("HEAD, 1xx, 204, 304 -> none whatever the headers say", () => {
    expect(parse(resp(["Content-Length: 100"]), "HEAD")).toMatchObject({
      framing: "none",
      contentLength: -1,
      keepAlive: true,
    });
    expect(parse(resp(["Transfer-Encoding: chunked"]), "HEAD")).toMatchObject({
      framing: "none",
      keepAlive: true,
    });
    expect(parse(resp([]), "HEAD")).toMatchObject({ framing: "none", keepAlive: true });
    for (const line of ["HTTP/1.1 204 No Content", "HTTP/1.1 304 Not Modified", "HTTP/1.1 100 Continue"]) {
      expect(parse(resp(["Content-Length: 10"], line))).toMatchObject({ framing: "none", keepAlive: true });
      expect(parse(resp(["Transfer-Encoding: chunked"], line))).toMatchObject({ framing: "none" });
      expect(parse(resp([], line))).toMatchObject({ framing: "none", keepAlive: true });
    }
    expect(parse(resp(["Link: </s.css>"], "HTTP/1.1 103 Early Hints"))!.framing).toBe("none");
  });

  test("101 and 2xx to CONNECT: no body and the connection is not reusable", () => {
    const up = parse(resp(["Connection: Upgrade", "Upgrade: websocket"], "HTTP/1.1 101 Switching Protocols"));
    expect(up).toMatchObject({ status: 101, framing: "none", keepAlive: false });
    expect(parse(resp([], "HTTP/1.1 200 Connection Established"), "CONNECT")).toMatchObject({
      framing: "none",
      keepAlive: false,
    });
    expect(parse(resp(["Content-Length: 3"], "HTTP/1.1 407 Auth"), "CONNECT")).toMatchObject({
      framing: "length",
      keepAlive: true,
    });
  });

  test("method comparison is case-sensitive (methods are)", () => {
    expect(parse(resp(["Content-Length: 3"]), "head")!.framing).toBe("length");
  });

  test("Connection tokens", () => {
    const ka = (line: string, ...conn: string[]) =>
      parse(resp([...conn.map((c) => "Connection: " + c), "Content-Length: 0"], line))!.keepAlive;
    const h11 = "HTTP/1.1 200 OK";
    const h10 = "HTTP/1.0 200 OK";
    expect(ka(h11)).toBe(true);
    expect(ka(h11, "close")).toBe(false);
    expect(ka(h11, "CLOSE")).toBe(false);
    expect(ka(h11, "Upgrade, Close")).toBe(false);
    expect(ka(h11, "keep-alive", "close")).toBe(false);
    expect(ka(h11, "closed")).toBe(true);
    expect(ka(h11, "x-close")).toBe(true);
    expect(ka(h11, ",, keep-alive ,")).toBe(true);
    expect(ka(h10)).toBe(false);
    expect(ka(h10, "keep-alive")).toBe(true);
    expect(ka(h10, "Keep-Alive")).toBe(true);
    expect(ka(h10, "foo,\tKEEP-ALIVE")).toBe(true);
    expect(ka(h10, "keep-alive, close")).toBe(false);
    expect(ka(h10, "keep-alive-ish")).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------------------

interface DecodeResult {
  body: string;
  consumed: number;
  done: boolean;
}

/** Feed `pieces` in order (stopping once done), collecting body bytes and the total consumed. */
function decode(pieces: Uint8Array[]): DecodeResult {
  const d = new ChunkedDecoder();
  let body = "";
  let consumed = 0;
  for (const piece of pieces) {
    const n = d.feed(piece, (b) => {
      expect(b.buffer).toBe(piece.buffer); // a view into the input, not a copy
      expect(b.length).toBeGreaterThan(0);
      body += text(b);
    });
    expect(n).toBeLessThanOrEqual(piece.length);
    consumed += n;
    if (n < piece.length) {
      expect(d.done).toBe(true);
      break;
    }
  }
  return { body, consumed, done: d.done };
}

const chunkErr = (...pieces: string[]): string => errorCode(() => decode(pieces.map(bytes)));

describe("ChunkedDecoder", () => {
  test("basic body", () => {
    const s = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    expect(decode([bytes(s)])).toEqual({ body: "hello world", consumed: s.length, done: true });
  });

  test("hex sizes, both cases, leading zeros", () => {
    const a = "x".repeat(26);
    const s = `1a\r\n${a}\r\n1A\r\n${a}\r\n000A\r\n0123456789\r\n0000\r\n\r\n`;
    expect(decode([bytes(s)])).toEqual({ body: a + a + "0123456789", consumed: s.length, done: true });
  });

  const sample =
    '5;name=val;q="a;b\\"c"\r\nhello\r\n1 ;x\r\n \r\n10\r\n0123456789abcdef\r\n0;last\r\nX-Trailer: 1\r\nY:\r\n\r\n';
  const expected = "hello 0123456789abcdef";

  test("extensions and trailers", () => {
    expect(decode([bytes(sample)])).toEqual({ body: expected, consumed: sample.length, done: true });
  });

  test("split at every byte boundary (two pieces)", () => {
    const b = bytes(sample);
    for (let k = 0; k <= b.length; k++) {
      expect(decode([b.subarray(0, k), b.subarray(k)])).toEqual({
        body: expected,
        consumed: sample.length,
        done: true,
      });
    }
  });

  test("split at every pair of byte boundaries (three pieces)", () => {
    const s = "3\r\nabc\r\n0\r\nT: v\r\n\r\n";
    const b = bytes(s);
    for (let i = 0; i <= b.length; i++) {
      for (let j = i; j <= b.length; j++) {
        const r = decode([b.subarray(0, i), b.subarray(i, j), b.subarray(j)]);
        expect(r).toEqual({ body: "abc", consumed: s.length, done: true });
      }
    }
  });

  test("one byte at a time", () => {
    const b = bytes(sample);
    const pieces = Array.from({ length: b.length }, (_, i) => b.subarray(i, i + 1));
    expect(decode(pieces)).toEqual({ body: expected, consumed: sample.length, done: true });
  });

  test("body ends inside a buffer that also holds the next response", () => {
    const next = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    const b = bytes(sample + next);
    for (let k = 0; k <= b.length; k++) {
      const r = decode([b.subarray(0, k), b.subarray(k)]);
      expect(r).toEqual({ body: expected, consumed: sample.length, done: true });
    }
    const d = new ChunkedDecoder();
    expect(d.feed(b, () => {})).toBe(sample.length);
    expect(parseResponseHead(b, sample.length, b.length, "GET")!.status).toBe(200);
  });

  test("feed after done consumes nothing", () => {
    const d = new ChunkedDecoder();
    expect(d.feed(bytes("0\r\n\r\n"), () => {})).toBe(5);
    expect(d.done).toBe(true);
    expect(d.feed(bytes("more"), () => {})).toBe(0);
    expect(d.feed(new Uint8Array(0), () => {})).toBe(0);
  });

  test("once a feed has thrown, later feeds throw too", () => {
    const d = new ChunkedDecoder();
    expect(errorCode(() => d.feed(bytes("5\r\nhelloX"), () => {}))).toBe("bad_chunk");
    expect(errorCode(() => d.feed(bytes("\r\n0\r\n\r\n"), () => {}))).toBe("bad_chunk");
    expect(d.done).toBe(false);
  });

  test("empty feed before done is a no-op", () => {
    const d = new ChunkedDecoder();
    expect(d.feed(new Uint8Array(0), () => {})).toBe(0);
    expect(d.done).toBe(false);
  });

  test("largest chunk size (2^53-1) accepted, larger rejected", () => {
    const d = new ChunkedDecoder();
    let got = 0;
    expect(d.feed(bytes("1fffffffffffff\r\nabc"), (b) => (got += b.length))).toBe(19);
    expect(got).toBe(3);
    expect(d.done).toBe(false);
    expect(chunkErr("20000000000000\r\n")).toBe("chunk_too_large");
    expect(chunkErr("ffffffffffffffffff\r\n")).toBe("chunk_too_large");
    expect(chunkErr("fffffff", "fffffffffff", "\r\n")).toBe("chunk_too_large");
  });

  const badSizes = ["0x10", "-1", " 5", "5 ", "5\t", "+5", "", "g", "5g", "5,", "5=1", "\t5", "5_0"];
  for (const size of badSizes) {
    test(`chunk size ${JSON.stringify(size)} rejected`, () => {
      expect(chunkErr(size + "\r\nhello\r\n0\r\n\r\n")).toBe("bad_chunk");
    });
  }

  test("whitespace only allowed before an extension (BWS)", () => {
    expect(decode([bytes("5 \t ;ext\r\nhello\r\n0\r\n\r\n")]).body).toBe("hello");
    expect(chunkErr("5 x;ext\r\nhello\r\n0\r\n\r\n")).toBe("bad_chunk");
  });

  test("size line must end in CRLF", () => {
    expect(chunkErr("5\nhello\r\n0\r\n\r\n")).toBe("bad_chunk");
    expect(chunkErr("5\rhello\r\n0\r\n\r\n")).toBe("bad_chunk");
    expect(chunkErr("5;a\nhello\r\n0\r\n\r\n")).toBe("bad_chunk");
    expect(chunkErr("5;a\rhello\r\n0\r\n\r\n")).toBe("bad_chunk");
  });

  test("missing or malformed CRLF after chunk data", () => {
    expect(chunkErr("5\r\nhelloX\r\n0\r\n\r\n")).toBe("bad_chunk");
    expect(chunkErr("5\r\nhello\n0\r\n\r\n")).toBe("bad_chunk");
    expect(chunkErr("5\r\nhello\rX0\r\n\r\n")).toBe("bad_chunk");
    expect(chunkErr("5\r\nhello", "\r", "X")).toBe("bad_chunk");
    expect(chunkErr("5\r\nhello0\r\n\r\n")).toBe("bad_chunk");
  });

  test("control bytes in extensions rejected", () => {
    expect(chunkErr("5;a\x00b\r\nhello\r\n0\r\n\r\n")).toBe("bad_chunk");
    expect(chunkErr("5;a\x7f\r\nhello\r\n0\r\n\r\n")).toBe("bad_chunk");
  });

  test("chunk-size line length bounded", () => {
    const ok = "5;" + "a".repeat(CHUNK_LINE_BYTES_MAX - 2);
    expect(decode([bytes(ok + "\r\nhello\r\n0\r\n\r\n")]).body).toBe("hello");
    expect(chunkErr(ok + "a\r\nhello\r\n0\r\n\r\n")).toBe("bad_chunk");
    expect(chunkErr("5;", "a".repeat(CHUNK_LINE_BYTES_MAX))).toBe("bad_chunk");
    expect(chunkErr("0".repeat(CHUNK_LINE_BYTES_MAX + 1))).toBe("bad_chunk");
    expect(chunkErr("5" + " ".repeat(CHUNK_LINE_BYTES_MAX))).toBe("bad_chunk");
  });

  test("last chunk must be followed by trailers or CRLF", () => {
    expect(chunkErr("0\r\n\n")).toBe("bad_header");
    expect(chunkErr("0\r\n\r\r")).toBe("bad_chunk");
    expect(chunkErr("0\r\n\rX")).toBe("bad_chunk");
  });

  test("malformed trailers rejected", () => {
    expect(chunkErr("0\r\nNoColon\r\n\r\n")).toBe("bad_header");
    expect(chunkErr("0\r\nX : 1\r\n\r\n")).toBe("bad_header");
    expect(chunkErr("0\r\n X: 1\r\n\r\n")).toBe("bad_header");
    expect(chunkErr("0\r\nX: a\x00\r\n\r\n")).toBe("bad_header");
    expect(chunkErr("0\r\nX: a\nY: b\r\n\r\n")).toBe("bad_header");
    expect(chunkErr("0\r\nX: a\rY: b\r\n\r\n")).toBe("bad_header");
  });

  test("trailer section bounded by HEADER_BYTES_MAX", () => {
    const field = (n: number) => "X: " + "a".repeat(n - 5) + "\r\n";
    // The limit covers the trailer fields plus the final CRLF, as HEADER_BYTES_MAX does for a head.
    expect(decode([bytes("0\r\n" + field(HEADER_BYTES_MAX - 2) + "\r\n")]).done).toBe(true);
    expect(chunkErr("0\r\n" + field(HEADER_BYTES_MAX - 1) + "\r\n")).toBe("header_too_large");
    expect(chunkErr("0\r\n" + field(4000) + field(4000) + field(400) + "\r\n")).toBe("header_too_large");
  });
});
