// The flag table: one entry per command-line flag, in citty's ArgDef shape (type, alias, valueHint,
// description, default) plus the help group. citty is used for its types only: its runtime parser is
// not strict (unknown flags pass silently, `--no-x` negates anything, a value starting with "-" is
// taken as missing, `-p8080` splits into letters), its renderUsage is async, colored and ungrouped,
// and runMain treats `-h` as help while here `-h` is the listen host. So parse.ts tokenizes and
// help.ts renders from this table, and importing types only keeps citty and consola out of the
// compiled binary.
import type { BooleanArgDef, StringArgDef } from "citty";
import pkg from "../../package.json" with { type: "json" };
import {
  BODY_TIMEOUT_MS_DEFAULT,
  DRAIN_TIMEOUT_MS_DEFAULT,
  UPSTREAM_TIMEOUT_MS_DEFAULT,
} from "../core/limits.ts";

/** Bundled from package.json at build time, so the compiled binary needs no file next to it. */
export const VERSION: string = pkg.version;
export const PROGRAM = "load_balancer";

export const PORT_DEFAULT = 8080;
export const HOST_DEFAULT = "0.0.0.0";

import { WORKERS_MAX } from "../core/limits.ts";

export { WORKERS_MAX };
/** Upper bound for every millisecond flag: a day is longer than any sane timeout and fits a setTimeout. */
export const DURATION_MS_MAX = 86_400_000;
export const HEALTH_PATH_DEFAULT = "/";
export const PROBE_INTERVAL_MS_DEFAULT = 5_000;
export const PROBE_TIMEOUT_MS_DEFAULT = 2_000;
/** Probing less often than hourly is indistinguishable from not probing. */
export const PROBE_INTERVAL_MS_MAX = 3_600_000;
export const UNHEALTHY_THRESHOLD_DEFAULT = 3;
export const HEALTHY_THRESHOLD_DEFAULT = 2;
/** With probes every few seconds, 100 consecutive results is already minutes of hysteresis. */
export const THRESHOLD_MAX = 100;
export const COOKIE_NAME_DEFAULT = "ZZZ_BACKEND_ID";
/** Browsers cap a whole cookie near 4 KiB; a name this long is a mistake, not a choice. */
export const COOKIE_NAME_BYTES_MAX = 256;
export const METRICS_PATH_DEFAULT = "/metrics";

export type Group = "Server" | "Backends" | "Health" | "Observability" | "WAF" | "Debug" | "Other";
export const GROUPS: readonly Group[] = [
  "Server",
  "Backends",
  "Health",
  "Observability",
  "WAF",
  "Debug",
  "Other",
];

type Extra = {
  readonly group: Group;
  /** Only --backend may be given more than once; any other flag given twice is an error. */
  readonly repeatable?: boolean;
  /** The accepted words, listed in help; NOT_YET entries "--flag word" mark single words. */
  readonly choices?: readonly string[];
};
export type FlagDef = (StringArgDef & Extra) | (BooleanArgDef & Extra);

export const FLAGS = {
  port: {
    type: "string",
    alias: "p",
    valueHint: "N",
    default: String(PORT_DEFAULT),
    description: "Listen port, 1-65535",
    group: "Server",
  },
  host: {
    type: "string",
    alias: "h",
    valueHint: "HOST",
    default: HOST_DEFAULT,
    description: "Listen address: IPv4, IPv6 or name (-h is --host; help is --help)",
    group: "Server",
  },
  mode: {
    type: "string",
    alias: "m",
    valueHint: "MODE",
    default: process.platform === "linux" ? "mp" : "sp",
    description: "Multi-process (default on Linux) or single-process (sidecars, macOS)",
    choices: ["mp", "sp"],
    group: "Server",
  },
  workers: {
    type: "string",
    alias: "w",
    valueHint: "N",
    default: "0",
    description: `Worker processes for mp mode, 0-${WORKERS_MAX}; 0 = one per CPU core`,
    group: "Server",
  },
  "upstream-timeout-ms": {
    type: "string",
    valueHint: "N",
    default: String(UPSTREAM_TIMEOUT_MS_DEFAULT),
    description: `Wait this long for a backend's response headers, 1-${DURATION_MS_MAX}`,
    group: "Server",
  },
  "host-header": {
    type: "string",
    valueHint: "POLICY",
    default: "auto",
    description:
      "Host header sent to backends; auto = the client's to plain-HTTP backends, the backend's name to TLS ones",
    choices: ["auto", "preserve", "backend"],
    group: "Server",
  },
  "body-timeout-ms": {
    type: "string",
    valueHint: "N",
    default: String(BODY_TIMEOUT_MS_DEFAULT),
    description: `Receive a buffered request body (<= 64 KiB, or checked by the WAF) within this, else 408, 1-${DURATION_MS_MAX}`,
    group: "Server",
  },
  "drain-timeout-ms": {
    type: "string",
    valueHint: "N",
    default: String(DRAIN_TIMEOUT_MS_DEFAULT),
    description: `On shutdown, wait this long for in-flight requests, 0-${DURATION_MS_MAX}`,
    group: "Server",
  },
  backend: {
    type: "string",
    alias: "b",
    valueHint: "SPEC",
    description:
      "Backend, repeat for more: HOST:PORT, [IPv6]:PORT, http://HOST[:PORT] or https://HOST[:PORT]; " +
      "TLS with https://, or with port 443 and no scheme",
    repeatable: true,
    group: "Backends",
  },
  strategy: {
    type: "string",
    alias: "s",
    valueHint: "S",
    default: "round_robin",
    description: "How to pick a backend (weighted_round_robin also means weighted)",
    choices: ["round_robin", "weighted", "random", "sticky", "least_conn", "p2c"],
    group: "Backends",
  },
  config: {
    type: "string",
    alias: "c",
    valueHint: "FILE",
    description: "JSON backends file, reloaded when it changes",
    group: "Backends",
  },
  "cookie-name": {
    type: "string",
    valueHint: "NAME",
    default: COOKIE_NAME_DEFAULT,
    description: "Cookie that pins a client to a backend with --strategy sticky",
    group: "Backends",
  },
  insecure: {
    type: "boolean",
    alias: "k",
    default: false,
    description: "Skip TLS certificate verification of backends (testing only!)",
    group: "Backends",
  },
  "health-path": {
    type: "string",
    valueHint: "PATH",
    default: HEALTH_PATH_DEFAULT,
    description: "Path the active probe GETs, expecting 2xx; starts with /",
    group: "Health",
  },
  "probe-interval-ms": {
    type: "string",
    valueHint: "N",
    default: String(PROBE_INTERVAL_MS_DEFAULT),
    description: `Time between probes of each backend, 1-${PROBE_INTERVAL_MS_MAX}`,
    group: "Health",
  },
  "probe-timeout-ms": {
    type: "string",
    valueHint: "N",
    default: String(PROBE_TIMEOUT_MS_DEFAULT),
    description: "Probe timeout, 1 up to the probe interval",
    group: "Health",
  },
  "unhealthy-threshold": {
    type: "string",
    valueHint: "N",
    default: String(UNHEALTHY_THRESHOLD_DEFAULT),
    description: `Consecutive failures before a backend is marked down, 1-${THRESHOLD_MAX}`,
    group: "Health",
  },
  "healthy-threshold": {
    type: "string",
    valueHint: "N",
    default: String(HEALTHY_THRESHOLD_DEFAULT),
    description: `Consecutive successes before it is marked up again, 1-${THRESHOLD_MAX}`,
    group: "Health",
  },
  loglevel: {
    type: "string",
    alias: "l",
    valueHint: "LVL",
    default: "info",
    description: "Log level",
    choices: ["err", "warn", "info", "debug"],
    group: "Observability",
  },
  "metrics-path": {
    type: "string",
    valueHint: "PATH",
    default: METRICS_PATH_DEFAULT,
    description: "Where Prometheus metrics are served; starts with /, or '' for none",
    group: "Observability",
  },
  "otel-endpoint": {
    type: "string",
    valueHint: "H:P",
    description: "OpenTelemetry OTLP/HTTP endpoint: HOST:PORT or http(s)://HOST[:PORT]",
    group: "Observability",
  },
  "waf-config": {
    type: "string",
    valueHint: "FILE",
    description: "WAF rules (waf.json), hot-reloaded like -c",
    group: "WAF",
  },
  "waf-shadow": {
    type: "boolean",
    default: false,
    description: "Shadow mode: log what the WAF would block, block nothing",
    group: "WAF",
  },
  trace: {
    type: "boolean",
    alias: "t",
    default: false,
    description: "Dump raw request and response bytes (hex + ASCII)",
    group: "Debug",
  },
  "tls-trace": {
    type: "boolean",
    default: false,
    description: "Log TLS handshake details",
    group: "Debug",
  },
  help: { type: "boolean", description: "Show this help and exit (there is no short form)", group: "Other" },
  version: { type: "boolean", description: "Print the version and exit", group: "Other" },
} as const satisfies Record<string, FlagDef>;

export type FlagName = keyof typeof FLAGS;

/**
 * Flags that parse and validate but do nothing yet, with the reason. A key is a long flag
 * ("--waf-config": any use) or a flag and one canonical value ("--mode mp"). The entry point
 * refuses to start when one is used (see notYetUsed) and help marks them "(not yet)".
 * Delete a line when its feature lands.
 */
export const NOT_YET: Record<string, string> = {
  "--otel-endpoint": "OpenTelemetry export is not built yet",
};
