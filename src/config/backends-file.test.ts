import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PROBE_INTERVAL_MS_MAX, THRESHOLD_MAX } from "../cli/flags.ts";
import { BACKENDS_MAX, CONFIG_BYTES_MAX, RELOAD_LOG_BACKENDS_MAX, WEIGHT_MAX } from "../core/limits.ts";
import {
  type BackendsFile,
  ConfigError,
  describeReload,
  diffBackends,
  findJsonFault,
  parseBackendsFile,
  readBackendsFile,
  readBackendsText,
} from "./backends-file.ts";
import type { BackendSpec } from "./options.ts";

const F = "backends.json";
const parse = (text: string) => parseBackendsFile(text, F);
const doc = (o: unknown) => parse(JSON.stringify(o));
const one = (b: Record<string, unknown>, top: Record<string, unknown> = {}) => doc({ backends: [b], ...top });

/** The ConfigError message for `text`; fails the test if it parses. */
function err(text: string): string {
  try {
    parse(text);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    const msg = (e as Error).message;
    expect(msg).not.toContain("\n");
    expect(msg.startsWith(`${F}: `)).toBe(true);
    return msg;
  }
  throw new Error(`expected a ConfigError for ${text}`);
}
const errOf = (o: unknown) => err(JSON.stringify(o));
const errOne = (b: Record<string, unknown>, top: Record<string, unknown> = {}) =>
  errOf({ backends: [b], ...top });

describe("parseBackendsFile: valid files", () => {
  test("the spec's example, with defaults filled in", () => {
    const f = parse(`{
      "backends": [
        {"host": "127.0.0.1", "port": 9001},
        {"host": "127.0.0.1", "port": 9002, "weight": 2},
        {"host": "api.example.com", "port": 443}
      ]
    }`);
    expect(f).toEqual({
      backends: [
        { host: "127.0.0.1", port: 9001, tls: false, weight: 1 },
        { host: "127.0.0.1", port: 9002, tls: false, weight: 2 },
        { host: "api.example.com", port: 443, tls: true, weight: 1 },
      ],
      health: {},
    });
    expect("strategy" in f).toBe(false);
  });

  test("tls defaults to port 443 and an explicit value wins both ways", () => {
    expect(one({ host: "a.example", port: 443 }).backends[0]!.tls).toBe(true);
    expect(one({ host: "a.example", port: 8443 }).backends[0]!.tls).toBe(false);
    expect(one({ host: "a.example", port: 443, tls: false }).backends[0]!.tls).toBe(false);
    expect(one({ host: "a.example", port: 8443, tls: true }).backends[0]!.tls).toBe(true);
  });

  test("hosts: DNS names, IPv4, IPv6 with or without brackets (stored without, lowercased)", () => {
    const host = (h: string) => one({ host: h, port: 80 }).backends[0]!.host;
    expect(host("Backend-1.Example.com")).toBe("Backend-1.Example.com");
    expect(host("localhost")).toBe("localhost");
    expect(host("10.0.0.1")).toBe("10.0.0.1");
    expect(host("::1")).toBe("::1");
    expect(host("[::1]")).toBe("::1");
    expect(host("[2001:DB8::1]")).toBe("2001:db8::1");
    expect(host("2001:DB8::1")).toBe("2001:db8::1");
    expect(host("a".repeat(63) + ".example")).toHaveLength(71);
  });

  test("bounds are inclusive: weight 1 and WEIGHT_MAX, port 1 and 65535, BACKENDS_MAX backends", () => {
    expect(one({ host: "h", port: 1, weight: 1 }).backends[0]).toEqual({
      host: "h",
      port: 1,
      tls: false,
      weight: 1,
    });
    expect(one({ host: "h", port: 65535, weight: WEIGHT_MAX }).backends[0]!.weight).toBe(WEIGHT_MAX);
    const many = Array.from({ length: BACKENDS_MAX }, (_, i) => ({ host: "10.0.0.1", port: 1000 + i }));
    expect(doc({ backends: many }).backends).toHaveLength(BACKENDS_MAX);
  });

  test("integral floats are integers (80.0 is 80)", () => {
    expect(parse('{"backends":[{"host":"h","port":80.0,"weight":2e0}]}').backends[0]).toEqual({
      host: "h",
      port: 80,
      tls: false,
      weight: 2,
    });
  });

  test("health settings map to HealthOptions; absent keys stay absent", () => {
    const f = one(
      { host: "h", port: 80 },
      {
        unhealthy_threshold: 5,
        healthy_threshold: 1,
        probe_interval_ms: 1000,
        probe_timeout_ms: 1000,
        health_path: "/healthz?full=1",
      },
    );
    expect(f.health).toEqual({
      unhealthyThreshold: 5,
      healthyThreshold: 1,
      probeIntervalMs: 1000,
      probeTimeoutMs: 1000,
      healthPath: "/healthz?full=1",
    });
    expect(one({ host: "h", port: 80 }, { probe_timeout_ms: 9000 }).health).toEqual({ probeTimeoutMs: 9000 });
    const bounds = one(
      { host: "h", port: 80 },
      { probe_interval_ms: PROBE_INTERVAL_MS_MAX, unhealthy_threshold: THRESHOLD_MAX },
    );
    expect(bounds.health).toEqual({
      probeIntervalMs: PROBE_INTERVAL_MS_MAX,
      unhealthyThreshold: THRESHOLD_MAX,
    });
  });

  test("strategy: the spec's names and the CLI's", () => {
    const s = (v: string) => one({ host: "h", port: 80 }, { strategy: v }).strategy;
    expect(s("round_robin")).toBe("round_robin");
    expect(s("weighted_round_robin")).toBe("weighted");
    expect(s("weighted")).toBe("weighted");
    expect(s("random")).toBe("random");
    expect(s("least_conn")).toBe("least_conn");
  });

  test("the result is deep-frozen", () => {
    const f = one({ host: "h", port: 80 }, { probe_interval_ms: 100 });
    expect(Object.isFrozen(f)).toBe(true);
    expect(Object.isFrozen(f.backends)).toBe(true);
    expect(Object.isFrozen(f.backends[0])).toBe(true);
    expect(Object.isFrozen(f.health)).toBe(true);
  });

  test("a UTF-8 byte-order mark is ignored, whitespace of all four kinds is fine", () => {
    expect(parse('\uFEFF{"backends":[{"host":"h","port":80}]}').backends).toHaveLength(1);
    expect(parse('\r\n\t {"backends":\r\n[{"host":"h","port":80}]}\n').backends).toHaveLength(1);
  });

  test("size: exactly CONFIG_BYTES_MAX bytes is accepted", () => {
    const base = '{"backends":[{"host":"h","port":80}]}';
    const text = base + " ".repeat(CONFIG_BYTES_MAX - base.length);
    expect(parse(text).backends).toHaveLength(1);
  });
});

describe("parseBackendsFile: errors name the JSON path", () => {
  test("size is counted in UTF-8 bytes", () => {
    const base = '{"backends":[{"host":"h","port":80}]}';
    expect(err(base + " ".repeat(CONFIG_BYTES_MAX - base.length + 1))).toBe(
      `${F}: is ${CONFIG_BYTES_MAX + 1} bytes, more than the ${CONFIG_BYTES_MAX} allowed`,
    );
    // 3 bytes per "€": fewer characters than the limit, more bytes.
    const euros = "€".repeat(Math.ceil(CONFIG_BYTES_MAX / 3));
    expect(euros.length).toBeLessThan(CONFIG_BYTES_MAX);
    expect(err(`{"backends":[],"x":"${euros}"}`)).toContain("bytes, more than the");
  });

  test("top level", () => {
    expect(err("[]")).toBe(`${F}: expected an object {"backends": [...]} at the top level, got an array`);
    expect(err("null")).toContain("got null");
    expect(err("{}")).toBe(
      `${F}: missing key "backends" (an array of 1-${BACKENDS_MAX} objects like {"host": "10.0.0.1", "port": 80})`,
    );
    expect(errOf({ backends: {} })).toBe(
      `${F}: backends: expected an array of 1-${BACKENDS_MAX} backends, got an object`,
    );
    expect(errOf({ backends: [] })).toBe(`${F}: backends: expected 1-${BACKENDS_MAX} backends, got 0`);
    const many = Array.from({ length: BACKENDS_MAX + 1 }, (_, i) => ({ host: "h", port: 1 + i }));
    expect(errOf({ backends: many })).toBe(
      `${F}: backends: expected 1-${BACKENDS_MAX} backends, got ${BACKENDS_MAX + 1}`,
    );
  });

  test("unknown keys, with a suggestion when one is close", () => {
    expect(errOne({ host: "h", port: 80 }, { probe_intervall_ms: 5 })).toBe(
      `${F}: unknown key "probe_intervall_ms" (did you mean "probe_interval_ms"? known: backends, strategy, ` +
        "unhealthy_threshold, healthy_threshold, probe_interval_ms, probe_timeout_ms, health_path)",
    );
    expect(errOne({ host: "h", port: 80, wieght: 2 })).toBe(
      `${F}: backends[0]: unknown key "wieght" (did you mean "weight"? known: host, port, weight, tls)`,
    );
    expect(errOne({ host: "h", port: 80, Weight: 2 })).toContain(
      'unknown key "Weight" (did you mean "weight"?',
    );
    expect(errOne({ host: "h", port: 80, address: "x" })).toBe(
      `${F}: backends[0]: unknown key "address" (known: host, port, weight, tls)`,
    );
    // JSON.parse makes "__proto__" an own key; it must not slip through as a prototype.
    expect(err('{"backends":[{"host":"h","port":80,"__proto__":{"weight":5}}]}')).toContain(
      'backends[0]: unknown key "__proto__"',
    );
  });

  test("backend entries: shape and required keys", () => {
    expect(errOf({ backends: ["10.0.0.1:80"] })).toBe(
      `${F}: backends[0]: expected an object like {"host": "10.0.0.1", "port": 80}, got "10.0.0.1:80"`,
    );
    expect(errOf({ backends: [{ host: "h", port: 80 }, null] })).toContain("backends[1]: expected an object");
    expect(errOf({ backends: [{ host: "h", port: 80 }, { port: 81 }] })).toBe(
      `${F}: backends[1]: missing key "host"`,
    );
    expect(errOne({ host: "h" })).toBe(`${F}: backends[0]: missing key "port"`);
  });

  test("port: integer 1-65535, no strings", () => {
    const e = (p: unknown) =>
      errOf({
        backends: [
          { host: "h", port: 80 },
          { host: "h", port: 81 },
          { host: "h", port: p },
        ],
      });
    expect(e("80")).toBe(`${F}: backends[2].port: expected an integer 1-65535, got "80"`);
    expect(e(0)).toBe(`${F}: backends[2].port: expected an integer 1-65535, got 0`);
    expect(e(65536)).toContain("got 65536");
    expect(e(80.5)).toContain("got 80.5");
    expect(e(-1)).toContain("got -1");
    expect(e(null)).toContain("got null");
    expect(e(true)).toContain("got true");
    expect(e([80])).toContain("got an array");
    expect(err('{"backends":[{"host":"h","port":1e400}]}')).toContain(
      "backends[0].port: expected an integer 1-65535, got Infinity",
    );
  });

  test("weight: integer 1-WEIGHT_MAX", () => {
    expect(errOne({ host: "h", port: 80, weight: 0 })).toBe(
      `${F}: backends[0].weight: expected an integer 1-${WEIGHT_MAX}, got 0`,
    );
    expect(errOne({ host: "h", port: 80, weight: WEIGHT_MAX + 1 })).toContain(`got ${WEIGHT_MAX + 1}`);
    expect(errOne({ host: "h", port: 80, weight: 1.5 })).toContain("got 1.5");
    expect(errOne({ host: "h", port: 80, weight: "2" })).toContain('got "2"');
  });

  test("tls: a boolean", () => {
    expect(errOne({ host: "h", port: 443, tls: "yes" })).toBe(
      `${F}: backends[0].tls: expected true or false, got "yes"`,
    );
    expect(errOne({ host: "h", port: 443, tls: 1 })).toContain("got 1");
  });

  test("host: the CLI's rules", () => {
    const e = (h: unknown) => errOne({ host: h, port: 80 });
    expect(e(5)).toBe(`${F}: backends[0].host: expected a string (host name, IPv4 or IPv6 address), got 5`);
    expect(e("")).toBe(`${F}: backends[0].host: "" has an empty host`);
    expect(e("bad_name")).toBe(
      `${F}: backends[0].host: "bad_name" has an invalid host (DNS name of letters, digits, '-' and '.', IPv4, or [IPv6])`,
    );
    expect(e("a b")).toContain("has an invalid host");
    expect(e("10.0.0.256")).toBe(`${F}: backends[0].host: "10.0.0.256" has an invalid IPv4 address`);
    expect(e("[::1")).toBe(`${F}: backends[0].host: "[::1" is not a host`);
    expect(e("[zz::1]")).toBe(`${F}: backends[0].host: "[zz::1]" has an invalid IPv6 address`);
    expect(e("fe80::1%eth0")).toContain('"fe80::1%eth0" is not a host');
    expect(e(Array(5).fill("a".repeat(60)).join("."))).toContain("has a host longer than 253 characters");
    expect(e("a".repeat(64))).toContain("has an invalid host");
  });

  test("host: host:port and URLs get a hint where the parts go", () => {
    const e = (h: string) => errOne({ host: h, port: 80 });
    expect(e("10.0.0.1:8080")).toBe(
      `${F}: backends[0].host: "10.0.0.1:8080" is not a bare host; write {"host": "10.0.0.1", "port": 8080}`,
    );
    expect(e("https://api.example.com")).toBe(
      `${F}: backends[0].host: "https://api.example.com" is not a bare host; ` +
        `write {"host": "api.example.com", "port": 443, "tls": true}`,
    );
    expect(e("[::1]:9000")).toContain('write {"host": "::1", "port": 9000}');
  });

  test("duplicates by host:port, host case-insensitive, IPv6 spelling-insensitive", () => {
    const e = (a: string, b: string) =>
      errOf({
        backends: [
          { host: a, port: 80 },
          { host: "other", port: 80 },
          { host: b, port: 80 },
        ],
      });
    expect(e("api.example.com", "API.Example.COM")).toBe(
      `${F}: backends[2]: duplicate of backends[0] (api.example.com:80)`,
    );
    expect(e("::1", "[0:0::1]")).toBe(`${F}: backends[2]: duplicate of backends[0] ([::1]:80)`);
    // Same host, other port (or other tls) is another backend.
    expect(
      doc({
        backends: [
          { host: "h", port: 80 },
          { host: "h", port: 81 },
        ],
      }).backends,
    ).toHaveLength(2);
    expect(
      errOf({
        backends: [
          { host: "h", port: 443 },
          { host: "h", port: 443, tls: false },
        ],
      }),
    ).toContain("backends[1]: duplicate of backends[0] (h:443)");
  });

  test("health settings: positive integers with the CLI's maxima", () => {
    const e = (k: string, v: unknown) => errOne({ host: "h", port: 80 }, { [k]: v });
    expect(e("probe_interval_ms", 0)).toBe(
      `${F}: probe_interval_ms: expected an integer 1-${PROBE_INTERVAL_MS_MAX}, got 0`,
    );
    expect(e("probe_interval_ms", PROBE_INTERVAL_MS_MAX + 1)).toContain(`got ${PROBE_INTERVAL_MS_MAX + 1}`);
    expect(e("probe_timeout_ms", "2000")).toBe(
      `${F}: probe_timeout_ms: expected an integer 1-${PROBE_INTERVAL_MS_MAX}, got "2000"`,
    );
    expect(e("unhealthy_threshold", 0)).toBe(
      `${F}: unhealthy_threshold: expected an integer 1-${THRESHOLD_MAX}, got 0`,
    );
    expect(e("healthy_threshold", THRESHOLD_MAX + 1)).toBe(
      `${F}: healthy_threshold: expected an integer 1-${THRESHOLD_MAX}, got ${THRESHOLD_MAX + 1}`,
    );
    expect(e("healthy_threshold", 1.5)).toContain("got 1.5");
  });

  test("probe_timeout_ms at most probe_interval_ms when the file gives both", () => {
    expect(errOne({ host: "h", port: 80 }, { probe_interval_ms: 1000, probe_timeout_ms: 1001 })).toBe(
      `${F}: probe_timeout_ms: 1001 is longer than probe_interval_ms 1000 (at most the interval)`,
    );
  });

  test("health_path: the --health-path rules", () => {
    const e = (v: unknown) => errOne({ host: "h", port: 80 }, { health_path: v });
    expect(e("healthz")).toBe(`${F}: health_path: "healthz" is not a path starting with / (visible ASCII)`);
    expect(e("/a b")).toContain("is not a path");
    expect(e("/a#b")).toContain("is not a path");
    expect(e("")).toContain('"" is not a path');
    expect(e(1)).toBe(`${F}: health_path: expected a string starting with /, got 1`);
  });

  test("strategy: one of the known names", () => {
    expect(errOne({ host: "h", port: 80 }, { strategy: "rr" })).toBe(
      `${F}: strategy: expected one of round_robin | weighted | random | sticky | least_conn | p2c | ` +
        `weighted_round_robin, got "rr"`,
    );
    expect(errOne({ host: "h", port: 80 }, { strategy: 1 })).toContain("got 1");
  });
});

describe("JSON syntax errors give line and column", () => {
  const cases: [string, string][] = [
    [
      '{\n  "backends": [\n    {"host": "h", "port": 80},\n  ]\n}',
      "line 4, column 3: invalid JSON: expected a value, found ']' (a trailing comma is not allowed)",
    ],
    [
      '{"backends": [], }',
      "line 1, column 18: invalid JSON: expected a key in double quotes, found '}' (a trailing comma is not allowed)",
    ],
    [
      '{\n  "backends": [\n    {"host": "h" "port": 80}\n  ]\n}',
      "line 3, column 18: invalid JSON: expected ',' or '}' after a value, found '\"' (missing comma?)",
    ],
    ["{backends: []}", "line 1, column 2: invalid JSON: expected a key in double quotes, found 'backends'"],
    [
      "{'backends': []}",
      "line 1, column 2: invalid JSON: expected a key in double quotes, found ''' (JSON uses double quotes)",
    ],
    [
      "{\"backends\": ['x']}",
      "line 1, column 15: invalid JSON: expected a value, found ''' (strings use double quotes)",
    ],
    [
      '{\n  // the pool\n  "backends": []\n}',
      "line 2, column 3: invalid JSON: expected a key in double quotes, found '/' (JSON has no comments)",
    ],
    [
      '{"backends": [{"host": "h", "port": 080}]}',
      "line 1, column 37: invalid JSON: a number cannot have leading zeros",
    ],
    [
      '{"backends": [{"host": "h", "port": 8.}]}',
      "line 1, column 39: invalid JSON: expected a digit after '.', found '}'",
    ],
    [
      '{"backends": [{"host": "h", "port": -}]}',
      "line 1, column 38: invalid JSON: expected a digit, found '}'",
    ],
    [
      '{"backends": [{"host": "h", "port": 1e}]}',
      "line 1, column 39: invalid JSON: expected a digit in the exponent, found '}'",
    ],
    ['{"backends": [{"tls": True}]}', "line 1, column 23: invalid JSON: expected a value, found 'True'"],
    [
      '{"backends": [{"host": "h\n"}]}',
      "line 1, column 26: invalid JSON: line break inside a string (missing closing quote?)",
    ],
    ['{"backends": [{"host": "h\\x"}]}', "line 1, column 26: invalid JSON: invalid escape '\\x' in a string"],
    [
      '{"backends": [{"host": "\\u12"}]}',
      "line 1, column 25: invalid JSON: \\u must be followed by 4 hex digits",
    ],
    [
      '{"backends": [{"host": "h\t"}]}',
      "line 1, column 26: invalid JSON: control character U+0009 inside a string (write it as a \\u escape)",
    ],
    ['{"backends": [{"host": "h', "line 1, column 24: invalid JSON: unterminated string"],
    ['{"backends": [', "line 1, column 15: invalid JSON: expected a value, found the end of the file"],
    ["", "line 1, column 1: invalid JSON: expected a value, found the end of the file"],
    [
      '{"backends": []} {}',
      "line 1, column 18: invalid JSON: expected the end of the file after the top-level value, found '{'",
    ],
    ['{"backends" []}', "line 1, column 13: invalid JSON: expected ':' after the key, found '['"],
    ['{"backends": [1 2]}', "line 1, column 17: invalid JSON: expected ',' or ']' after a value, found '2'"],
    // Columns count code points: "€" and "😀" are one column each.
    ['{"x": "€😀", "y" 1}', "line 1, column 17: invalid JSON: expected ':' after the key, found '1'"],
    [
      '{"backends": [], "backends": []}',
      'line 1, column 18: duplicate key "backends" (JSON keeps only the last)',
    ],
    [
      '{"backends": [{"host": "h", "port": 80, "port": 81}]}',
      'line 1, column 41: duplicate key "port" (JSON keeps only the last)',
    ],
    // "\u0070ort" is "port": duplicates are found on decoded keys.
    [
      '{"backends": [{"port": 80, "\\u0070ort": 81}]}',
      'line 1, column 28: duplicate key "port" (JSON keeps only the last)',
    ],
  ];
  for (const [text, want] of cases) {
    test(JSON.stringify(text).slice(0, 60), () => {
      expect(err(text)).toBe(`${F}: ${want}`);
    });
  }

  test("nesting 30 000 deep does not overflow the stack", () => {
    const deep = '{"backends":' + "[".repeat(30_000) + "]".repeat(30_000) + "}";
    expect(findJsonFault(deep)).toBeNull();
    expect(err('{"backends":' + "[".repeat(30_000) + "}")).toContain(
      "invalid JSON: expected a value, found '}'",
    );
  });

  // findJsonFault must agree with JSON.parse on every input, or a valid file would be refused (or an
  // invalid one get no position). Random edits of a realistic file cover the grammar's corners.
  test("agrees with JSON.parse on 20 000 random mutations", () => {
    const seedText = JSON.stringify(
      {
        backends: [
          { host: "10.0.0.1", port: 80, weight: 2, tls: false },
          { host: "api.example.com", port: 443, weight: -1.5e-3 },
        ],
        health_path: '/h\\"\u00e9\n',
        x: [null, true, false, {}, [], 0, "\ud83d\ude00"],
      },
      null,
      1,
    ).replace("[", "[1e+5, 2E-3, -0.5e10, -0, ");
    const alphabet = ' \t\n\r{}[]:,"\\/-+.0123456789eEtrufalsn\u0001abcu\u00e9';
    let state = 12345;
    const rnd = (n: number) => {
      state = (state * 1103515245 + 12345) & 0x7fffffff;
      return state % n;
    };
    let valid = 0;
    for (let k = 0; k < 20_000; k++) {
      let t = seedText;
      for (let m = 1 + rnd(3); m > 0; m--) {
        const at = rnd(t.length + 1);
        const ch = alphabet[rnd(alphabet.length)]!;
        const op = rnd(3);
        t =
          op === 0
            ? t.slice(0, at) + ch + t.slice(at)
            : op === 1
              ? t.slice(0, at) + t.slice(at + 1)
              : t.slice(0, at) + ch + t.slice(at + 1);
      }
      let parses = true;
      try {
        JSON.parse(t);
      } catch {
        parses = false;
      }
      const f = findJsonFault(t);
      const syntaxOk = f === null || f.duplicateKey;
      if (syntaxOk !== parses) throw new Error(`disagree on ${JSON.stringify(t)}: ${f?.problem ?? "ok"}`);
      if (parses) valid++;
    }
    // The mutations must exercise both outcomes for the comparison to mean anything.
    expect(valid).toBeGreaterThan(1_000);
    expect(valid).toBeLessThan(19_000);
  });
});

describe("readBackendsFile", () => {
  let dir = "";
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "zzz-backends-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("reads and validates; errors name the path", async () => {
    const p = join(dir, "ok.json");
    writeFileSync(p, '{"backends":[{"host":"h","port":80}]}');
    expect((await readBackendsFile(p)).backends).toEqual([{ host: "h", port: 80, tls: false, weight: 1 }]);
    writeFileSync(p, '{"backends":[{"host":"h","port":"80"}]}');
    expect(readBackendsFile(p)).rejects.toThrow(
      `${p}: backends[0].port: expected an integer 1-65535, got "80"`,
    );
  });

  test("missing, a directory, unreadable, not UTF-8", async () => {
    await expect(readBackendsFile(join(dir, "nope.json"))).rejects.toThrow(
      `${join(dir, "nope.json")}: does not exist`,
    );
    const sub = join(dir, "sub");
    mkdirSync(sub);
    await expect(readBackendsFile(sub)).rejects.toThrow(`${sub}: is not a regular file`);
    const latin1 = join(dir, "latin1.json");
    writeFileSync(latin1, Buffer.from('{"backends":[{"host":"caf\xe9","port":80}]}', "latin1"));
    await expect(readBackendsFile(latin1)).rejects.toThrow(`${latin1}: is not valid UTF-8 text`);
    if (process.getuid?.() !== 0) {
      const locked = join(dir, "locked.json");
      writeFileSync(locked, "{}");
      chmodSync(locked, 0o000);
      await expect(readBackendsFile(locked)).rejects.toThrow(`${locked}: cannot be read (permission denied)`);
    }
  });

  test("too big is refused from stat (a sparse 1 GiB file is not read)", async () => {
    const big = join(dir, "big.json");
    writeFileSync(big, "");
    const { truncateSync } = await import("node:fs");
    truncateSync(big, 1024 ** 3);
    const t0 = performance.now();
    await expect(readBackendsText(big)).rejects.toThrow(
      `${big}: is ${1024 ** 3} bytes, more than the ${CONFIG_BYTES_MAX} allowed`,
    );
    expect(performance.now() - t0).toBeLessThan(1_000);
  });

  test("a BOM from the file is dropped", async () => {
    const p = join(dir, "bom.json");
    writeFileSync(p, '\uFEFF{"backends":[{"host":"h","port":80}]}');
    expect((await readBackendsFile(p)).backends).toHaveLength(1);
  });
});

describe("diffBackends / describeReload", () => {
  const b = (host: string, port: number, weight = 1, tls = false): BackendSpec => ({
    host,
    port,
    tls,
    weight,
  });
  const file = (backends: BackendSpec[], rest: Partial<BackendsFile> = {}): BackendsFile => ({
    backends,
    health: {},
    ...rest,
  });

  test("added, removed, changed by host:port; IPv6 in brackets; host case ignored", () => {
    const old = [b("10.0.0.5", 80), b("10.0.0.6", 80), b("API.example.com", 443, 1, true), b("::1", 80)];
    const next = [
      b("10.0.0.6", 80, 3),
      b("api.example.com", 443, 1, true),
      b("0:0::1", 80, 1, true),
      b("10.0.0.7", 80),
    ];
    expect(diffBackends(old, next)).toEqual({
      added: ["10.0.0.7:80"],
      removed: ["10.0.0.5:80"],
      changed: ["10.0.0.6:80", "[::1]:80"],
    });
    expect(diffBackends(old, old)).toEqual({ added: [], removed: [], changed: [] });
  });

  test("one line with counts, details and settings", () => {
    const prev = file([b("10.0.0.5", 80), b("10.0.0.6", 80)], { health: { probeIntervalMs: 5000 } });
    const next = file([b("10.0.0.6", 80, 3, true), b("10.0.0.7", 80), b("10.0.0.8", 80)], {
      strategy: "weighted",
      health: { healthPath: "/hz" },
    });
    expect(describeReload("backends.json", prev, next)).toBe(
      "reloaded backends.json: 3 backends (+2 added: 10.0.0.7:80, 10.0.0.8:80; -1 removed: 10.0.0.5:80; " +
        "~1 changed: 10.0.0.6:80 weight 1->3 tls false->true; " +
        "settings: strategy unset->weighted, probe_interval_ms 5000->unset, health_path unset->/hz)",
    );
  });

  test("no changes, order changes, singular", () => {
    const a = file([b("h", 1), b("h", 2)]);
    expect(describeReload("f", a, a)).toBe("reloaded f: 2 backends (no changes)");
    expect(describeReload("f", a, file([b("h", 2), b("h", 1)]))).toBe(
      "reloaded f: 2 backends (order changed)",
    );
    expect(describeReload("f", a, file([b("h", 1)]))).toBe("reloaded f: 1 backend (-1 removed: h:2)");
  });

  test("long lists are cut at RELOAD_LOG_BACKENDS_MAX names", () => {
    const many = Array.from({ length: RELOAD_LOG_BACKENDS_MAX + 5 }, (_, i) => b("10.0.0.1", 1000 + i));
    const line = describeReload("f", file([b("h", 1)]), file([b("h", 1), ...many]));
    expect(line).toContain(`+${RELOAD_LOG_BACKENDS_MAX + 5} added: 10.0.0.1:1000, `);
    expect(line).toContain(`10.0.0.1:${1000 + RELOAD_LOG_BACKENDS_MAX - 1} and 5 more)`);
    expect(line).not.toContain(`10.0.0.1:${1000 + RELOAD_LOG_BACKENDS_MAX},`);
  });
});
