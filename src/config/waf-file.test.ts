import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CONFIG_BYTES_MAX } from "../core/limits.ts";
import { cidrContains, parseIp } from "../core/waf/client.ts";
import { ConfigError } from "./backends-file.ts";
import {
  parseCidr,
  parseWafFile,
  RATE_LIMITS_MAX,
  readWafFile,
  WAF_DEFAULTS,
  type WafConfig,
} from "./waf-file.ts";

const F = "waf.json";
const parse = (text: string) => parseWafFile(text, F);
const doc = (o: unknown) => parse(JSON.stringify(o));

/** The ConfigError message for `o` (an object is stringified); fails the test if it parses. */
function err(o: unknown): string {
  const text = typeof o === "string" ? o : JSON.stringify(o);
  try {
    parse(text);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    const msg = (e as Error).message;
    expect(msg.startsWith(`${F}: `)).toBe(true);
    expect(msg).not.toContain("\n");
    return msg;
  }
  throw new Error(`expected a ConfigError for ${text}`);
}

const RULE = { name: "api", path: "/api/*", limit: { requests: 100, period_sec: 60 } };
const rule = (extra: Record<string, unknown>) => ({ rate_limits: [{ ...RULE, ...extra }] });

/** The spec's example file (zzz-readme "WAF Configuration"), verbatim. */
const SPEC_EXAMPLE = `{
  "enabled": true,
  "shadow_mode": false,
  "burst_detection_enabled": true,
  "burst_threshold": 10,
  "rate_limits": [
    {
      "name": "login_bruteforce",
      "path": "/api/auth/login",
      "method": "POST",
      "limit": { "requests": 10, "period_sec": 60 },
      "burst": 3,
      "by": "ip",
      "action": "block"
    },
    {
      "name": "api_general",
      "path": "/api/*",
      "limit": { "requests": 100, "period_sec": 60 },
      "burst": 20,
      "by": "ip",
      "action": "block"
    }
  ],
  "slowloris": {
    "max_conns_per_ip": 50
  },
  "request_limits": {
    "max_uri_length": 2048,
    "max_body_size": 1048576,
    "max_json_depth": 20,
    "endpoints": [
      { "path": "/api/upload", "max_body_size": 10485760 }
    ]
  },
  "trusted_proxies": ["10.0.0.0/8", "172.16.0.0/12"],
  "logging": {
    "log_blocked": true,
    "log_allowed": false,
    "log_near_limit": true,
    "near_limit_threshold": 0.8
  }
}`;

describe("parseWafFile: valid files", () => {
  test("the spec's example", () => {
    const c = parse(SPEC_EXAMPLE);
    const { trustedProxies, ...rest } = c;
    expect(rest).toEqual({
      enabled: true,
      shadowMode: false,
      burstDetectionEnabled: true,
      burstThreshold: 10,
      burstWindowSec: 60,
      rateLimits: [
        {
          name: "login_bruteforce",
          path: "/api/auth/login",
          method: "POST",
          requests: 10,
          periodSec: 60,
          burst: 3,
          by: "ip",
          action: "block",
        },
        {
          name: "api_general",
          path: "/api/*",
          requests: 100,
          periodSec: 60,
          burst: 20,
          by: "ip",
          action: "block",
        },
      ],
      slowloris: { maxConnsPerIp: 50 },
      requestLimits: {
        maxUriLength: 2048,
        maxBodySize: 1048576,
        maxJsonDepth: 20,
        endpoints: [{ path: "/api/upload", maxBodySize: 10485760 }],
      },
      logging: { logBlocked: true, logAllowed: false, logNearLimit: true, nearLimitThreshold: 0.8 },
      tableFull: "fail_open",
      tableSlots: 65536,
    });
    const inside = (cidr: number, ip: string) => cidrContains(trustedProxies[cidr]!, parseIp(ip)!);
    expect(trustedProxies).toHaveLength(2);
    expect([
      inside(0, "10.255.0.1"),
      inside(0, "11.0.0.1"),
      inside(1, "172.31.9.9"),
      inside(1, "172.32.0.1"),
    ]).toEqual([true, false, true, false]);
  });

  test("an empty object is all defaults: on, nothing limited, fail open", () => {
    const c = parse("{}");
    expect(c).toEqual(WAF_DEFAULTS);
    expect(c).toEqual({
      enabled: true,
      shadowMode: false,
      burstDetectionEnabled: false,
      burstThreshold: 10,
      burstWindowSec: 60,
      rateLimits: [],
      trustedProxies: [],
      logging: { logBlocked: true, logAllowed: false, logNearLimit: false, nearLimitThreshold: 0.8 },
      tableFull: "fail_open",
      tableSlots: 65536,
    });
    expect("slowloris" in c).toBe(false);
    expect("requestLimits" in c).toBe(false);
  });

  test("rule defaults: burst 0, by ip, action block, any method", () => {
    const r = doc(rule({})).rateLimits[0]!;
    expect(r).toEqual({
      name: "api",
      path: "/api/*",
      requests: 100,
      periodSec: 60,
      burst: 0,
      by: "ip",
      action: "block",
    });
    expect("method" in r).toBe(false);
    expect(doc(rule({ action: "log" })).rateLimits[0]!.action).toBe("log");
  });

  test("our additions: table_full, burst_window_sec; partial logging and request_limits", () => {
    const c = doc({
      table_full: "fail_closed",
      burst_window_sec: 30,
      burst_threshold: 2.5,
      logging: { log_allowed: true },
      request_limits: { max_body_size: 0 },
    });
    expect(c.tableFull).toBe("fail_closed");
    expect(c.burstWindowSec).toBe(30);
    expect(c.burstThreshold).toBe(2.5);
    expect(c.logging).toEqual({ ...WAF_DEFAULTS.logging, logAllowed: true });
    expect(c.requestLimits).toEqual({ maxBodySize: 0, endpoints: [] });
  });

  test("IPv6 proxies, bare addresses as single hosts, v4 ranges match dual-stack peers", () => {
    const c = doc({ trusted_proxies: ["2001:db8::/32", "192.0.2.7", "fd00::1"] });
    const [v6, host, host6] = c.trustedProxies;
    expect(cidrContains(v6!, parseIp("2001:db8:ffff::1")!)).toBe(true);
    expect(cidrContains(v6!, parseIp("2001:db9::1")!)).toBe(false);
    expect(cidrContains(host!, parseIp("::ffff:192.0.2.7")!)).toBe(true);
    expect(cidrContains(host!, parseIp("192.0.2.8")!)).toBe(false);
    expect(cidrContains(host6!, parseIp("fd00::1")!)).toBe(true);
  });

  test("the result is deep-frozen", () => {
    const c = parse(SPEC_EXAMPLE) as { -readonly [K in keyof WafConfig]: unknown };
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.rateLimits)).toBe(true);
    expect(Object.isFrozen((c.rateLimits as object[])[0])).toBe(true);
    expect(Object.isFrozen(c.logging)).toBe(true);
    expect(Object.isFrozen((c.requestLimits as { endpoints: object[] }).endpoints[0])).toBe(true);
    expect(Object.isFrozen((c.trustedProxies as object[])[0])).toBe(true);
  });

  test("a byte-order mark is accepted", () => {
    expect(parse(`\ufeff{"enabled": false}`).enabled).toBe(false);
  });
});

describe("parseWafFile: errors name the JSON path", () => {
  test("unknown keys, at their own path, with a suggestion", () => {
    expect(err({ rate_limits: [RULE, { ...RULE, name: "b", limitt: 1 }] })).toBe(
      `${F}: rate_limits[1].limitt: unknown key (did you mean "limit"? known: name, path, method, limit, burst, by, action)`,
    );
    expect(err({ enabeld: true })).toStartWith(`${F}: enabeld: unknown key (did you mean "enabled"?`);
    expect(err(rule({ limit: { requests: 1, period: 60 } }))).toStartWith(
      `${F}: rate_limits[0].limit.period: unknown key (did you mean "period_sec"?`,
    );
    expect(err({ logging: { log_blocked: true, verbose: true } })).toStartWith(
      `${F}: logging.verbose: unknown key (known:`,
    );
    expect(
      err({ request_limits: { endpoints: [{ path: "/x", max_body_size: 1, method: "POST" }] } }),
    ).toStartWith(`${F}: request_limits.endpoints[0].method: unknown key`);
    expect(err({ slowloris: { "max conns": 1 } })).toStartWith(`${F}: slowloris["max conns"]: unknown key`);
  });

  test("wrong types are named", () => {
    expect(err({ enabled: "yes" })).toBe(`${F}: enabled: expected true or false, got "yes"`);
    expect(err({ rate_limits: {} })).toStartWith(`${F}: rate_limits: expected an array of rules like`);
    expect(err({ rate_limits: ["api"] })).toStartWith(`${F}: rate_limits[0]: expected an object like`);
    expect(err(rule({ limit: { requests: "10", period_sec: 60 } }))).toBe(
      `${F}: rate_limits[0].limit.requests: expected an integer 1-600000, got "10"`,
    );
    expect(err(rule({ limit: { requests: 1.5, period_sec: 60 } }))).toContain("got 1.5");
    expect(err({ trusted_proxies: "10.0.0.0/8" })).toStartWith(
      `${F}: trusted_proxies: expected an array of CIDRs`,
    );
    expect(err({ trusted_proxies: [10] })).toBe(
      `${F}: trusted_proxies[0]: expected a CIDR string like "10.0.0.0/8", got 10`,
    );
    expect(err({ table_full: "open" })).toBe(
      `${F}: table_full: expected one of fail_open | fail_closed, got "open"`,
    );
    expect(err({ logging: { near_limit_threshold: 80 } })).toBe(
      `${F}: logging.near_limit_threshold: expected a fraction above 0 and at most 1 (like 0.8), got 80`,
    );
    expect(err([])).toStartWith(`${F}: expected an object`);
  });

  test("rules: names unique and non-empty, required keys, bounds", () => {
    expect(err({ rate_limits: [RULE, RULE] })).toBe(
      `${F}: rate_limits[1].name: "api" is already the name of rate_limits[0]`,
    );
    expect(err(rule({ name: "" }))).toStartWith(`${F}: rate_limits[0].name: expected a non-empty name`);
    expect(err(rule({ name: "  " }))).toStartWith(`${F}: rate_limits[0].name: expected a non-empty name`);
    expect(err({ rate_limits: [{ name: "x", path: "/" }] })).toBe(
      `${F}: rate_limits[0]: missing key "limit"`,
    );
    expect(err(rule({ limit: { requests: 10 } }))).toBe(
      `${F}: rate_limits[0].limit: missing key "period_sec"`,
    );
    expect(err(rule({ limit: { requests: 0, period_sec: 60 } }))).toContain(
      "rate_limits[0].limit.requests: expected an integer 1-",
    );
    expect(err(rule({ limit: { requests: 1, period_sec: 0 } }))).toContain(
      "rate_limits[0].limit.period_sec: expected an integer 1-86400",
    );
    expect(err(rule({ burst: -1 }))).toContain("rate_limits[0].burst: expected an integer 0-");
    expect(err(rule({ limit: { requests: 1, period_sec: 86_400 }, burst: 12 }))).toContain(
      "rate_limits[0]: requests + burst refill over 13.0 days",
    );
    const many = Array.from({ length: RATE_LIMITS_MAX + 1 }, (_, i) => ({ ...RULE, name: `r${i}` }));
    expect(err({ rate_limits: many })).toBe(
      `${F}: rate_limits: expected at most ${RATE_LIMITS_MAX} rules, got ${RATE_LIMITS_MAX + 1}`,
    );
  });

  test("paths: start with /, * only at the end, no query", () => {
    expect(err(rule({ path: "api/*" }))).toContain(`rate_limits[0].path: "api/*" does not start with /`);
    expect(err(rule({ path: "/api/*/x" }))).toContain(
      `rate_limits[0].path: "/api/*/x" has "*" before the end`,
    );
    expect(err(rule({ path: "/a**" }))).toContain(`has "*" before the end`);
    expect(err(rule({ path: "/a?b=1" }))).toContain("has a query or fragment");
    expect(err(rule({ path: "/a b" }))).toContain("visible ASCII");
    expect(doc(rule({ path: "/" })).rateLimits[0]!.path).toBe("/");
    expect(doc(rule({ path: "/*" })).rateLimits[0]!.path).toBe("/*");
    expect(err({ request_limits: { endpoints: [{ path: "/u/*/x", max_body_size: 1 }] } })).toContain(
      "request_limits.endpoints[0].path:",
    );
  });

  test("method: an uppercase token; by: ip only; action: block or log", () => {
    expect(doc(rule({ method: "M-SEARCH" })).rateLimits[0]!.method).toBe("M-SEARCH");
    expect(err(rule({ method: "post" }))).toBe(
      `${F}: rate_limits[0].method: expected an uppercase method like "POST", got "post" (methods are case-sensitive: write "POST")`,
    );
    expect(err(rule({ method: "GET POST" }))).toContain(
      `rate_limits[0].method: expected an uppercase method`,
    );
    expect(err(rule({ by: "path" }))).toBe(
      `${F}: rate_limits[0].by: expected "ip" (the only key supported), got "path"`,
    );
    expect(err(rule({ action: "drop" }))).toBe(
      `${F}: rate_limits[0].action: expected one of block | log, got "drop"`,
    );
  });

  test("CIDRs: v4 and v6, prefix in range, no host bits", () => {
    expect(err({ trusted_proxies: ["10.0.0.0/8", "10.0.0.0/33"] })).toBe(
      `${F}: trusted_proxies[1]: "10.0.0.0/33" has a bad prefix length (expected /0-/32)`,
    );
    expect(err({ trusted_proxies: ["::/129"] })).toContain("bad prefix length (expected /0-/128)");
    expect(err({ trusted_proxies: ["10.0.0/8"] })).toContain(`"10.0.0/8" is not an IPv4 or IPv6 address`);
    expect(err({ trusted_proxies: ["10.0.0.1/8"] })).toBe(
      `${F}: trusted_proxies[0]: "10.0.0.1/8" has host bits set after the prefix; did you mean "10.0.0.0/8"?`,
    );
    expect(err({ trusted_proxies: ["2001:db8::1/32"] })).toContain(`did you mean "2001:db8:0:0:0:0:0:0/32"?`);
    expect(err({ trusted_proxies: ["localhost"] })).toContain("is not an IPv4 or IPv6 address");
  });

  test("numeric bounds elsewhere", () => {
    expect(err({ burst_threshold: 1 })).toContain("burst_threshold: expected a number above 1");
    expect(err({ burst_window_sec: 0 })).toContain("burst_window_sec: expected an integer 1-3600");
    expect(err({ slowloris: { max_conns_per_ip: 0 } })).toContain(
      "slowloris.max_conns_per_ip: expected an integer 1-",
    );
    expect(err({ slowloris: {} })).toBe(`${F}: slowloris: missing key "max_conns_per_ip"`);
    expect(err({ request_limits: { max_uri_length: 100_000 } })).toContain(
      "request_limits.max_uri_length: expected an integer 1-8192",
    );
    expect(err({ request_limits: { max_json_depth: 0 } })).toContain(
      "request_limits.max_json_depth: expected an integer 1-",
    );
    expect(err({ request_limits: { endpoints: [{ path: "/u" }] } })).toBe(
      `${F}: request_limits.endpoints[0]: missing key "max_body_size"`,
    );
    expect(
      err({
        request_limits: {
          endpoints: [
            { path: "/u", max_body_size: 1 },
            { path: "/u", max_body_size: 2 },
          ],
        },
      }),
    ).toBe(`${F}: request_limits.endpoints[1].path: "/u" is already request_limits.endpoints[0]`);
  });

  test("JSON syntax errors and duplicate keys have a line and column; size is bounded", () => {
    expect(err(`{\n  "enabled": true,\n}`)).toBe(
      `${F}: line 3, column 1: invalid JSON: expected a key in double quotes, found '}' (a trailing comma is not allowed)`,
    );
    expect(err(`{"enabled": true, "enabled": false}`)).toStartWith(
      `${F}: line 1, column 19: duplicate key "enabled"`,
    );
    const big = `{"rate_limits": [], "x": "${"a".repeat(CONFIG_BYTES_MAX)}"}`;
    expect(err(big)).toStartWith(`${F}: is `);
    expect(err(big)).toContain(`more than the ${CONFIG_BYTES_MAX} allowed`);
  });
});

describe("parseCidr", () => {
  test("returns the core matcher's representation, or why not", () => {
    const c = parseCidr("172.16.0.0/12");
    if ("why" in c) throw new Error(c.why);
    expect(c.prefix).toBe(96 + 12);
    expect(cidrContains(c, parseIp("172.20.1.1")!)).toBe(true);
    expect(parseCidr("nope")).toEqual({
      why: `"nope" is not an IPv4 or IPv6 address (with an optional /prefix)`,
    });
  });
});

describe("readWafFile", () => {
  let dir = "";
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "waf-file-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("reads and parses a file; errors name the path", async () => {
    const good = join(dir, "waf.json");
    writeFileSync(good, SPEC_EXAMPLE);
    expect((await readWafFile(good)).rateLimits).toHaveLength(2);
    const bad = join(dir, "bad.json");
    writeFileSync(bad, JSON.stringify(rule({ by: "user" })));
    await expect(readWafFile(bad)).rejects.toThrow(`${bad}: rate_limits[0].by: expected "ip"`);
    await expect(readWafFile(join(dir, "missing.json"))).rejects.toThrow(
      `${join(dir, "missing.json")}: does not exist`,
    );
    const huge = join(dir, "huge.json");
    writeFileSync(huge, " ".repeat(CONFIG_BYTES_MAX + 1));
    await expect(readWafFile(huge)).rejects.toThrow("more than the");
  });
});
