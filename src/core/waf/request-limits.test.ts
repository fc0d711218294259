import { describe, expect, test } from "bun:test";
import { normalisePath } from "./path.ts";
import { bodyOverLimit, compileRequestLimits, type RequestFacts } from "./request-limits.ts";

const spec = compileRequestLimits({
  maxUriLength: 2048,
  maxBodySize: 1_048_576,
  maxJsonDepth: 20,
  endpoints: [{ path: "/api/upload", maxBodySize: 10_485_760 }],
});

function facts(over: Partial<RequestFacts>): RequestFacts {
  return { uriBytes: 10, normalisedPath: "/", contentLength: 0, contentType: null, ...over };
}

describe("RequestLimits.check", () => {
  test("URI longer than max_uri_length -> 414; exactly max passes", () => {
    expect(spec.check(facts({ uriBytes: 2049 }))).toEqual({ kind: "uri_too_long", status: 414 });
    expect(spec.check(facts({ uriBytes: 2048 })).kind).toBe("ok");
  });

  test("URI is checked before the body", () => {
    expect(spec.check(facts({ uriBytes: 5000, contentLength: 1e9 })).kind).toBe("uri_too_long");
  });

  test("Content-Length over max_body_size -> 413; exactly max passes", () => {
    expect(spec.check(facts({ normalisedPath: "/x", contentLength: 1_048_577 }))).toEqual({
      kind: "body_too_large",
      status: 413,
      bodyBytesMax: 1_048_576,
    });
    expect(spec.check(facts({ normalisedPath: "/x", contentLength: 1_048_576 }))).toEqual({
      kind: "ok",
      bodyBytesMax: 1_048_576,
    });
  });

  test("an endpoint override beats the global limit, both ways", () => {
    const upload = facts({ normalisedPath: "/api/upload", contentLength: 5_000_000 });
    expect(spec.check(upload)).toEqual({ kind: "ok", bodyBytesMax: 10_485_760 });
    expect(spec.check({ ...upload, contentLength: 10_485_761 }).kind).toBe("body_too_large");
    const small = compileRequestLimits({
      maxBodySize: 1000,
      endpoints: [{ path: "/tiny/*", maxBodySize: 10 }],
    });
    expect(small.check(facts({ normalisedPath: "/tiny/a", contentLength: 11 })).kind).toBe("body_too_large");
    expect(small.check(facts({ normalisedPath: "/big", contentLength: 11 })).kind).toBe("ok");
  });

  test("overrides apply to the normalised path, so spellings cannot dodge them", () => {
    const small = compileRequestLimits({
      maxBodySize: 1000,
      endpoints: [{ path: "/tiny/*", maxBodySize: 10 }],
    });
    for (const p of ["/tiny/../tiny/a", "//tiny//a", "/%74iny/a"]) {
      expect(small.check(facts({ normalisedPath: normalisePath(p), contentLength: 11 })).kind).toBe(
        "body_too_large",
      );
    }
  });

  test("most specific endpoint wins regardless of config order", () => {
    const endpoints = [
      { path: "/api/*", maxBodySize: 100 },
      { path: "/api/upload/*", maxBodySize: 1000 },
      { path: "/api/upload/avatar", maxBodySize: 10 },
      { path: "/api/upload/avatar*", maxBodySize: 5000 },
    ];
    for (const order of [endpoints, [...endpoints].reverse()]) {
      const l = compileRequestLimits({ maxBodySize: 1, endpoints: order });
      expect(l.bodyBytesMaxFor("/api/x")).toBe(100);
      expect(l.bodyBytesMaxFor("/api/upload/file")).toBe(1000);
      expect(l.bodyBytesMaxFor("/api/upload")).toBe(1000);
      expect(l.bodyBytesMaxFor("/api/upload/avatar")).toBe(10);
      expect(l.bodyBytesMaxFor("/api/upload/avatar2")).toBe(5000);
      expect(l.bodyBytesMaxFor("/other")).toBe(1);
    }
  });

  test("unknown length (chunked) passes the limit on for streaming enforcement", () => {
    const v = spec.check(facts({ normalisedPath: "/x", contentLength: null }));
    expect(v).toEqual({ kind: "ok", bodyBytesMax: 1_048_576 });
    if (v.kind !== "ok") throw new Error("unreachable");
    expect(bodyOverLimit(1_048_576, v.bodyBytesMax)).toBe(false);
    expect(bodyOverLimit(1_048_577, v.bodyBytesMax)).toBe(true);
  });

  test("JSON bodies need a depth scan; empty or non-JSON bodies do not", () => {
    const json = facts({ contentLength: 50, contentType: "application/vnd.x+json; charset=utf-8" });
    expect(spec.check(json)).toEqual({ kind: "needs_json_scan", bodyBytesMax: 1_048_576, jsonDepthMax: 20 });
    expect(spec.check({ ...json, contentLength: null }).kind).toBe("needs_json_scan");
    expect(spec.check({ ...json, contentLength: 0 }).kind).toBe("ok");
    expect(spec.check({ ...json, contentType: "text/plain" }).kind).toBe("ok");
    expect(spec.check({ ...json, contentLength: 2_000_000 }).kind).toBe("body_too_large");
    const noDepth = compileRequestLimits({ endpoints: [] });
    expect(noDepth.check(json).kind).toBe("ok");
  });

  test("no limits configured: everything passes with an unbounded body", () => {
    const none = compileRequestLimits({ endpoints: [] });
    expect(none.check(facts({ uriBytes: 1e6, contentLength: 1e12 }))).toEqual({
      kind: "ok",
      bodyBytesMax: Number.POSITIVE_INFINITY,
    });
    expect(bodyOverLimit(1e15, Number.POSITIVE_INFINITY)).toBe(false);
  });

  test("verdicts are prebuilt: the same request gets the same object", () => {
    const f = facts({ normalisedPath: "/x", contentLength: 5 });
    expect(spec.check(f)).toBe(spec.check(f));
  });
});
