// The WAF file (--waf-config FILE): parsing and validation into a deep-frozen WafConfig. Pure except
// readWafFile, which reads with the backends file's size bound.
//
// Format: the spec's waf.json (zzz-readme "WAF Configuration"), every key optional:
//   { "enabled": true, "shadow_mode": false, "burst_detection_enabled": false, "burst_threshold": 10,
//     "rate_limits": [{ "name": "api", "path": "/api/*", "method": "POST",
//                       "limit": { "requests": 100, "period_sec": 60 }, "burst": 20,
//                       "by": "ip", "action": "block" }],
//     "slowloris": { "max_conns_per_ip": 50 },
//     "request_limits": { "max_uri_length": 2048, "max_body_size": 1048576, "max_json_depth": 20,
//                         "endpoints": [{ "path": "/api/upload", "max_body_size": 10485760 }] },
//     "trusted_proxies": ["10.0.0.0/8", "172.16.0.0/12"],
//     "logging": { "log_blocked": true, "log_allowed": false, "log_near_limit": false,
//                  "near_limit_threshold": 0.8 } }
// plus three keys of ours: "burst_window_sec" (default 60, the spec's fixed window), "table_full":
// "fail_open" | "fail_closed" (default fail_open): what a request gets when the shared WAF table has no
// room for its client, and "table_slots" (a power of two, default and most WAF_TABLE_SLOTS_MAX): how
// many (client, rule) entries the shared table tracks. Errors read `<file>: <json path>: <problem>`, like the backends file.
import { quote } from "../cli/error.ts";
import { REQUEST_BODY_BYTES_MAX, URI_BYTES_MAX, WAF_RULES_MAX, WAF_TABLE_SLOTS_MAX } from "../core/limits.ts";
import { BURST_THRESHOLD_DEFAULT, BURST_WINDOW_SEC_DEFAULT } from "../core/waf/burst.ts";
import { type Cidr, parseCidr as parseCidrWords, parseIp } from "../core/waf/client.ts";
import { gcraProblem, RATE_PER_SEC_MAX } from "../core/waf/ratelimit.ts";
import type { RequestLimitsConfig } from "../core/waf/request-limits.ts";
import {
  ConfigError,
  deepFreeze,
  isObject,
  nearestKey,
  parseConfigJson,
  readBackendsText,
  shown,
} from "./backends-file.ts";

/** Rules per file (core/limits.ts WAF_RULES_MAX: metrics keep a fixed row of counters per rule). */
export const RATE_LIMITS_MAX = WAF_RULES_MAX;
/** Rule names appear in logs and metric labels. */
export const RULE_NAME_CHARS_MAX = 64;
/** Per-path body limits in request_limits.endpoints (walked per request with a body). */
export const ENDPOINTS_MAX = 64;
/** trusted_proxies entries: walked for every X-Forwarded-For hop. */
export const TRUSTED_PROXIES_MAX = 256;
/** Longest limit.period_sec: one day; longer windows are quotas, not rate limits. */
export const PERIOD_SEC_MAX = 86_400;
/** slowloris.max_conns_per_ip upper bound (a sanity bound: any real cap is far lower). */
export const CONNS_PER_IP_MAX = 1_000_000;
/** burst_threshold range: above 1 (1 would refuse any client busier than its own average). */
export const BURST_THRESHOLD_MAX = 1_000;
/** burst_window_sec upper bound: one hour (the EMA then spans half a day per half-life ~5 windows). */
export const BURST_WINDOW_SEC_MAX = 3_600;
/** request_limits.max_json_depth upper bound: deeper limits are no limit (the scanner is O(bytes) anyway). */
export const JSON_DEPTH_MAX = 1_000;
/** Smallest table_slots: one probe window's worth, so a table is never smaller than a lookup scans. */
export const WAF_TABLE_SLOTS_MIN = 64;
/** Longest method token in a rule. */
const METHOD_CHARS_MAX = 32;

export type TableFullPolicy = "fail_open" | "fail_closed";
export type RateLimitAction = "block" | "log";

export interface WafRateLimit {
  readonly name: string;
  /** As written: exact, or a prefix when it ends in "*" (core/waf/path.ts compiles it). */
  readonly path: string;
  /** Absent: any method. */
  readonly method?: string;
  readonly requests: number;
  readonly periodSec: number;
  /** Extra tokens on top of requests (capacity = requests + burst). */
  readonly burst: number;
  readonly by: "ip";
  readonly action: RateLimitAction;
}

export interface WafLogging {
  readonly logBlocked: boolean;
  readonly logAllowed: boolean;
  readonly logNearLimit: boolean;
  /** Fraction of a bucket in use (0-1] from which log_near_limit logs. */
  readonly nearLimitThreshold: number;
}

export interface WafConfig {
  readonly enabled: boolean;
  readonly shadowMode: boolean;
  readonly burstDetectionEnabled: boolean;
  readonly burstThreshold: number;
  readonly burstWindowSec: number;
  readonly rateLimits: readonly WafRateLimit[];
  /** Absent: no per-IP connection cap. */
  readonly slowloris?: { readonly maxConnsPerIp: number };
  /** Absent: no request limits. Field names as core/waf/request-limits.ts takes them. */
  readonly requestLimits?: RequestLimitsConfig;
  /** Parsed networks (core/waf/client.ts). Their `words` arrays are the one unfrozen part. */
  readonly trustedProxies: readonly Cidr[];
  readonly logging: WafLogging;
  readonly tableFull: TableFullPolicy;
  readonly tableSlots: number;
}

const TOP_KEYS = [
  "enabled",
  "shadow_mode",
  "burst_detection_enabled",
  "burst_threshold",
  "burst_window_sec",
  "rate_limits",
  "slowloris",
  "request_limits",
  "trusted_proxies",
  "logging",
  "table_full",
  "table_slots",
] as const;
const RULE_KEYS = ["name", "path", "method", "limit", "burst", "by", "action"] as const;
const LIMIT_KEYS = ["requests", "period_sec"] as const;
const SLOWLORIS_KEYS = ["max_conns_per_ip"] as const;
const REQUEST_LIMIT_KEYS = ["max_uri_length", "max_body_size", "max_json_depth", "endpoints"] as const;
const ENDPOINT_KEYS = ["path", "max_body_size"] as const;
const LOGGING_KEYS = ["log_blocked", "log_allowed", "log_near_limit", "near_limit_threshold"] as const;
const TABLE_FULL_POLICIES: readonly TableFullPolicy[] = ["fail_open", "fail_closed"];
const ACTIONS: readonly RateLimitAction[] = ["block", "log"];

/** RFC 9110 token characters without lowercase letters: methods are case-sensitive and ours are uppercase. */
const METHOD_RE = /^[!#$%&'*+\-.^_`|~0-9A-Z]+$/;
/** Visible ASCII and space: names go into log lines and metric labels. */
const NAME_RE = /^[\x20-\x7e]+$/;
/** Visible ASCII: a path as it appears in a request line. */
const PATH_RE = /^[\x21-\x7e]+$/;

export const WAF_DEFAULTS: WafConfig = deepFreeze({
  enabled: true,
  shadowMode: false,
  burstDetectionEnabled: false,
  burstThreshold: BURST_THRESHOLD_DEFAULT,
  burstWindowSec: BURST_WINDOW_SEC_DEFAULT,
  rateLimits: [],
  trustedProxies: [],
  logging: { logBlocked: true, logAllowed: false, logNearLimit: false, nearLimitThreshold: 0.8 },
  tableFull: "fail_open",
  tableSlots: WAF_TABLE_SLOTS_MAX,
});

type Fail = (where: string, problem: string) => never;
type Obj = Record<string, unknown>;

/** Parses and validates the text of a WAF file; `source` names the file in messages. Deep-frozen. */
export function parseWafFile(text: string, source: string): WafConfig {
  const doc = parseConfigJson(text, source);
  const fail: Fail = (where, problem) => {
    throw new ConfigError(source, where, problem);
  };
  if (!isObject(doc))
    return fail("", `expected an object {"rate_limits": [...], ...} at the top level, got ${shown(doc)}`);
  rejectUnknown(doc, TOP_KEYS, "", fail);

  const d = WAF_DEFAULTS;
  const out = {
    enabled: optBool(doc, "enabled", "", d.enabled, fail),
    shadowMode: optBool(doc, "shadow_mode", "", d.shadowMode, fail),
    burstDetectionEnabled: optBool(doc, "burst_detection_enabled", "", d.burstDetectionEnabled, fail),
    burstThreshold: d.burstThreshold,
    burstWindowSec: d.burstWindowSec,
    rateLimits: [] as WafRateLimit[],
    slowloris: undefined as WafConfig["slowloris"],
    requestLimits: undefined as RequestLimitsConfig | undefined,
    trustedProxies: [] as Cidr[],
    logging: d.logging,
    tableFull: d.tableFull,
    tableSlots: d.tableSlots,
  };
  if (Object.hasOwn(doc, "burst_threshold")) {
    const v = doc.burst_threshold;
    if (typeof v !== "number" || !(v > 1) || v > BURST_THRESHOLD_MAX) {
      fail(
        "burst_threshold",
        `expected a number above 1 and at most ${BURST_THRESHOLD_MAX}, got ${shown(v)}`,
      );
    }
    out.burstThreshold = v as number;
  }
  if (Object.hasOwn(doc, "burst_window_sec")) {
    out.burstWindowSec = int(doc.burst_window_sec, "burst_window_sec", 1, BURST_WINDOW_SEC_MAX, fail);
  }
  if (Object.hasOwn(doc, "rate_limits")) out.rateLimits = rateLimits(doc.rate_limits, fail);
  if (Object.hasOwn(doc, "slowloris")) {
    const s = object(doc.slowloris, "slowloris", `{"max_conns_per_ip": 50}`, fail);
    rejectUnknown(s, SLOWLORIS_KEYS, "slowloris", fail);
    if (!Object.hasOwn(s, "max_conns_per_ip")) fail("slowloris", `missing key "max_conns_per_ip"`);
    out.slowloris = {
      maxConnsPerIp: int(s.max_conns_per_ip, "slowloris.max_conns_per_ip", 1, CONNS_PER_IP_MAX, fail),
    };
  }
  if (Object.hasOwn(doc, "request_limits")) out.requestLimits = requestLimits(doc.request_limits, fail);
  if (Object.hasOwn(doc, "trusted_proxies")) out.trustedProxies = trustedProxies(doc.trusted_proxies, fail);
  if (Object.hasOwn(doc, "logging")) out.logging = logging(doc.logging, fail);
  if (Object.hasOwn(doc, "table_full")) {
    const v = doc.table_full;
    if (!TABLE_FULL_POLICIES.includes(v as TableFullPolicy)) {
      fail("table_full", `expected one of ${TABLE_FULL_POLICIES.join(" | ")}, got ${shown(v)}`);
    }
    out.tableFull = v as TableFullPolicy;
  }
  if (Object.hasOwn(doc, "table_slots")) {
    const v = int(doc.table_slots, "table_slots", WAF_TABLE_SLOTS_MIN, WAF_TABLE_SLOTS_MAX, fail);
    if ((v & (v - 1)) !== 0) fail("table_slots", `expected a power of two, got ${v}`);
    out.tableSlots = v;
  }
  const config: Obj = { ...out };
  if (out.slowloris === undefined) delete config.slowloris;
  if (out.requestLimits === undefined) delete config.requestLimits;
  return deepFreeze(config as unknown as WafConfig);
}

export async function readWafFile(path: string): Promise<WafConfig> {
  return parseWafFile(await readBackendsText(path), path);
}

const RULE_SHAPE = `{"name": "api", "path": "/api/*", "limit": {"requests": 100, "period_sec": 60}}`;

function rateLimits(raw: unknown, fail: Fail): WafRateLimit[] {
  if (!Array.isArray(raw))
    return fail("rate_limits", `expected an array of rules like ${RULE_SHAPE}, got ${shown(raw)}`);
  if (raw.length > RATE_LIMITS_MAX)
    fail("rate_limits", `expected at most ${RATE_LIMITS_MAX} rules, got ${raw.length}`);
  const byName = new Map<string, number>();
  return raw.map((r, i): WafRateLimit => {
    const where = `rate_limits[${i}]`;
    const o = object(r, where, RULE_SHAPE, fail);
    rejectUnknown(o, RULE_KEYS, where, fail);
    for (const k of ["name", "path", "limit"] as const) {
      if (!Object.hasOwn(o, k)) fail(where, `missing key "${k}"`);
    }
    const name = o.name;
    if (
      typeof name !== "string" ||
      name.trim() === "" ||
      name.length > RULE_NAME_CHARS_MAX ||
      !NAME_RE.test(name)
    ) {
      fail(
        `${where}.name`,
        `expected a non-empty name of at most ${RULE_NAME_CHARS_MAX} printable ASCII characters, got ${shown(name)}`,
      );
    }
    const earlier = byName.get(name as string);
    if (earlier !== undefined)
      fail(`${where}.name`, `${quote(name as string)} is already the name of rate_limits[${earlier}]`);
    byName.set(name as string, i);
    const path = pathPattern(o.path, `${where}.path`, fail);
    const lim = object(o.limit, `${where}.limit`, `{"requests": 100, "period_sec": 60}`, fail);
    rejectUnknown(lim, LIMIT_KEYS, `${where}.limit`, fail);
    for (const k of LIMIT_KEYS) if (!Object.hasOwn(lim, k)) fail(`${where}.limit`, `missing key "${k}"`);
    const periodSec = int(lim.period_sec, `${where}.limit.period_sec`, 1, PERIOD_SEC_MAX, fail);
    const requests = int(lim.requests, `${where}.limit.requests`, 1, periodSec * RATE_PER_SEC_MAX, fail);
    const burst = Object.hasOwn(o, "burst") ? int(o.burst, `${where}.burst`, 0, 2 ** 30, fail) : 0;
    const problem = gcraProblem(requests, periodSec, burst);
    if (problem !== null) fail(where, problem);
    const rule: { -readonly [K in keyof WafRateLimit]: WafRateLimit[K] } = {
      name: name as string,
      path,
      requests,
      periodSec,
      burst,
      by: "ip",
      action: "block",
    };
    if (Object.hasOwn(o, "method")) {
      const m = o.method;
      if (typeof m !== "string" || m.length > METHOD_CHARS_MAX || !METHOD_RE.test(m)) {
        const hint =
          typeof m === "string" && METHOD_RE.test(m.toUpperCase())
            ? ` (methods are case-sensitive: write ${quote(m.toUpperCase())})`
            : "";
        fail(`${where}.method`, `expected an uppercase method like "POST", got ${shown(m)}${hint}`);
      }
      rule.method = m as string;
    }
    if (Object.hasOwn(o, "by") && o.by !== "ip")
      fail(`${where}.by`, `expected "ip" (the only key supported), got ${shown(o.by)}`);
    if (Object.hasOwn(o, "action")) {
      if (!ACTIONS.includes(o.action as RateLimitAction)) {
        fail(`${where}.action`, `expected one of ${ACTIONS.join(" | ")}, got ${shown(o.action)}`);
      }
      rule.action = o.action as RateLimitAction;
    }
    return rule;
  });
}

/** "/exact" or "/prefix*": starts with "/", "*" only as the last character, no query or fragment. */
function pathPattern(raw: unknown, where: string, fail: Fail): string {
  const what = `a path starting with / ("/api/login", or "/api/*" for a prefix)`;
  if (typeof raw !== "string") return fail(where, `expected ${what}, got ${shown(raw)}`);
  if (!raw.startsWith("/")) return fail(where, `${quote(raw)} does not start with /; expected ${what}`);
  if (raw.length > URI_BYTES_MAX || !PATH_RE.test(raw)) {
    return fail(where, `${quote(raw)} is not a path of at most ${URI_BYTES_MAX} visible ASCII characters`);
  }
  const star = raw.indexOf("*");
  if (star >= 0 && star !== raw.length - 1) {
    return fail(
      where,
      `${quote(raw)} has "*" before the end; "*" is only allowed as the last character (a prefix match)`,
    );
  }
  if (raw.includes("?") || raw.includes("#")) {
    return fail(where, `${quote(raw)} has a query or fragment; rules match the path only`);
  }
  return raw;
}

function requestLimits(raw: unknown, fail: Fail): RequestLimitsConfig {
  const o = object(raw, "request_limits", `{"max_body_size": 1048576}`, fail);
  rejectUnknown(o, REQUEST_LIMIT_KEYS, "request_limits", fail);
  const out: { -readonly [K in keyof RequestLimitsConfig]: RequestLimitsConfig[K] } = { endpoints: [] };
  if (Object.hasOwn(o, "max_uri_length")) {
    out.maxUriLength = int(o.max_uri_length, "request_limits.max_uri_length", 1, URI_BYTES_MAX, fail);
  }
  if (Object.hasOwn(o, "max_body_size")) {
    out.maxBodySize = int(o.max_body_size, "request_limits.max_body_size", 0, REQUEST_BODY_BYTES_MAX, fail);
  }
  if (Object.hasOwn(o, "max_json_depth")) {
    out.maxJsonDepth = int(o.max_json_depth, "request_limits.max_json_depth", 1, JSON_DEPTH_MAX, fail);
  }
  if (Object.hasOwn(o, "endpoints")) {
    const list = o.endpoints;
    const shape = `{"path": "/api/upload", "max_body_size": 10485760}`;
    if (!Array.isArray(list))
      return fail("request_limits.endpoints", `expected an array like [${shape}], got ${shown(list)}`);
    if (list.length > ENDPOINTS_MAX) {
      fail("request_limits.endpoints", `expected at most ${ENDPOINTS_MAX} endpoints, got ${list.length}`);
    }
    const seen = new Map<string, number>();
    out.endpoints = list.map((e, i) => {
      const where = `request_limits.endpoints[${i}]`;
      const eo = object(e, where, shape, fail);
      rejectUnknown(eo, ENDPOINT_KEYS, where, fail);
      for (const k of ENDPOINT_KEYS) if (!Object.hasOwn(eo, k)) fail(where, `missing key "${k}"`);
      const path = pathPattern(eo.path, `${where}.path`, fail);
      const earlier = seen.get(path);
      if (earlier !== undefined)
        fail(`${where}.path`, `${quote(path)} is already request_limits.endpoints[${earlier}]`);
      seen.set(path, i);
      return {
        path,
        maxBodySize: int(eo.max_body_size, `${where}.max_body_size`, 0, REQUEST_BODY_BYTES_MAX, fail),
      };
    });
  }
  return out;
}

function trustedProxies(raw: unknown, fail: Fail): Cidr[] {
  const shape = `["10.0.0.0/8", "2001:db8::/32"]`;
  if (!Array.isArray(raw))
    return fail("trusted_proxies", `expected an array of CIDRs like ${shape}, got ${shown(raw)}`);
  if (raw.length > TRUSTED_PROXIES_MAX) {
    fail("trusted_proxies", `expected at most ${TRUSTED_PROXIES_MAX} entries, got ${raw.length}`);
  }
  return raw.map((t, i): Cidr => {
    const where = `trusted_proxies[${i}]`;
    if (typeof t !== "string")
      return fail(where, `expected a CIDR string like "10.0.0.0/8", got ${shown(t)}`);
    const r = parseCidr(t);
    return "why" in r ? fail(where, r.why) : r;
  });
}

/**
 * A CIDR ("10.0.0.0/8", "2001:db8::/32") or a bare address (one host) as core/waf/client.ts matches
 * it, or why not. Stricter than the core parser: host bits set below the prefix ("10.0.0.1/8") are
 * refused, since a mistyped trust range widens who may set X-Forwarded-For.
 */
export function parseCidr(text: string): Cidr | { readonly why: string } {
  const cidr = parseCidrWords(text);
  const slash = text.indexOf("/");
  const base = slash < 0 ? text : text.slice(0, slash);
  if (cidr === null) {
    if (parseIp(base) === null) {
      return { why: `${quote(text)} is not an IPv4 or IPv6 address (with an optional /prefix)` };
    }
    const max = base.includes(":") ? 128 : 32;
    return { why: `${quote(text)} has a bad prefix length (expected /0-/${max})` };
  }
  const words = parseIp(base)!;
  for (let w = 0; w < words.length; w++) {
    if (words[w] !== cidr.words[w]) {
      const network = base.includes(":") ? v6Network(cidr) : v4Network(cidr);
      return {
        why: `${quote(text)} has host bits set after the prefix; did you mean "${network}/${text.slice(slash + 1)}"?`,
      };
    }
  }
  return cidr;
}

function v4Network(c: Cidr): string {
  const v = c.words[3]!;
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}

function v6Network(c: Cidr): string {
  const groups: string[] = [];
  for (const w of c.words) groups.push((w >>> 16).toString(16), (w & 0xffff).toString(16));
  // Uncompressed is unambiguous; the user shortens it as they like.
  return groups.join(":");
}

function logging(raw: unknown, fail: Fail): WafLogging {
  const o = object(raw, "logging", `{"log_blocked": true}`, fail);
  rejectUnknown(o, LOGGING_KEYS, "logging", fail);
  const d = WAF_DEFAULTS.logging;
  let nearLimitThreshold = d.nearLimitThreshold;
  if (Object.hasOwn(o, "near_limit_threshold")) {
    const v = o.near_limit_threshold;
    if (typeof v !== "number" || !(v > 0) || v > 1) {
      fail(
        "logging.near_limit_threshold",
        `expected a fraction above 0 and at most 1 (like 0.8), got ${shown(v)}`,
      );
    }
    nearLimitThreshold = v as number;
  }
  return {
    logBlocked: optBool(o, "log_blocked", "logging.", d.logBlocked, fail),
    logAllowed: optBool(o, "log_allowed", "logging.", d.logAllowed, fail),
    logNearLimit: optBool(o, "log_near_limit", "logging.", d.logNearLimit, fail),
    nearLimitThreshold,
  };
}

// ---------------------------------------------------------------------------------------------------
// Helpers (the backends file keeps its own private; these add the key to unknown-key paths)

function optBool(o: Obj, key: string, prefix: string, dflt: boolean, fail: Fail): boolean {
  if (!Object.hasOwn(o, key)) return dflt;
  const v = o[key];
  if (typeof v !== "boolean") return fail(prefix + key, `expected true or false, got ${shown(v)}`);
  return v;
}

function int(raw: unknown, where: string, min: number, max: number, fail: Fail): number {
  if (typeof raw !== "number" || !Number.isInteger(raw) || raw < min || raw > max) {
    return fail(where, `expected an integer ${min}-${max}, got ${shown(raw)}`);
  }
  return raw;
}

function object(raw: unknown, where: string, shape: string, fail: Fail): Obj {
  if (!isObject(raw)) return fail(where, `expected an object like ${shape}, got ${shown(raw)}`);
  return raw;
}

/** An unknown key is reported at its own path ("rate_limits[1].limitt"), with the nearest known key. */
function rejectUnknown(o: Obj, known: readonly string[], where: string, fail: Fail): void {
  for (const k of Object.keys(o)) {
    if (known.includes(k)) continue;
    const best = nearestKey(k, known);
    const hint = best === null ? "" : `did you mean "${best}"? `;
    const at = /^[A-Za-z_][A-Za-z0-9_]*$/.test(k) ? `.${k}` : `[${quote(k)}]`;
    fail(
      where === "" ? at.replace(/^\./, "") : where + at,
      `unknown key (${hint}known: ${known.join(", ")})`,
    );
  }
}
