import { describe, expect, test } from "bun:test";
import { connectionListed, forwardedFields, type RequestHeadInput, responseFields } from "./headers.ts";

const base: RequestHeadInput = {
  method: "GET",
  clientHost: "example.com",
  clientIp: "10.1.2.3",
  proto: "http",
  framing: "none",
  contentLength: "",
};

/** The forwarded block behind a request line and Host, as the exchange sends it. */
function lines(rest: string): string[] {
  const head = `GET /a?b=1 HTTP/1.1\r\nhost: example.com\r\n${rest}`;
  expect(head.endsWith("\r\n\r\n")).toBe(true);
  return head.slice(0, -4).split("\r\n");
}

describe("forwardedFields", () => {
  test("copies end-to-end fields and sets X-Forwarded-*", () => {
    const out = lines(forwardedFields(base, { host: "example.com", accept: "*/*" }));
    expect(out[0]).toBe("GET /a?b=1 HTTP/1.1");
    expect(out.filter((l) => l.startsWith("host:"))).toEqual(["host: example.com"]); // never copied
    expect(out).toContain("accept: */*");
    expect(out).toContain("x-forwarded-for: 10.1.2.3");
    expect(out).toContain("x-forwarded-proto: http");
    expect(out).toContain("x-forwarded-host: example.com");
  });

  test("appends the peer to an incoming X-Forwarded-For and replaces -Proto/-Host", () => {
    const out = lines(
      forwardedFields(base, {
        "x-forwarded-for": "1.2.3.4",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "evil",
      }),
    );
    expect(out.filter((l) => l.startsWith("x-forwarded-for"))).toEqual([
      "x-forwarded-for: 1.2.3.4, 10.1.2.3",
    ]);
    expect(out.filter((l) => l.startsWith("x-forwarded-proto"))).toEqual(["x-forwarded-proto: http"]);
    expect(out.filter((l) => l.startsWith("x-forwarded-host"))).toEqual(["x-forwarded-host: example.com"]);
  });

  test("drops hop-by-hop fields and those named in Connection", () => {
    const out = lines(
      forwardedFields(base, {
        connection: "keep-alive, X-Secret",
        "keep-alive": "timeout=5",
        "proxy-connection": "keep-alive",
        te: "trailers",
        trailer: "x",
        "transfer-encoding": "chunked",
        upgrade: "h2c",
        "x-secret": "1",
        expect: "100-continue",
        "x-kept": "yes",
      }),
    );
    const names = out.slice(1).map((l) => l.slice(0, l.indexOf(":")));
    for (const gone of [
      "connection",
      "keep-alive",
      "proxy-connection",
      "te",
      "trailer",
      "transfer-encoding",
      "upgrade",
      "x-secret",
      "expect",
    ]) {
      expect(names).not.toContain(gone);
    }
    expect(out).toContain("x-kept: yes");
  });

  test("framing is ours: Content-Length or chunked from the decision, never copied", () => {
    const withLength = lines(
      forwardedFields(
        { ...base, method: "POST", framing: "length", contentLength: "12" },
        { "content-length": "99" },
      ),
    );
    expect(withLength.filter((l) => l.startsWith("content-length"))).toEqual(["content-length: 12"]);
    const chunked = lines(forwardedFields({ ...base, method: "POST", framing: "chunked" }, {}));
    expect(chunked).toContain("transfer-encoding: chunked");
    expect(chunked.some((l) => l.startsWith("content-length"))).toBe(false);
  });

  test("no X-Forwarded-Host without a client Host", () => {
    const out = lines(forwardedFields({ ...base, clientHost: "" }, {}));
    expect(out.some((l) => l.startsWith("x-forwarded-host"))).toBe(false);
  });
});

describe("responseFields", () => {
  test("keeps order and repeats, drops hop-by-hop and Connection-named fields", () => {
    const f = responseFields([
      "Set-Cookie",
      "a=1",
      "Connection",
      "keep-alive, X-Internal",
      "Content-Type",
      "text/plain",
      "X-Internal",
      "secret",
      "Keep-Alive",
      "timeout=5",
      "Transfer-Encoding",
      "chunked",
      "Set-Cookie",
      "b=2",
    ]);
    expect(f.pairs).toEqual([
      ["Set-Cookie", "a=1"],
      ["Content-Type", "text/plain"],
      ["Set-Cookie", "b=2"],
    ]);
    expect(f.hasContentType).toBe(true);
    expect(responseFields(["X-A", "1"]).hasContentType).toBe(false);
  });
});

test("connectionListed ignores close/keep-alive and blanks", () => {
  expect(connectionListed("close")).toBeNull();
  expect(connectionListed(" Keep-Alive , X-A,,x-b ")).toEqual(new Set(["x-a", "x-b"]));
});
