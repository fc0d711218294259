// The backends file (-c FILE): parsing, validation and reload summaries. Everything here is pure except
// readBackendsText/readBackendsFile, which read the file with a size bound.
//
// Format (spec "JSON Config File" + "Health Check Settings" + "Backend Settings"):
//   { "backends": [{ "host": "10.0.0.1", "port": 80, "weight": 2, "tls": false }, ...],
//     "strategy": "round_robin", "health_path": "/", "probe_interval_ms": 5000, "probe_timeout_ms": 2000,
//     "unhealthy_threshold": 3, "healthy_threshold": 2 }
// Only "backends" is required. Health keys and "strategy" that are absent stay absent, so the caller can
// fill them from flags and defaults.
import { open, stat } from "node:fs/promises";
import { CliError, quote } from "../cli/error.ts";
import { FLAGS, PROBE_INTERVAL_MS_MAX, THRESHOLD_MAX } from "../cli/flags.ts";
import { checkHost, editDistance, endpoint, endpointKey, urlPath } from "../cli/values.ts";
import { BACKENDS_MAX, CONFIG_BYTES_MAX, RELOAD_LOG_BACKENDS_MAX, WEIGHT_MAX } from "../core/limits.ts";
import type { BackendSpec, HealthOptions, Strategy } from "./options.ts";

export interface BackendsFile {
  readonly backends: readonly BackendSpec[];
  readonly health: Partial<HealthOptions>;
  /** Absent when the file does not name one. */
  readonly strategy?: Strategy;
}

/** A bad backends file. The message is `<file>: <where>: <problem>`; `where` is a JSON path or "line L, column C". */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(
    readonly file: string,
    readonly where: string,
    readonly problem: string,
  ) {
    super(where === "" ? `${file}: ${problem}` : `${file}: ${where}: ${problem}`);
  }
}

const BACKEND_KEYS = ["host", "port", "weight", "tls"] as const;

/** File key -> HealthOptions key, in the spec's order. */
const HEALTH_KEYS = {
  unhealthy_threshold: "unhealthyThreshold",
  healthy_threshold: "healthyThreshold",
  probe_interval_ms: "probeIntervalMs",
  probe_timeout_ms: "probeTimeoutMs",
  health_path: "healthPath",
} as const satisfies Record<string, keyof HealthOptions>;
type HealthKey = keyof typeof HEALTH_KEYS;

const TOP_KEYS = ["backends", "strategy", ...(Object.keys(HEALTH_KEYS) as HealthKey[])] as const;

/** The CLI's words plus the spec's config name for weighted (the CLI accepts it too). */
const STRATEGIES: ReadonlyMap<string, Strategy> = new Map<string, Strategy>([
  ...FLAGS.strategy.choices.map((c): [string, Strategy] => [c, c]),
  ["weighted_round_robin", "weighted"],
]);

const BACKEND_SHAPE = `{"host": "10.0.0.1", "port": 80}`;

/**
 * The JSON document of a config file's text, or ConfigError: over CONFIG_BYTES_MAX, a syntax error or a
 * duplicate key (with line and column). Shared by every config file format.
 */
export function parseConfigJson(text: string, source: string): unknown {
  // Each UTF-16 unit is at least one UTF-8 byte, so a long string is refused before encoding it.
  const bytes = text.length > CONFIG_BYTES_MAX ? text.length : new TextEncoder().encode(text).length;
  if (bytes > CONFIG_BYTES_MAX) throw tooBig(source, bytes);
  // Windows editors may save a byte-order mark, which JSON.parse rejects.
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;

  // JSON.parse (JavaScriptCore) reports no position, and keeps the last of two equal keys silently.
  const fault = findJsonFault(body);
  if (fault) throw new ConfigError(source, lineColumn(body, fault.offset), fault.problem);
  try {
    return JSON.parse(body);
  } catch (e) {
    throw new ConfigError(source, "", `invalid JSON: ${(e as Error).message}`);
  }
}

/** Parses and validates the text of a backends file; `source` names the file in messages. Deep-frozen. */
export function parseBackendsFile(text: string, source: string): BackendsFile {
  const doc = parseConfigJson(text, source);

  const fail = (where: string, problem: string): never => {
    throw new ConfigError(source, where, problem);
  };
  if (!isObject(doc))
    return fail("", `expected an object {"backends": [...]} at the top level, got ${shown(doc)}`);
  rejectUnknown(doc, TOP_KEYS, "", fail);

  if (!Object.hasOwn(doc, "backends")) {
    return fail("", `missing key "backends" (an array of 1-${BACKENDS_MAX} objects like ${BACKEND_SHAPE})`);
  }
  const list = doc.backends;
  if (!Array.isArray(list)) {
    return fail("backends", `expected an array of 1-${BACKENDS_MAX} backends, got ${shown(list)}`);
  }
  if (list.length < 1 || list.length > BACKENDS_MAX) {
    return fail("backends", `expected 1-${BACKENDS_MAX} backends, got ${list.length}`);
  }
  const firstIndex = new Map<string, number>();
  const backends = list.map((raw, i): BackendSpec => {
    const b = backend(raw, `backends[${i}]`, fail);
    const key = keyOf(b);
    const earlier = firstIndex.get(key);
    if (earlier !== undefined) fail(`backends[${i}]`, `duplicate of backends[${earlier}] (${key})`);
    firstIndex.set(key, i);
    return b;
  });

  const health: { -readonly [K in keyof HealthOptions]?: HealthOptions[K] } = {};
  for (const k of Object.keys(HEALTH_KEYS) as HealthKey[]) {
    if (!Object.hasOwn(doc, k)) continue;
    const v = doc[k];
    if (k === "health_path") health.healthPath = healthPath(v, fail);
    else if (k === "probe_interval_ms" || k === "probe_timeout_ms") {
      health[HEALTH_KEYS[k]] = int(v, k, 1, PROBE_INTERVAL_MS_MAX, fail);
    } else health[HEALTH_KEYS[k]] = int(v, k, 1, THRESHOLD_MAX, fail);
  }
  // Only when both are here: with one from the file and one from a flag or default, the caller checks.
  if (health.probeTimeoutMs !== undefined && health.probeIntervalMs !== undefined) {
    if (health.probeTimeoutMs > health.probeIntervalMs) {
      fail(
        "probe_timeout_ms",
        `${health.probeTimeoutMs} is longer than probe_interval_ms ${health.probeIntervalMs} (at most the interval)`,
      );
    }
  }

  const out: { backends: BackendSpec[]; health: Partial<HealthOptions>; strategy?: Strategy } = {
    backends,
    health,
  };
  if (Object.hasOwn(doc, "strategy")) out.strategy = strategy(doc.strategy, fail);
  return deepFreeze(out);
}

type Fail = (where: string, problem: string) => never;

function backend(raw: unknown, where: string, fail: Fail): BackendSpec {
  if (!isObject(raw)) return fail(where, `expected an object like ${BACKEND_SHAPE}, got ${shown(raw)}`);
  rejectUnknown(raw, BACKEND_KEYS, where, fail);
  for (const k of ["host", "port"] as const) {
    if (!Object.hasOwn(raw, k)) fail(where, `missing key "${k}"`);
  }
  const host = hostValue(raw.host, `${where}.host`, fail);
  const port = int(raw.port, `${where}.port`, 1, 65535, fail);
  const weight = Object.hasOwn(raw, "weight") ? int(raw.weight, `${where}.weight`, 1, WEIGHT_MAX, fail) : 1;
  let tls = port === 443;
  if (Object.hasOwn(raw, "tls")) {
    if (typeof raw.tls !== "boolean") fail(`${where}.tls`, `expected true or false, got ${shown(raw.tls)}`);
    tls = raw.tls as boolean;
  }
  return { host, port, tls, weight };
}

function hostValue(raw: unknown, where: string, fail: Fail): string {
  if (typeof raw !== "string") {
    return fail(where, `expected a string (host name, IPv4 or IPv6 address), got ${shown(raw)}`);
  }
  // The CLI's rules; IPv6 with or without brackets (no port here to confuse it with).
  const h = checkHost(raw, true);
  if ("host" in h) return h.host;
  // "10.0.0.1:80" and "https://api.example.com" are what people paste; say where the parts go.
  const e = endpoint(raw);
  if (!("why" in e)) {
    const tls = e.scheme === null ? "" : `, "tls": ${e.scheme === "https"}`;
    const want = `{"host": ${quote(e.host)}, "port": ${e.port}${tls}}`;
    return fail(where, `${quote(raw)} is not a bare host; write ${want}`);
  }
  return fail(where, `${quote(raw)} ${h.why}`);
}

function healthPath(raw: unknown, fail: Fail): string {
  const where = "health_path";
  if (typeof raw !== "string") return fail(where, `expected a string starting with /, got ${shown(raw)}`);
  try {
    // The --health-path rules: it goes into a request line, so visible ASCII only.
    return urlPath(where, raw, true);
  } catch (e) {
    if (!(e instanceof CliError)) throw e;
    return fail(where, e.message.slice(`${where}: `.length));
  }
}

function strategy(raw: unknown, fail: Fail): Strategy {
  const s = typeof raw === "string" ? STRATEGIES.get(raw) : undefined;
  if (s === undefined)
    fail("strategy", `expected one of ${[...STRATEGIES.keys()].join(" | ")}, got ${shown(raw)}`);
  return s!;
}

function int(raw: unknown, where: string, min: number, max: number, fail: Fail): number {
  if (typeof raw !== "number" || !Number.isInteger(raw) || raw < min || raw > max) {
    return fail(where, `expected an integer ${min}-${max}, got ${shown(raw)}`);
  }
  return raw;
}

function rejectUnknown(
  o: Record<string, unknown>,
  known: readonly string[],
  where: string,
  fail: Fail,
): void {
  for (const k of Object.keys(o)) {
    if (known.includes(k)) continue;
    const best = nearestKey(k, known);
    const hint = best === null ? "" : `did you mean "${best}"? `;
    fail(where, `unknown key ${quote(k)} (${hint}known: ${known.join(", ")})`);
  }
}

/** Edit distance below which an unknown key is taken for a typo of a known one. */
const KEY_TYPO_DISTANCE_MAX = 2;

/**
 * The known key an unknown one most likely meant: a typo (edit distance <= 2), or else a known key it
 * is the start of ("period" for "period_sec": a key cut short is as likely as a typo). null if none.
 */
export function nearestKey(k: string, known: readonly string[]): string | null {
  const lower = k.toLowerCase();
  let best: string | null = null;
  let bestD = KEY_TYPO_DISTANCE_MAX + 1;
  for (const c of known) {
    const d = editDistance(lower, c);
    if (d < bestD) [best, bestD] = [c, d];
  }
  return best ?? known.find((c) => k.length >= 3 && c.startsWith(lower)) ?? null;
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A value as the message shows it: strings quoted, containers by kind (they can be large). */
export function shown(v: unknown): string {
  if (typeof v === "string") return quote(v);
  if (Array.isArray(v)) return "an array";
  if (v === null) return "null";
  if (typeof v === "object") return "an object";
  return String(v);
}

function tooBig(source: string, bytes: number): ConfigError {
  return new ConfigError(source, "", `is ${bytes} bytes, more than the ${CONFIG_BYTES_MAX} allowed`);
}

/** Freezes plain objects and arrays; typed arrays (parsed CIDRs) cannot be frozen and are left as they are. */
export function deepFreeze<T>(o: T): T {
  if (typeof o === "object" && o !== null && !ArrayBuffer.isView(o) && !Object.isFrozen(o)) {
    for (const value of Object.values(o)) deepFreeze(value);
    Object.freeze(o);
  }
  return o;
}

// ---------------------------------------------------------------------------------------------------
// JSON syntax check with positions

export interface JsonFault {
  /** UTF-16 offset into the text. */
  readonly offset: number;
  readonly problem: string;
  /** The text is valid JSON, but an object repeats a key (JSON.parse would keep the last silently). */
  readonly duplicateKey: boolean;
}

/**
 * The first syntax error in `text` by RFC 8259 (what JSON.parse accepts), or a repeated object key;
 * null if neither. Iterative with an explicit stack, so deep nesting cannot overflow the call stack.
 */
export function findJsonFault(text: string): JsonFault | null {
  const n = text.length;
  let i = 0;
  // One entry per open container: the keys seen so far for an object, null for an array.
  const stack: (Set<string> | null)[] = [];
  let expectValue = true;
  let afterComma = false;

  const fault = (offset: number, problem: string, duplicateKey = false): JsonFault => ({
    offset,
    problem: duplicateKey ? problem : `invalid JSON: ${problem}`,
    duplicateKey,
  });
  const skipWs = () => {
    for (;;) {
      const c = text.charCodeAt(i);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) return;
      i++;
    }
  };
  const digits = (): number => {
    const start = i;
    while (i < n && text.charCodeAt(i) >= 0x30 && text.charCodeAt(i) <= 0x39) i++;
    return i - start;
  };
  const string = (): JsonFault | null => {
    const start = i;
    i++;
    for (;;) {
      if (i >= n) return fault(start, "unterminated string");
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return null;
      }
      if (c === 0x5c) {
        const e = text[i + 1];
        if (e === undefined) return fault(start, "unterminated string");
        if (e === "u") {
          if (!/^[0-9A-Fa-f]{4}$/.test(text.slice(i + 2, i + 6)))
            return fault(i, "\\u must be followed by 4 hex digits");
          i += 6;
        } else if ('"\\/bfnrt'.includes(e)) i += 2;
        else return fault(i, `invalid escape ${found(text, i, 2)} in a string`);
        continue;
      }
      if (c < 0x20) {
        return c === 0x0a || c === 0x0d
          ? fault(i, "line break inside a string (missing closing quote?)")
          : fault(i, `control character ${found(text, i)} inside a string (write it as a \\u escape)`);
      }
      i++;
    }
  };
  const number = (): JsonFault | null => {
    if (text[i] === "-") i++;
    if (text[i] === "0") {
      const zeroAt = i;
      i++;
      if (digits() > 0) return fault(zeroAt, "a number cannot have leading zeros");
    } else if (digits() === 0) return fault(i, `expected a digit, found ${found(text, i)}`);
    if (text[i] === ".") {
      i++;
      if (digits() === 0) return fault(i, `expected a digit after '.', found ${found(text, i)}`);
    }
    if (text[i] === "e" || text[i] === "E") {
      i++;
      if (text[i] === "+" || text[i] === "-") i++;
      if (digits() === 0) return fault(i, `expected a digit in the exponent, found ${found(text, i)}`);
    }
    return null;
  };
  // After '{' or ',' in an object: a key, then ':'.
  const key = (keys: Set<string>): JsonFault | null => {
    const trailing = afterComma;
    afterComma = false;
    skipWs();
    if (text[i] !== '"') {
      const hint = text[i] === "}" && trailing ? " (a trailing comma is not allowed)" : keyHint(text[i]);
      return fault(i, `expected a key in double quotes, found ${found(text, i)}${hint}`);
    }
    const start = i;
    const f = string();
    if (f) return f;
    const k = JSON.parse(text.slice(start, i)) as string;
    if (keys.has(k)) return fault(start, `duplicate key ${quote(k)} (JSON keeps only the last)`, true);
    keys.add(k);
    skipWs();
    if (text[i] !== ":") return fault(i, `expected ':' after the key, found ${found(text, i)}`);
    i++;
    return null;
  };

  for (;;) {
    skipWs();
    if (expectValue) {
      const trailing = afterComma;
      afterComma = false;
      const c = text[i];
      let f: JsonFault | null = null;
      if (c === "{") {
        i++;
        skipWs();
        if (text[i] === "}") {
          i++;
          expectValue = false;
          continue;
        }
        const keys = new Set<string>();
        stack.push(keys);
        f = key(keys);
        if (f) return f;
        continue;
      }
      if (c === "[") {
        i++;
        skipWs();
        if (text[i] === "]") {
          i++;
          expectValue = false;
        } else stack.push(null);
        continue;
      }
      if (c === '"') f = string();
      else if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) f = number();
      else {
        const word = ["true", "false", "null"].find((w) => text.startsWith(w, i));
        if (word === undefined) {
          const hint = c === "]" && trailing ? " (a trailing comma is not allowed)" : valueHint(c);
          return fault(i, `expected a value, found ${found(text, i)}${hint}`);
        }
        i += word.length;
      }
      if (f) return f;
      expectValue = false;
      continue;
    }
    // After a complete value.
    if (stack.length === 0) {
      if (i >= n) return null;
      return fault(i, `expected the end of the file after the top-level value, found ${found(text, i)}`);
    }
    const top = stack[stack.length - 1]!;
    const close = top === null ? "]" : "}";
    if (text[i] === ",") {
      i++;
      afterComma = true;
      if (top !== null) {
        const f = key(top);
        if (f) return f;
      }
      expectValue = true;
      continue;
    }
    if (text[i] === close) {
      i++;
      stack.pop();
      continue;
    }
    const hint = i < n && top !== null && text[i] === '"' ? " (missing comma?)" : "";
    return fault(i, `expected ',' or '${close}' after a value, found ${found(text, i)}${hint}`);
  }
}

function valueHint(c: string | undefined): string {
  if (c === "'") return " (strings use double quotes)";
  if (c === "/" || c === "#") return " (JSON has no comments)";
  return "";
}

function keyHint(c: string | undefined): string {
  if (c === "'") return " (JSON uses double quotes)";
  if (c === "/" || c === "#") return " (JSON has no comments)";
  return "";
}

const WORD_CHARS_MAX = 20;

/** What is at `i`, for a message: a word, `len` characters, or the end of the file. */
function found(text: string, i: number, len = 1): string {
  if (i >= text.length) return "the end of the file";
  const word = /[A-Za-z_$][A-Za-z0-9_$]*/y;
  word.lastIndex = i;
  const m = len === 1 ? word.exec(text) : null;
  const s = m
    ? m[0].slice(0, WORD_CHARS_MAX)
    : String.fromCodePoint(text.codePointAt(i)!) + text.slice(i + 1, i + len);
  return /^[\x21-\x7e]+$/.test(s)
    ? `'${s}'`
    : [...s].map((ch) => `U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`).join(" ");
}

/** "line L, column C", both from 1; columns count code points, as editors do. */
export function lineColumn(text: string, offset: number): string {
  let line = 1;
  let lineStart = 0;
  for (let j = 0; j < offset; j++) {
    if (text.charCodeAt(j) === 0x0a) {
      line++;
      lineStart = j + 1;
    }
  }
  const column = [...text.slice(lineStart, offset)].length + 1;
  return `line ${line}, column ${column}`;
}

// ---------------------------------------------------------------------------------------------------
// Reading

/**
 * The file's text, read with a bound: a size over CONFIG_BYTES_MAX is refused from stat, before reading,
 * and a file that grows while being read is refused too. Not UTF-8, not a regular file: ConfigError.
 */
export async function readBackendsText(path: string): Promise<string> {
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new ConfigError(path, "", "is not a regular file");
    if (st.size > CONFIG_BYTES_MAX) throw tooBig(path, st.size);
    const fh = await open(path, "r");
    try {
      const buf = new Uint8Array(CONFIG_BYTES_MAX + 1);
      let len = 0;
      while (len < buf.length) {
        const { bytesRead } = await fh.read(buf, len, buf.length - len, len);
        if (bytesRead === 0) break;
        len += bytesRead;
      }
      if (len > CONFIG_BYTES_MAX) throw tooBig(path, len);
      try {
        // fatal: a stray Latin-1 byte should be reported, not turned into U+FFFD in a host name.
        return new TextDecoder("utf-8", { fatal: true }).decode(buf.subarray(0, len));
      } catch {
        throw new ConfigError(path, "", "is not valid UTF-8 text");
      }
    } finally {
      await fh.close();
    }
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw new ConfigError(path, "", "does not exist");
    if (code === "EACCES") throw new ConfigError(path, "", "cannot be read (permission denied)");
    throw new ConfigError(path, "", `cannot be read (${code ?? (e as Error).message})`);
  }
}

export async function readBackendsFile(path: string): Promise<BackendsFile> {
  return parseBackendsFile(await readBackendsText(path), path);
}

// ---------------------------------------------------------------------------------------------------
// Reload summary

export interface BackendsDiff {
  /** host:port keys (IPv6 in brackets), in the new list's order. */
  readonly added: string[];
  /** In the old list's order. */
  readonly removed: string[];
  /** Present in both with a different weight or tls. */
  readonly changed: string[];
}

/** The identity of a backend: the CLI's duplicate key (host lowercased, IPv6 canonical, in brackets). */
export function keyOf(b: Pick<BackendSpec, "host" | "port">): string {
  return endpointKey({ host: b.host, port: b.port, scheme: null });
}

export function diffBackends(old: readonly BackendSpec[], next: readonly BackendSpec[]): BackendsDiff {
  const before = new Map(old.map((b) => [keyOf(b), b]));
  const after = new Map(next.map((b) => [keyOf(b), b]));
  const added = [...after.keys()].filter((k) => !before.has(k));
  const removed = [...before.keys()].filter((k) => !after.has(k));
  const changed = [...after].filter(([k, b]) => {
    const o = before.get(k);
    return o !== undefined && (o.weight !== b.weight || o.tls !== b.tls);
  });
  return { added, removed, changed: changed.map(([k]) => k) };
}

/**
 * The one log line for a reload, e.g. `reloaded backends.json: 3 backends (+1 added: 10.0.0.7:80;
 * -1 removed: 10.0.0.5:80; ~1 changed: 10.0.0.6:80 weight 1->3)`. Settings the file changed (strategy,
 * health keys) are listed too; a key that left the file shows as "unset" (the flag or default applies).
 */
export function describeReload(file: string, prev: BackendsFile, next: BackendsFile): string {
  const d = diffBackends(prev.backends, next.backends);
  const prevByKey = new Map(prev.backends.map((b) => [keyOf(b), b]));
  const nextByKey = new Map(next.backends.map((b) => [keyOf(b), b]));
  const parts: string[] = [];
  if (d.added.length > 0) parts.push(`+${d.added.length} added: ${names(d.added)}`);
  if (d.removed.length > 0) parts.push(`-${d.removed.length} removed: ${names(d.removed)}`);
  if (d.changed.length > 0) {
    const detail = d.changed.map((k) => {
      const o = prevByKey.get(k)!;
      const b = nextByKey.get(k)!;
      const what: string[] = [];
      if (o.weight !== b.weight) what.push(`weight ${o.weight}->${b.weight}`);
      if (o.tls !== b.tls) what.push(`tls ${o.tls}->${b.tls}`);
      return `${k} ${what.join(" ")}`;
    });
    parts.push(`~${d.changed.length} changed: ${names(detail)}`);
  }
  const settings: string[] = [];
  const setting = (name: string, a: unknown, b: unknown) => {
    if (a !== b) settings.push(`${name} ${a ?? "unset"}->${b ?? "unset"}`);
  };
  setting("strategy", prev.strategy, next.strategy);
  for (const [fileKey, optKey] of Object.entries(HEALTH_KEYS)) {
    setting(fileKey, prev.health[optKey], next.health[optKey]);
  }
  if (settings.length > 0) parts.push(`settings: ${settings.join(", ")}`);
  // Same set, new order: round-robin order follows the list, so it is a change worth naming.
  const reordered =
    d.added.length === 0 &&
    d.removed.length === 0 &&
    prev.backends.some((b, i) => keyOf(b) !== keyOf(next.backends[i]!));
  if (reordered) parts.push("order changed");
  const n = next.backends.length;
  const count = `${n} backend${n === 1 ? "" : "s"}`;
  return `reloaded ${file}: ${count} (${parts.length > 0 ? parts.join("; ") : "no changes"})`;
}

function names(list: readonly string[]): string {
  const shown = list.slice(0, RELOAD_LOG_BACKENDS_MAX).join(", ");
  const more = list.length - RELOAD_LOG_BACKENDS_MAX;
  return more > 0 ? `${shown} and ${more} more` : shown;
}
