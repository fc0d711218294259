import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import type { BackendSpec, Options } from "../config/options.ts";
import {
  BACKENDS_MAX,
  BODY_TIMEOUT_MS_DEFAULT,
  DRAIN_TIMEOUT_MS_DEFAULT,
  UPSTREAM_TIMEOUT_MS_DEFAULT,
} from "../core/limits.ts";
import { FLAGS } from "./flags.ts";
import { CliError, NOT_YET, notYetUsed, parseArgs, VERSION } from "./parse.ts";

let dir = "";
let file = "";
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "zzz-cli-"));
  file = join(dir, "backends.json");
  writeFileSync(file, '{"backends": []}');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(argv: string[]) {
  const r = parseArgs(argv);
  if (r.kind !== "run") throw new Error(`expected run, got ${r.kind}`);
  return r;
}
const opts = (...argv: string[]): Options => run(argv).options;

/** The CliError message parseArgs throws for argv; fails the test if it does not throw one. */
function err(...argv: string[]): string {
  try {
    parseArgs(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(CliError);
    const msg = (e as CliError).message;
    expect(msg).not.toContain("\n");
    return msg;
  }
  throw new Error(`expected CliError for ${JSON.stringify(argv)}`);
}
const backends = (...specs: string[]): readonly BackendSpec[] =>
  opts(...specs.flatMap((s) => ["-b", s])).backends;

describe("defaults", () => {
  test("no arguments gives every default and no backends", () => {
    const r = run([]);
    expect(r.options).toEqual({
      host: "0.0.0.0",
      port: 8080,
      mode: process.platform === "linux" ? "mp" : "sp",
      workers: 0,
      backends: [],
      strategy: "round_robin",
      configFile: null,
      logLevel: "info",
      insecure: false,
      trace: false,
      tlsTrace: false,
      upstreamTimeoutMs: UPSTREAM_TIMEOUT_MS_DEFAULT,
      hostHeader: "auto",
      health: {
        healthPath: "/",
        probeIntervalMs: 5000,
        probeTimeoutMs: 2000,
        unhealthyThreshold: 3,
        healthyThreshold: 2,
      },
      cookieName: "ZZZ_BACKEND_ID",
      metricsPath: "/metrics",
      drainTimeoutMs: DRAIN_TIMEOUT_MS_DEFAULT,
      bodyTimeoutMs: BODY_TIMEOUT_MS_DEFAULT,
      wafConfig: null,
      wafShadow: false,
      otelEndpoint: null,
    });
    expect(r.explicit.size).toBe(0);
  });
});

describe("forms", () => {
  test("long with space, long with =, short with space", () => {
    expect(opts("--port", "9000").port).toBe(9000);
    expect(opts("--port=9001").port).toBe(9001);
    expect(opts("-p", "9002").port).toBe(9002);
  });
  test("-p8080 is refused with the spelling that works", () => {
    expect(err("-p8080")).toBe(`"-p8080": give -p's value as its own argument: -p 8080`);
  });
  test("bundled short flags are refused with the spelling that works", () => {
    expect(err("-kt")).toBe(`"-kt": give short flags separately: -k -t`);
  });
  test("single-dash long flag suggests the double dash", () => {
    expect(err("-port", "80")).toBe(`"-port" is not a known flag; did you mean --port?`);
  });
  test("unknown flags are named, with the closest known flag within 2 edits", () => {
    expect(err("--prot", "80")).toBe(`"--prot" is not a known flag; did you mean --port?`);
    expect(err("--log-level=debug")).toBe(
      `"--log-level=debug" is not a known flag; did you mean --loglevel?`,
    );
    expect(err("--hlep")).toBe(`"--hlep" is not a known flag; did you mean --help?`);
    expect(err("--frobnicate")).toBe(`"--frobnicate" is not a known flag; see --help`);
    expect(err("-x")).toBe(`"-x" is not a known flag; see --help`);
    expect(err("--no-trace")).toContain(`"--no-trace" is not a known flag`);
  });
  test("a missing value is an error, also when the next argument is a flag", () => {
    expect(err("--port")).toBe("--port: missing value (N)");
    expect(err("-b")).toBe("-b: missing value (SPEC)");
    expect(err("-b", "-p", "8080")).toBe(
      `-b: missing value before "-p" (SPEC; write --backend=-p if that is it)`,
    );
    expect(err("-p", "-1")).toContain(`-p: missing value before "-1"`);
  });
  test("a value starting with - is taken with =", () => {
    expect(opts("--cookie-name=-x").cookieName).toBe("-x");
  });
  test("positional arguments are refused; a backend-looking one gets a hint", () => {
    expect(err("foo")).toBe(`"foo": load_balancer takes no positional arguments, only flags`);
    expect(err("127.0.0.1:9001")).toBe(
      `"127.0.0.1:9001": load_balancer takes no positional arguments, only flags; to add a backend write -b 127.0.0.1:9001`,
    );
    expect(err("--")).toContain(`"--": load_balancer takes no positional arguments`);
    expect(err("-")).toContain(`"-": load_balancer takes no positional arguments`);
    expect(err("-p", "80", "extra")).toContain(`"extra"`);
  });
  test("a repeated flag other than -b is an error naming both values", () => {
    expect(err("-p", "80", "--port", "81")).toBe(
      `--port: given twice ("80", then "81"); only --backend may repeat`,
    );
    expect(err("-k", "--insecure")).toBe("--insecure: given twice; only --backend may repeat");
  });
  test("booleans take no value", () => {
    expect(err("--insecure=true")).toBe(`--insecure: takes no value (got "true")`);
    expect(err("--help=1")).toBe(`--help: takes no value (got "1")`);
  });
});

describe("help and version", () => {
  test("--help gives help text, anywhere, even next to bad flags", () => {
    for (const argv of [["--help"], ["-p", "1", "--help"], ["--bogus", "--help"], ["--version", "--help"]]) {
      const r = parseArgs(argv);
      expect(r.kind).toBe("help");
    }
  });
  test("-h is the listen host, not help", () => {
    expect(opts("-h", "127.0.0.1").host).toBe("127.0.0.1");
    expect(err("-h")).toBe("-h: missing value (HOST; -h is --host, help is --help)");
  });
  test("--version prints the package version", () => {
    expect(parseArgs(["--version"])).toEqual({ kind: "version", text: `load_balancer ${pkg.version}` });
    expect(VERSION).toBe(pkg.version);
  });
  test("help lists every flag, the groups, the examples, and marks not-yet flags", () => {
    const r = parseArgs(["--help"]);
    if (r.kind !== "help") throw new Error("no help");
    const t = r.text;
    expect(t).toContain("Usage: load_balancer");
    for (const name of Object.keys(FLAGS)) expect(t).toContain(`--${name}`);
    for (const g of ["Server:", "Backends:", "Health:", "Observability:", "WAF:", "Debug:"])
      expect(t).toContain(g);
    expect(t).toContain("load_balancer -b 127.0.0.1:9001 -b 127.0.0.1:9002 -p 8080");
    expect(t).toContain("load_balancer -b api.example.com:443 --host-header backend");
    expect(t).toContain("load_balancer --mode sp -b https://10.0.0.5:8443 -k -l debug");
    expect(t).toContain("-h, --host HOST");
    expect(t).toMatch(/--otel-endpoint H:P[^\n]*\n[^\n]*\(not yet\)/);
    expect(t).not.toMatch(/--waf-config FILE[^\n]*\(not yet\)/);
    expect(t).toMatch(/--port N[^\n]*\(default: 8080\)/);
    expect(t).not.toMatch(/--port N[^\n]*not yet/);
    expect(t).toContain("mp | sp");
    expect(t).not.toContain("mp (not yet)");
    for (const line of t.split("\n")) expect(line.length).toBeLessThanOrEqual(80);
  });
});

describe("--port", () => {
  test("1-65535", () => {
    expect(opts("-p", "1").port).toBe(1);
    expect(opts("-p", "65535").port).toBe(65535);
    expect(opts("-p", "08080").port).toBe(8080);
  });
  test("rejects out of range and anything but plain digits", () => {
    expect(err("--port", "70000")).toBe(`--port: "70000" is not a port (1-65535)`);
    expect(err("-p", "0")).toBe(`--port: "0" is not a port (1-65535)`);
    for (const bad of ["+5", "0x10", "1e3", " 80", "80 ", "", "80.0", "８０", "99999999999999999999"]) {
      expect(err("-p", bad)).toStartWith(`--port: ${JSON.stringify(bad)} is not a port`);
    }
  });
});

describe("--host", () => {
  test("IPv4, names, and IPv6 with or without brackets", () => {
    expect(opts("--host", "localhost").host).toBe("localhost");
    expect(opts("-h", "::").host).toBe("::");
    expect(opts("-h", "[::1]").host).toBe("::1");
    expect(opts("-h", "my-host.example").host).toBe("my-host.example");
  });
  test("rejects what is not an address", () => {
    expect(err("-h", "bad_host")).toBe(
      `--host: "bad_host" is not a listen address (IPv4, IPv6 or host name)`,
    );
    expect(err("-h", "")).toStartWith(`--host: "" is not`);
    expect(err("-h", "1.2.3.4:80")).toStartWith(`--host: "1.2.3.4:80" is not`);
  });
});

describe("--backend", () => {
  test("host:port, repeated, in order, weight 1", () => {
    expect(backends("127.0.0.1:9001", "localhost:9002")).toEqual([
      { host: "127.0.0.1", port: 9001, tls: false, weight: 1 },
      { host: "localhost", port: 9002, tls: false, weight: 1 },
    ]);
    expect(opts("--backend=a.example:1").backends).toEqual([
      { host: "a.example", port: 1, tls: false, weight: 1 },
    ]);
  });
  test("[v6]:port is stored without brackets", () => {
    expect(backends("[::1]:9001")).toEqual([{ host: "::1", port: 9001, tls: false, weight: 1 }]);
    expect(backends("[2001:DB8::5]:80")[0]!.host).toBe("2001:db8::5");
  });
  test("https://x is port 443 with TLS; http://x is port 80", () => {
    expect(backends("https://x")).toEqual([{ host: "x", port: 443, tls: true, weight: 1 }]);
    expect(backends("http://x")).toEqual([{ host: "x", port: 80, tls: false, weight: 1 }]);
    expect(backends("https://x:8443/")).toEqual([{ host: "x", port: 8443, tls: true, weight: 1 }]);
    expect(backends("HTTPS://[::1]")).toEqual([{ host: "::1", port: 443, tls: true, weight: 1 }]);
  });
  test("port 443 without a scheme means TLS; an explicit http:// does not", () => {
    expect(backends("api.example.com:443")[0]!.tls).toBe(true);
    expect(backends("http://api.example.com:443")[0]!.tls).toBe(false);
  });
  test("a bare host has no port", () => {
    expect(err("-b", "nohost")).toBe(
      `--backend: "nohost" has no port (HOST:PORT, [IPv6]:PORT, http://HOST[:PORT] or https://HOST[:PORT])`,
    );
    expect(err("-b", "[::1]")).toStartWith(`--backend: "[::1]" has no port`);
  });
  test("rejects paths, user info, queries, other schemes", () => {
    expect(err("-b", "http://a:1/x")).toStartWith(`--backend: "http://a:1/x" has a path`);
    expect(err("-b", "a:1/x")).toStartWith(`--backend: "a:1/x" has a path`);
    expect(err("-b", "http://u:p@a:1")).toStartWith(`--backend: "http://u:p@a:1" has user info`);
    expect(err("-b", "http://a:1?q")).toStartWith(`--backend: "http://a:1?q" has a query`);
    expect(err("-b", "ftp://a:21")).toStartWith(`--backend: "ftp://a:21" has an unsupported scheme "ftp"`);
  });
  test("rejects bad ports", () => {
    for (const p of ["0", "65536", "", "+1", "0x50", "8o"]) {
      expect(err("-b", `a:${p}`)).toStartWith(
        `--backend: "a:${p}" has port ${JSON.stringify(p)}, not 1-65535`,
      );
    }
  });
  test("rejects bad hosts", () => {
    expect(err("-b", ":80")).toStartWith(`--backend: ":80" has an empty host`);
    expect(err("-b", "http://:80")).toStartWith(`--backend: "http://:80" has an empty host`);
    expect(err("-b", "::1:80")).toStartWith(`--backend: "::1:80" has an IPv6 address without brackets`);
    expect(err("-b", "[::1:80")).toStartWith(`--backend: "[::1:80" has an unclosed '['`);
    expect(err("-b", "[::g]:80")).toStartWith(`--backend: "[::g]:80" has an invalid IPv6 address`);
    expect(err("-b", "[fe80::1%eth0]:80")).toStartWith(`--backend: "[fe80::1%eth0]:80" has an invalid IPv6`);
    expect(err("-b", "[1.2.3.4]:80")).toContain("invalid IPv6");
    for (const h of [
      "a_b",
      "-a.com",
      "a-.com",
      "a..b",
      "a.",
      ".a",
      "a b",
      "ä.com",
      `${"x".repeat(64)}.com`,
    ]) {
      expect(err(`--backend=${h}:80`)).toStartWith(
        `--backend: ${JSON.stringify(`${h}:80`)} has an invalid host`,
      );
    }
    for (const h of ["999.1.1.1", "010.0.0.1", "1.2.3", "123"]) {
      expect(err("-b", `${h}:80`)).toStartWith(`--backend: "${h}:80" has an invalid IPv4 address`);
    }
  });
  test("host length: 253 is the most", () => {
    const label = "a".repeat(63);
    const h253 = [label, label, label, "b".repeat(61)].join(".");
    expect(h253.length).toBe(253);
    expect(backends(`${h253}:80`)[0]!.host).toBe(h253);
    expect(err("-b", `${h253}b:80`)).toContain("has a host longer than 253 characters");
  });
  test("duplicates are an error, however spelled", () => {
    const dup = (a: string, b: string) => err("-b", a, "-b", b);
    expect(dup("a:1", "a:1")).toBe(`--backend: "a:1" is a duplicate of an earlier backend`);
    expect(dup("A.example:1", "a.EXAMPLE:1")).toContain("duplicate");
    expect(dup("[::1]:1", "[0:0::1]:1")).toContain("duplicate");
    expect(dup("http://a", "a:80")).toContain("duplicate");
    expect(dup("https://a:8443", "http://a:8443")).toContain("duplicate");
    expect(backends("a:1", "a:2", "b:1")).toHaveLength(3);
  });
  test(`at most ${BACKENDS_MAX}`, () => {
    const specs = Array.from({ length: BACKENDS_MAX + 1 }, (_, i) => `127.0.0.1:${9000 + i}`);
    expect(backends(...specs.slice(0, BACKENDS_MAX))).toHaveLength(BACKENDS_MAX);
    expect(err(...specs.flatMap((s) => ["-b", s]))).toBe(
      `--backend: "127.0.0.1:${9000 + BACKENDS_MAX}" is one too many (at most ${BACKENDS_MAX} backends)`,
    );
  });
});

describe("--workers, --strategy, --mode, --loglevel, --host-header", () => {
  test("--workers 0-64", () => {
    expect(opts("-w", "0").workers).toBe(0);
    expect(opts("--workers", "64").workers).toBe(64);
    expect(err("-w", "65")).toBe(`--workers: "65" is not a worker count (0 = one per CPU core) (0-64)`);
    expect(err("-w", "-1")).toContain("missing value");
  });
  test("--strategy words, weighted_round_robin is weighted", () => {
    for (const s of ["round_robin", "weighted", "random", "sticky", "least_conn", "p2c"]) {
      expect(opts("-s", s).strategy).toBe(s as Options["strategy"]);
    }
    expect(opts("--strategy", "weighted_round_robin").strategy).toBe("weighted");
    expect(err("-s", "fastest")).toBe(
      `--strategy: "fastest" is not accepted ` +
        `(round_robin | weighted | weighted_round_robin | random | sticky | least_conn | p2c)`,
    );
    expect(err("-s", "toString")).toContain("is not accepted");
  });
  test("--mode mp|sp, default sp, explicitness recorded", () => {
    expect(opts("-m", "mp").mode).toBe("mp");
    expect(run(["--mode", "sp"]).explicit.has("--mode")).toBe(true);
    expect(run([]).explicit.has("--mode")).toBe(false);
    expect(err("--mode", "auto")).toBe(`--mode: "auto" is not accepted (mp | sp)`);
  });
  test("--loglevel err|warn|info|debug", () => {
    for (const l of ["err", "warn", "info", "debug"])
      expect(opts("-l", l).logLevel).toBe(l as Options["logLevel"]);
    expect(err("-l", "trace")).toBe(`--loglevel: "trace" is not accepted (err | warn | info | debug)`);
  });
  test("--host-header auto|preserve|backend", () => {
    expect(opts("--host-header", "preserve").hostHeader).toBe("preserve");
    expect(opts("--host-header", "backend").hostHeader).toBe("backend");
    expect(opts("--host-header", "auto").hostHeader).toBe("auto");
    expect(err("--host-header", "client")).toBe(
      `--host-header: "client" is not accepted (auto | preserve | backend)`,
    );
  });
});

describe("booleans", () => {
  test("-k -t --tls-trace --waf-shadow", () => {
    const o = opts("-k", "-t", "--tls-trace", "--waf-shadow");
    expect([o.insecure, o.trace, o.tlsTrace, o.wafShadow]).toEqual([true, true, true, true]);
    expect(opts("--insecure", "--trace").trace).toBe(true);
  });
});

describe("timeouts", () => {
  test("--upstream-timeout-ms 1-86400000", () => {
    expect(opts("--upstream-timeout-ms", "1").upstreamTimeoutMs).toBe(1);
    expect(opts("--upstream-timeout-ms", "86400000").upstreamTimeoutMs).toBe(86400000);
    expect(err("--upstream-timeout-ms", "0")).toBe(
      `--upstream-timeout-ms: "0" is not a duration in ms (1-86400000)`,
    );
    expect(err("--upstream-timeout-ms", "86400001")).toContain(`"86400001"`);
    expect(err("--upstream-timeout-ms", "5s")).toContain(`"5s" is not a duration in ms`);
  });
  test("--drain-timeout-ms 0-86400000", () => {
    expect(opts("--drain-timeout-ms", "0").drainTimeoutMs).toBe(0);
    expect(err("--drain-timeout-ms", "1.5")).toBe(
      `--drain-timeout-ms: "1.5" is not a duration in ms (0-86400000)`,
    );
  });
});

describe("health flags", () => {
  test("values land in options.health", () => {
    const h = opts(
      "--health-path",
      "/healthz?full=1",
      "--probe-interval-ms",
      "1000",
      "--probe-timeout-ms",
      "500",
      "--unhealthy-threshold",
      "5",
      "--healthy-threshold",
      "1",
    ).health;
    expect(h).toEqual({
      healthPath: "/healthz?full=1",
      probeIntervalMs: 1000,
      probeTimeoutMs: 500,
      unhealthyThreshold: 5,
      healthyThreshold: 1,
    });
  });
  test("bad values", () => {
    expect(err("--health-path", "healthz")).toBe(
      `--health-path: "healthz" is not a path starting with / (visible ASCII)`,
    );
    expect(err("--health-path", "/a b")).toContain(`"/a b" is not a path`);
    expect(err("--health-path", "/a#b")).toContain(`"/a#b" is not a path`);
    expect(err("--probe-interval-ms", "0")).toBe(
      `--probe-interval-ms: "0" is not a duration in ms (1-3600000)`,
    );
    expect(err("--unhealthy-threshold", "0")).toBe(`--unhealthy-threshold: "0" is not a count (1-100)`);
    expect(err("--healthy-threshold", "101")).toBe(`--healthy-threshold: "101" is not a count (1-100)`);
  });
  test("the probe timeout may not exceed the interval, defaults included", () => {
    expect(err("--probe-interval-ms", "1000")).toBe(
      "--probe-timeout-ms: 2000 is longer than --probe-interval-ms 1000 (at most the interval)",
    );
    expect(opts("--probe-interval-ms", "1000", "--probe-timeout-ms", "1000").health.probeTimeoutMs).toBe(
      1000,
    );
  });
});

describe("--cookie-name and --metrics-path", () => {
  test("cookie name is a token", () => {
    expect(opts("--cookie-name", "lb_id-2").cookieName).toBe("lb_id-2");
    expect(err("--cookie-name", "a b")).toBe(
      `--cookie-name: "a b" is not a cookie name (1-256 letters, digits or !#$%&'*+-.^_\`|~)`,
    );
    for (const bad of ["", "a;b", "a=b", 'a"b', "a,b", "x".repeat(257)]) {
      expect(err("--cookie-name", bad)).toContain("is not a cookie name");
    }
  });
  test("metrics path: '' turns it off, else starts with /", () => {
    expect(opts("--metrics-path", "").metricsPath).toBe("");
    expect(opts("--metrics-path=").metricsPath).toBe("");
    expect(opts("--metrics-path", "/_lb/metrics").metricsPath).toBe("/_lb/metrics");
    expect(err("--metrics-path", "metrics")).toBe(
      `--metrics-path: "metrics" is not a path starting with / (visible ASCII, no ? or #)`,
    );
    expect(err("--metrics-path", "/m?x=1")).toContain("is not a path");
  });
});

describe("files", () => {
  test("--config must be an existing readable regular file; stored absolute", () => {
    expect(opts("-c", file).configFile).toBe(resolve(file));
    expect(err("-c", join(dir, "missing.json"))).toBe(
      `--config: ${JSON.stringify(join(dir, "missing.json"))} does not exist (a readable regular file)`,
    );
    expect(err("--config", dir)).toBe(
      `--config: ${JSON.stringify(dir)} is not a regular file (a readable regular file)`,
    );
    expect(err("--config", "")).toStartWith(`--config: "" is not a file path`);
  });
  test("a path through a file is 'does not exist'", () => {
    expect(err("-c", join(file, "x"))).toContain("does not exist");
  });
  test("--waf-config must exist too", () => {
    expect(opts("--waf-config", file).wafConfig).toBe(resolve(file));
    mkdirSync(join(dir, "sub"), { recursive: true });
    expect(err("--waf-config", join(dir, "nope"))).toContain("--waf-config:");
    expect(err("--waf-config", join(dir, "sub"))).toContain("is not a regular file");
  });
});

describe("--otel-endpoint", () => {
  test("host:port or http(s) URL, stored as a base URL", () => {
    expect(opts("--otel-endpoint", "localhost:4318").otelEndpoint).toBe("http://localhost:4318");
    expect(opts("--otel-endpoint", "https://otel.example.com").otelEndpoint).toBe(
      "https://otel.example.com:443",
    );
    expect(opts("--otel-endpoint", "http://[::1]:4318/").otelEndpoint).toBe("http://[::1]:4318");
  });
  test("bad endpoints", () => {
    expect(err("--otel-endpoint", "localhost")).toBe(
      `--otel-endpoint: "localhost" has no port (HOST:PORT or http(s)://HOST[:PORT])`,
    );
    expect(err("--otel-endpoint", "http://c:4318/v1/traces")).toContain("has a path");
  });
});

describe("frozen output", () => {
  test("options, backends, each backend and health are frozen; writes throw", () => {
    const o = opts("-b", "a:1", "-b", "[::1]:2");
    expect(Object.isFrozen(o)).toBe(true);
    expect(Object.isFrozen(o.backends)).toBe(true);
    expect(Object.isFrozen(o.backends[0])).toBe(true);
    expect(Object.isFrozen(o.health)).toBe(true);
    expect(() => {
      (o as { port: number }).port = 1;
    }).toThrow(TypeError);
    expect(() => {
      (o.backends as BackendSpec[]).push({ host: "x", port: 1, tls: false, weight: 1 });
    }).toThrow(TypeError);
    expect(() => {
      (o.backends[0] as { port: number }).port = 2;
    }).toThrow(TypeError);
    expect(() => {
      (o.health as { probeIntervalMs: number }).probeIntervalMs = 1;
    }).toThrow(TypeError);
  });
  test("no parser bookkeeping leaks into options", () => {
    expect(Object.keys(opts())).not.toContain("backendKeys");
  });
});

describe("not yet implemented", () => {
  const used = (...argv: string[]) => notYetUsed(run(argv));

  test("nothing for a plain run", () => {
    expect(
      used("-b", "a:1", "-p", "80", "-k", "-t", "--tls-trace", "-l", "debug", "--host-header", "backend"),
    ).toEqual([]);
    expect(used("--upstream-timeout-ms", "5", "--drain-timeout-ms", "0", "-h", "::")).toEqual([]);
  });
  test("the message names the flag and the reason", () => {
    expect(used("--otel-endpoint", "localhost:4318")).toEqual([
      `--otel-endpoint is not implemented yet (${NOT_YET["--otel-endpoint"]})`,
    ]);
    expect(used("--waf-config", file, "--waf-shadow")).toEqual([]);
  });
  test("both modes, any worker count and every strategy are fine", () => {
    expect(used("--mode", "sp", "-w", "1", "-s", "round_robin")).toEqual([]);
    expect(used("--mode", "mp", "-w", "4")).toEqual([]);
    expect(used("-w", "0")).toEqual([]);
    for (const s of ["weighted", "weighted_round_robin", "random", "sticky", "least_conn", "p2c"]) {
      expect(used("-s", s)).toEqual([]);
    }
  });
  test("every NOT_YET entry can be triggered, and only by itself", () => {
    const sample: Record<string, string> = {
      "--waf-config": file,
      "--config": file,
      "--otel-endpoint": "localhost:4318",
      "--workers": "2",
      "--health-path": "/h",
      "--probe-interval-ms": "9000",
      "--probe-timeout-ms": "100",
      "--unhealthy-threshold": "4",
      "--healthy-threshold": "4",
      "--cookie-name": "c",
      "--metrics-path": "",
    };
    for (const key of Object.keys(NOT_YET)) {
      const [flag, word] = key.split(" ") as [string, string | undefined];
      const name = flag.slice(2) as keyof typeof FLAGS;
      expect(FLAGS[name]).toBeDefined();
      const argv =
        FLAGS[name].type === "boolean"
          ? [flag]
          : [flag, word ?? sample[flag] ?? "missing sample for this flag"];
      expect(used(...argv)).toEqual([`${key} is not implemented yet (${NOT_YET[key]})`]);
    }
  });
});
