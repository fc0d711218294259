import { describe, expect, test } from "bun:test";
import { compilePathPattern, compileRules, normalisePath, pathPatternMatches } from "./path.ts";

describe("normalisePath", () => {
  test("spellings of /api/x all normalise to /api/x", () => {
    for (const p of [
      "/api/x",
      "/api/../api/x",
      "//api//x",
      "/%61pi/x",
      "/api/./x",
      "/%2E/api/%2e%2E/api/x",
      "/api/x/y/..",
      "/x/../../api/x",
      "/./api/./././x",
      "///api///x",
      "/api//..//api/x",
    ]) {
      expect({ p, n: normalisePath(p) }).toEqual({ p, n: p === "/api/x/y/.." ? "/api/x/" : "/api/x" });
    }
  });

  test("dot segments per RFC 3986 5.2.4, never above the root", () => {
    expect(normalisePath("/a/b/c/./../../g")).toBe("/a/g");
    expect(normalisePath("/..")).toBe("/");
    expect(normalisePath("/../..")).toBe("/");
    expect(normalisePath("/a/.")).toBe("/a/");
    expect(normalisePath("/a/..")).toBe("/");
    expect(normalisePath("/a/b/..")).toBe("/a/");
    // Not dot segments:
    expect(normalisePath("/.well-known/x")).toBe("/.well-known/x");
    expect(normalisePath("/a/..b/...")).toBe("/a/..b/...");
  });

  test("only unreserved escapes are decoded; other escapes get upper-case hex", () => {
    expect(normalisePath("/%41%7a%30%2D%2e%5F%7E")).toBe("/Az0-._~");
    expect(normalisePath("/api%2fx")).toBe("/api%2Fx");
    expect(normalisePath("/a%20b%c3%a9")).toBe("/a%20b%C3%A9");
    // "%25" is "%": it stays encoded, so "%2561" is never decoded twice to "a".
    expect(normalisePath("/%2561pi")).toBe("/%2561pi");
    // Broken escapes are left alone.
    expect(normalisePath("/a%zz/%4")).toBe("/a%zz/%4");
    expect(normalisePath("/%")).toBe("/%");
  });

  test("trailing slashes kept, case kept, root forms", () => {
    expect(normalisePath("/api/")).toBe("/api/");
    expect(normalisePath("/api//")).toBe("/api/");
    expect(normalisePath("/API/X")).toBe("/API/X");
    expect(normalisePath("/")).toBe("/");
    expect(normalisePath("//")).toBe("/");
    expect(normalisePath("")).toBe("/");
    expect(normalisePath("api/x")).toBe("/api/x");
  });

  test("an already-normal path is returned as the same string", () => {
    const p = "/api/v1/users/42";
    expect(normalisePath(p)).toBe(p);
  });
});

describe("path patterns", () => {
  test("prefix /api/* matches /api/, /api/x, /api; not /apix", () => {
    const p = compilePathPattern("/api/*");
    expect(pathPatternMatches(p, "/api/x")).toBe(true);
    expect(pathPatternMatches(p, "/api/x/y")).toBe(true);
    expect(pathPatternMatches(p, "/api/")).toBe(true);
    expect(pathPatternMatches(p, "/api")).toBe(true);
    expect(pathPatternMatches(p, "/apix")).toBe(false);
    expect(pathPatternMatches(p, "/ap")).toBe(false);
    expect(pathPatternMatches(p, "/v1/api/x")).toBe(false);
  });

  test("exact patterns match the same normalised path, with or without a trailing slash", () => {
    const p = compilePathPattern("/api/auth/login");
    expect(pathPatternMatches(p, "/api/auth/login")).toBe(true);
    expect(pathPatternMatches(p, "/api/auth/login/")).toBe(true);
    expect(pathPatternMatches(compilePathPattern("/login/"), "/login")).toBe(true);
    expect(pathPatternMatches(p, normalisePath("/api/auth/login;jsessionid=1"))).toBe(true);
    expect(pathPatternMatches(p, normalisePath("/api;x=1/auth/login"))).toBe(true);
    expect(pathPatternMatches(p, "/api/auth/login/x")).toBe(false);
    expect(pathPatternMatches(p, "/api/auth/login2")).toBe(false);
    expect(pathPatternMatches(p, "/api/auth")).toBe(false);
  });

  test("pattern text is normalised too; * alone matches everything", () => {
    expect(pathPatternMatches(compilePathPattern("//api//v1/*"), "/api/v1/x")).toBe(true);
    expect(pathPatternMatches(compilePathPattern("/%61pi"), "/api")).toBe(true);
    const all = compilePathPattern("*");
    expect(pathPatternMatches(all, "/")).toBe(true);
    expect(pathPatternMatches(all, "/anything")).toBe(true);
    expect(pathPatternMatches(compilePathPattern("/*"), "/x")).toBe(true);
  });
});

describe("compileRules", () => {
  const m = compileRules([
    { path: "/api/auth/login", method: "POST" },
    { path: "/api/*" },
    { path: "/static/*", method: "GET" },
    { path: "/api/auth/*", method: "POST" },
  ]);

  test("all matching rules, in rule order", () => {
    expect(m.matchAll(normalisePath("/api/auth/login"), "POST")).toEqual([0, 1, 3]);
    expect(m.matchAll(normalisePath("/api/auth/login"), "GET")).toEqual([1]);
    expect(m.matchAll(normalisePath("/static/a.css"), "GET")).toEqual([2]);
    expect(m.matchAll(normalisePath("/other"), "GET")).toEqual([]);
  });

  test("dodging spellings still hit the rules", () => {
    for (const p of [
      "/api/../api/auth/login",
      "//api//auth//login",
      "/%61pi/auth/login",
      "/api/./auth/login",
    ]) {
      expect({ p, r: m.matchAll(normalisePath(p), "POST") }).toEqual({ p, r: [0, 1, 3] });
    }
    expect(m.matchAll(normalisePath("/apix"), "POST")).toEqual([]);
  });

  test("methods are case-sensitive; absent method is any", () => {
    expect(m.matchAll("/api/auth/login", "post")).toEqual([1]);
    expect(m.matchAll("/api/x", "BREW")).toEqual([1]);
  });

  test("first/next iteration without allocation gives the same indexes", () => {
    const seen: number[] = [];
    for (let i = m.first("/api/auth/login", "POST"); i >= 0; i = m.next("/api/auth/login", "POST", i)) {
      seen.push(i);
    }
    expect(seen).toEqual([0, 1, 3]);
    expect(m.first("/nope", "GET")).toBe(-1);
    expect(m.size).toBe(4);
    expect(compileRules([]).first("/", "GET")).toBe(-1);
  });
});
