import { describe, expect, test } from "bun:test";
import { checkRequestFraming, type FramingVerdict } from "./framing.ts";
import {
  HEADER_BYTES_MAX,
  HEADER_LINES_MAX,
  HOST_LEN_MAX,
  REQUEST_BODY_BYTES_MAX,
  URI_BYTES_MAX,
} from "./limits.ts";

/** Headers as Bun.serve hands them over: repeated fields appended, which merges them with ", ". */
function headers(...fields: [string, string][]): Headers {
  const h = new Headers();
  for (const [name, value] of fields) h.append(name, value);
  return h;
}

function check(method: string, fields: [string, string][], url = "http://x/"): FramingVerdict {
  return checkRequestFraming(method, url, headers(...fields).toJSON());
}

function status(verdict: FramingVerdict): number {
  return verdict.ok ? 200 : verdict.status;
}

describe("checkRequestFraming", () => {
  test("accepts an ordinary GET", () => {
    const h = headers(
      ["Host", "example.com"],
      ["User-Agent", "curl/8.5.0"],
      ["Accept", "*/*"],
      ["Cookie", "a=1; b=2"],
    );
    expect(checkRequestFraming("GET", "http://example.com/a/b?c=d", h.toJSON())).toEqual({ ok: true });
  });

  test("accepts a request without Host (only HTTP/1.0 gets past Bun so)", () => {
    expect(checkRequestFraming("GET", "/p", headers().toJSON())).toEqual({ ok: true });
  });

  test("CONNECT -> 501", () => {
    expect(status(checkRequestFraming("CONNECT", "evil:443", headers(["Host", "evil:443"]).toJSON()))).toBe(
      501,
    );
  });

  test("request-target longer than URI_BYTES_MAX -> 414, in absolute and origin form", () => {
    const atMax = "/" + "a".repeat(URI_BYTES_MAX - 1);
    const over = atMax + "a";
    // At the limit the target is not refused as too long, but the request line alone then exceeds the
    // header-block limit (HEADER_BYTES_MAX counts the start line).
    expect(check("GET", [["Host", "x"]], "http://x" + atMax)).toEqual({
      ok: false,
      status: 431,
      reason: "header block too large",
    });
    expect(check("GET", [["Host", "x"]], "http://x/" + "a".repeat(HEADER_BYTES_MAX - 30))).toEqual({
      ok: true,
    });
    expect(status(check("GET", [["Host", "x"]], "http://x" + over))).toBe(414);
    expect(status(check("GET", [], over))).toBe(414);
    expect(status(check("GET", [["Host", "x:8080"]], "https://x:8080" + over))).toBe(414);
  });

  test("fragment in the request-target -> 400", () => {
    expect(status(check("GET", [["Host", "x"]], "http://x/a#frag"))).toBe(400);
    expect(check("GET", [["Host", "x"]], "http://x/a%23frag")).toEqual({ ok: true });
  });

  test("header block over HEADER_BYTES_MAX (request line included) -> 431", () => {
    // "GET / HTTP/1.1\r\n" = 16, "host: x\r\n" = 9, "x-pad: " + value + "\r\n" = 9 + value.
    const fill = HEADER_BYTES_MAX - 16 - 9 - 9;
    expect(
      check("GET", [
        ["Host", "x"],
        ["X-Pad", "p".repeat(fill)],
      ]),
    ).toEqual({ ok: true });
    expect(
      status(
        check("GET", [
          ["Host", "x"],
          ["X-Pad", "p".repeat(fill + 1)],
        ]),
      ),
    ).toBe(431);
  });

  test("more than HEADER_LINES_MAX fields -> 431", () => {
    const many = (n: number) => Array.from({ length: n }, (_, i): [string, string] => [`h${i}`, "v"]);
    expect(check("GET", many(HEADER_LINES_MAX))).toEqual({ ok: true });
    expect(status(check("GET", many(HEADER_LINES_MAX + 1)))).toBe(431);
  });

  test("duplicate Host (merged by Bun into 'a, b') -> 400", () => {
    for (const values of [
      ["x", "y"],
      ["x", "x"],
      ["", "x"],
      ["x", ""],
    ]) {
      const v = check(
        "GET",
        values.map((value): [string, string] => ["Host", value]),
      );
      expect(v).toEqual({ ok: false, status: 400, reason: "duplicate Host" });
    }
  });

  test("empty or malformed Host -> 400", () => {
    for (const host of ["", "a b/c@d", "x/evil", "u@x", "a%62c", "x,y", "x:abc", "x:", "[::1", "x:123456"]) {
      expect({ host, status: status(check("GET", [["Host", host]])) }).toEqual({ host, status: 400 });
    }
  });

  test("Host name longer than HOST_LEN_MAX or port over 65535 -> 400", () => {
    expect(check("GET", [["Host", "a".repeat(HOST_LEN_MAX) + ":80"]])).toEqual({ ok: true });
    expect(status(check("GET", [["Host", "a".repeat(HOST_LEN_MAX + 1)]]))).toBe(400);
    expect(check("GET", [["Host", "x:65535"]])).toEqual({ ok: true });
    expect(status(check("GET", [["Host", "x:65536"]]))).toBe(400);
    expect(status(check("GET", [["Host", "x:99999"]]))).toBe(400);
  });

  test("accepts usual Host forms", () => {
    for (const host of ["x", "X.Example", "a_b.c", "a.b.", "x:8080", "10.0.0.1:80", "[::1]", "[::1]:80"]) {
      expect({ host, verdict: check("GET", [["Host", host]]) }).toEqual({ host, verdict: { ok: true } });
    }
  });

  test("Content-Length and Transfer-Encoding together -> 400", () => {
    const v = check("POST", [
      ["Host", "x"],
      ["Content-Length", "5"],
      ["Transfer-Encoding", "chunked"],
    ]);
    expect(status(v)).toBe(400);
  });

  test("Transfer-Encoding chunked, in any case, with empty list elements, is accepted", () => {
    for (const te of ["chunked", "Chunked", "CHUNKED", ",chunked", "chunked,", " , chunked"]) {
      expect({
        te,
        v: check("POST", [
          ["Host", "x"],
          ["Transfer-Encoding", te],
        ]),
      }).toEqual({ te, v: { ok: true } });
    }
  });

  test("Transfer-Encoding whose final coding is not chunked, or malformed -> 400", () => {
    for (const te of [
      "gzip",
      "identity",
      "xchunked",
      "chunked, identity",
      "chunked, chunked",
      "chunked, gzip, chunked",
      "chunked;q=1",
      "chu nked",
      "",
      " , ",
      'gzip, "chunked"',
    ]) {
      expect({
        te,
        status: status(
          check("POST", [
            ["Host", "x"],
            ["Transfer-Encoding", te],
          ]),
        ),
      }).toEqual({
        te,
        status: 400,
      });
    }
  });

  test("Transfer-Encoding with unknown codings before a final chunked -> 501", () => {
    for (const te of ["gzip, chunked", "x-custom;level=1, chunked", "deflate,\tgzip, Chunked"]) {
      expect({
        te,
        status: status(
          check("POST", [
            ["Host", "x"],
            ["Transfer-Encoding", te],
          ]),
        ),
      }).toEqual({
        te,
        status: 501,
      });
    }
  });

  test("Content-Length that is not 1*DIGIT -> 400", () => {
    for (const cl of ["+5", "0x5", "5 5", "-1", "5a", "", "5.0", "\u00b2"]) {
      expect({
        cl,
        v: check("POST", [
          ["Host", "x"],
          ["Content-Length", cl],
        ]),
      }).toEqual({
        cl,
        v: { ok: false, status: 400, reason: "invalid Content-Length" },
      });
    }
    expect(
      check("POST", [
        ["Host", "x"],
        ["Content-Length", "05"],
      ]),
    ).toEqual({ ok: true });
  });

  test("repeated Content-Length (merged by Bun into '5, 5') -> 400", () => {
    const v = check("POST", [
      ["Host", "x"],
      ["Content-Length", "5"],
      ["Content-Length", "5"],
    ]);
    expect(v).toEqual({ ok: false, status: 400, reason: "duplicate Content-Length" });
    expect(
      status(
        check("POST", [
          ["Host", "x"],
          ["Content-Length", "5,5"],
        ]),
      ),
    ).toBe(400);
  });

  test("Content-Length over REQUEST_BODY_BYTES_MAX -> 413, compared without parsing", () => {
    const max = String(REQUEST_BODY_BYTES_MAX);
    const cl = (value: string) =>
      check("PUT", [
        ["Host", "x"],
        ["Content-Length", value],
      ]);
    expect(cl(max)).toEqual({ ok: true });
    expect(cl("000" + max)).toEqual({ ok: true });
    expect(status(cl(String(REQUEST_BODY_BYTES_MAX + 1)))).toBe(413);
    expect(status(cl("18446744073709551616"))).toBe(413);
    expect(status(cl("9".repeat(400)))).toBe(413);
  });

  test("body framing on GET or HEAD (Bun discards such a body) -> 400; zero length is fine", () => {
    for (const method of ["GET", "HEAD"]) {
      expect(
        status(
          check(method, [
            ["Host", "x"],
            ["Content-Length", "5"],
          ]),
        ),
      ).toBe(400);
      expect(
        status(
          check(method, [
            ["Host", "x"],
            ["Transfer-Encoding", "chunked"],
          ]),
        ),
      ).toBe(400);
      expect(
        check(method, [
          ["Host", "x"],
          ["Content-Length", "0"],
        ]),
      ).toEqual({ ok: true });
      expect(
        check(method, [
          ["Host", "x"],
          ["Content-Length", "000"],
        ]),
      ).toEqual({ ok: true });
    }
    expect(
      check("DELETE", [
        ["Host", "x"],
        ["Content-Length", "5"],
      ]),
    ).toEqual({ ok: true });
    expect(
      check("OPTIONS", [
        ["Host", "x"],
        ["Transfer-Encoding", "chunked"],
      ]),
    ).toEqual({ ok: true });
  });
});
