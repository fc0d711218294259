// argv -> frozen Options. The tokenizer is our own rather than citty's (see flags.ts for why): it is
// strict about unknown flags, missing values, positionals and repeats, and never reads a flag as a
// value.
import type { BackendSpec, HostHeaderPolicy, Mode, Options, Strategy } from "../config/options.ts";
import {
  BACKENDS_MAX,
  BODY_TIMEOUT_MS_DEFAULT,
  DRAIN_TIMEOUT_MS_DEFAULT,
  UPSTREAM_TIMEOUT_MS_DEFAULT,
} from "../core/limits.ts";
import type { Level } from "../telemetry/log.ts";
import { CliError, quote } from "./error.ts";
import {
  COOKIE_NAME_BYTES_MAX,
  COOKIE_NAME_DEFAULT,
  DURATION_MS_MAX,
  FLAGS,
  type FlagDef,
  type FlagName,
  HEALTH_PATH_DEFAULT,
  HEALTHY_THRESHOLD_DEFAULT,
  HOST_DEFAULT,
  METRICS_PATH_DEFAULT,
  NOT_YET,
  PORT_DEFAULT,
  PROBE_INTERVAL_MS_DEFAULT,
  PROBE_INTERVAL_MS_MAX,
  PROBE_TIMEOUT_MS_DEFAULT,
  PROGRAM,
  THRESHOLD_MAX,
  UNHEALTHY_THRESHOLD_DEFAULT,
  VERSION,
  WORKERS_MAX,
} from "./flags.ts";
import { renderHelp } from "./help.ts";
import * as v from "./values.ts";

export { CliError } from "./error.ts";
export { NOT_YET, VERSION } from "./flags.ts";

export type ParseResult =
  | {
      kind: "run";
      options: Options;
      /** Long names ("--mode") of the flags the user gave, for notYetUsed. */
      explicit: ReadonlySet<string>;
    }
  | { kind: "help"; text: string }
  | { kind: "version"; text: string };

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
type Draft = Mutable<Omit<Options, "health" | "backends">> & {
  health: Mutable<Options["health"]>;
  backends: BackendSpec[];
  backendKeys: Set<string>;
};

const STRATEGIES: Record<string, Strategy> = {
  round_robin: "round_robin",
  weighted: "weighted",
  weighted_round_robin: "weighted",
  random: "random",
  sticky: "sticky",
  least_conn: "least_conn",
  p2c: "p2c",
};
const MODES: Record<string, Mode> = { mp: "mp", sp: "sp" };
const LEVELS: Record<string, Level> = { err: "err", warn: "warn", info: "info", debug: "debug" };
const HOST_HEADERS: Record<string, HostHeaderPolicy> = {
  auto: "auto",
  preserve: "preserve",
  backend: "backend",
};

const BACKEND_FORMS = "HOST:PORT, [IPv6]:PORT, http://HOST[:PORT] or https://HOST[:PORT]";

function backend(d: Draft, f: string, raw: string): void {
  const e = v.endpoint(raw);
  if ("why" in e) throw new CliError(`${f}: ${quote(raw)} ${e.why} (${BACKEND_FORMS})`);
  const key = v.endpointKey(e);
  if (d.backendKeys.has(key)) throw new CliError(`${f}: ${quote(raw)} is a duplicate of an earlier backend`);
  if (d.backends.length >= BACKENDS_MAX) {
    throw new CliError(`${f}: ${quote(raw)} is one too many (at most ${BACKENDS_MAX} backends)`);
  }
  d.backendKeys.add(key);
  // An explicit scheme wins over the port: "http://h:443" is plain HTTP because the user said so.
  const tls = e.scheme === null ? e.port === 443 : e.scheme === "https";
  d.backends.push({ host: e.host, port: e.port, tls, weight: 1 });
}

function otelEndpoint(f: string, raw: string): string {
  const e = v.endpoint(raw);
  if ("why" in e) throw new CliError(`${f}: ${quote(raw)} ${e.why} (HOST:PORT or http(s)://HOST[:PORT])`);
  // Normalized to a base URL so the exporter can append /v1/traces without re-parsing.
  return `${e.scheme ?? "http"}://${v.hostForUrl(e.host)}:${e.port}`;
}

const ms = (f: string, raw: string, min: number, max: number) =>
  v.intIn(f, raw, min, max, "a duration in ms");

/** One checker per value flag; the mapped type makes a flag without one a compile error. */
const APPLY: { [K in Exclude<FlagName, "help" | "version">]: (d: Draft, f: string, raw: string) => void } = {
  port: (d, f, raw) => {
    d.port = v.port(f, raw);
  },
  host: (d, f, raw) => {
    d.host = v.listenHost(f, raw);
  },
  mode: (d, f, raw) => {
    d.mode = v.choice(f, raw, MODES);
  },
  workers: (d, f, raw) => {
    d.workers = v.intIn(f, raw, 0, WORKERS_MAX, "a worker count (0 = one per CPU core)");
  },
  "upstream-timeout-ms": (d, f, raw) => {
    d.upstreamTimeoutMs = ms(f, raw, 1, DURATION_MS_MAX);
  },
  "host-header": (d, f, raw) => {
    d.hostHeader = v.choice(f, raw, HOST_HEADERS);
  },
  "body-timeout-ms": (d, f, raw) => {
    d.bodyTimeoutMs = ms(f, raw, 1, DURATION_MS_MAX);
  },
  "drain-timeout-ms": (d, f, raw) => {
    // 0 is meaningful: close at once without waiting for in-flight requests.
    d.drainTimeoutMs = ms(f, raw, 0, DURATION_MS_MAX);
  },
  backend,
  strategy: (d, f, raw) => {
    d.strategy = v.choice(f, raw, STRATEGIES);
  },
  config: (d, f, raw) => {
    d.configFile = v.readableFile(f, raw);
  },
  "cookie-name": (d, f, raw) => {
    d.cookieName = v.cookieName(f, raw, COOKIE_NAME_BYTES_MAX);
  },
  insecure: (d) => {
    d.insecure = true;
  },
  "health-path": (d, f, raw) => {
    d.health.healthPath = v.urlPath(f, raw, true);
  },
  "probe-interval-ms": (d, f, raw) => {
    d.health.probeIntervalMs = ms(f, raw, 1, PROBE_INTERVAL_MS_MAX);
  },
  "probe-timeout-ms": (d, f, raw) => {
    d.health.probeTimeoutMs = ms(f, raw, 1, PROBE_INTERVAL_MS_MAX);
  },
  "unhealthy-threshold": (d, f, raw) => {
    d.health.unhealthyThreshold = v.intIn(f, raw, 1, THRESHOLD_MAX, "a count");
  },
  "healthy-threshold": (d, f, raw) => {
    d.health.healthyThreshold = v.intIn(f, raw, 1, THRESHOLD_MAX, "a count");
  },
  loglevel: (d, f, raw) => {
    d.logLevel = v.choice(f, raw, LEVELS);
  },
  "metrics-path": (d, f, raw) => {
    d.metricsPath = raw === "" ? "" : v.urlPath(f, raw, false);
  },
  "otel-endpoint": (d, f, raw) => {
    d.otelEndpoint = otelEndpoint(f, raw);
  },
  "waf-config": (d, f, raw) => {
    d.wafConfig = v.readableFile(f, raw);
  },
  "waf-shadow": (d) => {
    d.wafShadow = true;
  },
  trace: (d) => {
    d.trace = true;
  },
  "tls-trace": (d) => {
    d.tlsTrace = true;
  },
};

function defaults(): Draft {
  return {
    host: HOST_DEFAULT,
    port: PORT_DEFAULT,
    // The spec: mp on Linux (SO_REUSEPORT spreads connections over the workers there), sp elsewhere
    // (macOS accepts reusePort but sends every connection to one socket).
    mode: process.platform === "linux" ? "mp" : "sp",
    workers: 0,
    backends: [],
    backendKeys: new Set(),
    strategy: "round_robin",
    configFile: null,
    logLevel: "info",
    insecure: false,
    trace: false,
    tlsTrace: false,
    upstreamTimeoutMs: UPSTREAM_TIMEOUT_MS_DEFAULT,
    hostHeader: "auto",
    health: {
      healthPath: HEALTH_PATH_DEFAULT,
      probeIntervalMs: PROBE_INTERVAL_MS_DEFAULT,
      probeTimeoutMs: PROBE_TIMEOUT_MS_DEFAULT,
      unhealthyThreshold: UNHEALTHY_THRESHOLD_DEFAULT,
      healthyThreshold: HEALTHY_THRESHOLD_DEFAULT,
    },
    cookieName: COOKIE_NAME_DEFAULT,
    metricsPath: METRICS_PATH_DEFAULT,
    drainTimeoutMs: DRAIN_TIMEOUT_MS_DEFAULT,
    bodyTimeoutMs: BODY_TIMEOUT_MS_DEFAULT,
    wafConfig: null,
    wafShadow: false,
    otelEndpoint: null,
  };
}

const BY_LONG = new Map<string, FlagName>(Object.keys(FLAGS).map((k) => [k, k as FlagName]));
const BY_SHORT = new Map<string, FlagName>();
for (const [name, def] of Object.entries(FLAGS) as [FlagName, FlagDef][]) {
  if (typeof def.alias === "string") BY_SHORT.set(def.alias, name);
}

function unknownFlag(tok: string): CliError {
  const name = tok.replace(/^-+/, "").split("=")[0]!;
  let best: string | null = null;
  let bestD = 3;
  for (const long of BY_LONG.keys()) {
    const dist = v.editDistance(name, long);
    if (dist < bestD) [best, bestD] = [long, dist];
  }
  // Single letters are all within distance 1 of each other, so a short-flag guess would be noise.
  const hint = best !== null && name.length > 1 ? `; did you mean --${best}?` : "; see --help";
  return new CliError(`${quote(tok)} is not a known flag${hint}`);
}

function positional(tok: string): CliError {
  const looksLikeBackend = !tok.startsWith("-") && !("why" in v.endpoint(tok));
  const hint = looksLikeBackend ? `; to add a backend write -b ${tok}` : "";
  return new CliError(`${quote(tok)}: ${PROGRAM} takes no positional arguments, only flags${hint}`);
}

/**
 * Parses argv (without the executable and script). --help anywhere wins, then --version. A flag
 * other than -b given twice is an error: with a config spread over scripts and aliases, silently
 * taking the last value hides mistakes. The returned options are deep-frozen.
 */
export function parseArgs(argv: readonly string[]): ParseResult {
  if (argv.includes("--help")) return { kind: "help", text: renderHelp() };
  if (argv.includes("--version")) return { kind: "version", text: `${PROGRAM} ${VERSION}` };

  const d = defaults();
  const seen = new Map<FlagName, string>();
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i]!;
    let name: FlagName | undefined;
    let inline: string | undefined;
    if (tok.startsWith("--") && tok.length > 2) {
      const eq = tok.indexOf("=");
      name = BY_LONG.get(eq < 0 ? tok.slice(2) : tok.slice(2, eq));
      if (eq >= 0) inline = tok.slice(eq + 1);
    } else if (tok.startsWith("-") && tok.length === 2 && tok !== "--") {
      name = BY_SHORT.get(tok[1]!);
    } else if (tok.startsWith("-") && tok.length > 2) {
      const asLong = BY_LONG.get(tok.slice(1).split("=")[0]!);
      if (asLong !== undefined)
        throw new CliError(`${quote(tok)} is not a known flag; did you mean --${asLong}?`);
      const short = BY_SHORT.get(tok[1]!);
      if (short !== undefined && FLAGS[short].type === "string") {
        const rest = tok.slice(2).replace(/^=/, "");
        throw new CliError(
          `${quote(tok)}: give ${tok.slice(0, 2)}'s value as its own argument: ${tok.slice(0, 2)} ${rest}`,
        );
      }
      const letters = [...tok.slice(1)];
      if (letters.every((c) => BY_SHORT.has(c) && FLAGS[BY_SHORT.get(c)!].type === "boolean")) {
        throw new CliError(
          `${quote(tok)}: give short flags separately: ${letters.map((c) => `-${c}`).join(" ")}`,
        );
      }
      throw unknownFlag(tok);
    } else {
      throw positional(tok);
    }
    if (name === undefined) throw unknownFlag(tok);
    if (name === "help" || name === "version") {
      throw new CliError(`--${name}: takes no value (got ${quote(inline ?? "")})`);
    }
    const def: FlagDef = FLAGS[name];
    const f = `--${name}`;
    let raw = "";
    if (def.type === "boolean") {
      if (inline !== undefined) throw new CliError(`${f}: takes no value (got ${quote(inline)})`);
    } else if (inline !== undefined) {
      raw = inline;
    } else {
      const next = argv[i + 1];
      const what = `${def.valueHint ?? "VALUE"}${name === "host" ? "; -h is --host, help is --help" : ""}`;
      if (next === undefined) throw new CliError(`${tok}: missing value (${what})`);
      // A forgotten value must not swallow the next flag ("-b -p 8080" would make "-p" a backend).
      if (next.startsWith("-") && next.length > 1) {
        throw new CliError(
          `${tok}: missing value before ${quote(next)} (${what}; write ${f}=${next} if that is it)`,
        );
      }
      raw = next;
      i++;
    }
    const prev = seen.get(name);
    if (prev !== undefined && !def.repeatable) {
      const both = def.type === "string" ? ` (${quote(prev)}, then ${quote(raw)})` : "";
      throw new CliError(`${f}: given twice${both}; only --backend may repeat`);
    }
    seen.set(name, raw);
    APPLY[name](d, f, raw);
  }

  if (d.health.probeTimeoutMs > d.health.probeIntervalMs) {
    throw new CliError(
      `--probe-timeout-ms: ${d.health.probeTimeoutMs} is longer than --probe-interval-ms ` +
        `${d.health.probeIntervalMs} (at most the interval)`,
    );
  }

  const { backendKeys: _, ...options } = d;
  const explicit = new Set([...seen.keys()].map((n) => `--${n}`));
  return { kind: "run", options: deepFreeze(options), explicit };
}

function deepFreeze<T>(o: T): T {
  if (typeof o === "object" && o !== null && !Object.isFrozen(o)) {
    for (const value of Object.values(o)) deepFreeze(value);
    Object.freeze(o);
  }
  return o;
}

/**
 * The "not implemented yet" messages for what the user asked for, in NOT_YET order; the entry point
 * prints each as `err(cli): ...` and exits 2 if there are any.
 */
export function notYetUsed(run: { options: Options; explicit: ReadonlySet<string> }): string[] {
  const o = run.options;
  const used = new Set<string>();
  for (const flag of run.explicit) {
    used.add(flag);
    if (flag === "--mode") used.add(`--mode ${o.mode}`);
    if (flag === "--strategy") used.add(`--strategy ${o.strategy}`);
  }
  return Object.entries(NOT_YET)
    .filter(([key]) => used.has(key))
    .map(([key, why]) => `${key} is not implemented yet (${why})`);
}
