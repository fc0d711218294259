// Value checkers for flag arguments. Each takes the flag's name (for the message) and the raw string,
// and returns the checked value or throws a one-line CliError.
import { accessSync, constants, type Stats, statSync } from "node:fs";
import { isIPv4, isIPv6 } from "node:net";
import { resolve } from "node:path";
import { HOST_LEN_MAX, URI_BYTES_MAX } from "../core/limits.ts";
import { CliError, quote } from "./error.ts";

/** Enough digits for any bound here while staying far inside Number's exact-integer range. */
const INT_DIGITS_MAX = 15;

/** Plain decimal digits only: Number() would also take "+5", "0x10", "1e3", " 80" and "". */
export function intIn(flag: string, raw: string, min: number, max: number, noun: string): number {
  const n = /^[0-9]+$/.test(raw) && raw.length <= INT_DIGITS_MAX ? Number(raw) : Number.NaN;
  if (!(n >= min && n <= max)) throw new CliError(`${flag}: ${quote(raw)} is not ${noun} (${min}-${max})`);
  return n;
}

export function port(flag: string, raw: string): number {
  return intIn(flag, raw, 1, 65535, "a port");
}

export function choice<T extends string>(
  flag: string,
  raw: string,
  accepted: Readonly<Record<string, T>>,
): T {
  const v = Object.hasOwn(accepted, raw) ? accepted[raw] : undefined;
  if (v === undefined) {
    throw new CliError(`${flag}: ${quote(raw)} is not accepted (${Object.keys(accepted).join(" | ")})`);
  }
  return v;
}

const LABEL_RE = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * A host name (DNS labels), an IPv4 literal, or an IPv6 literal in brackets; returns it without
 * brackets, or why it is not a host. Unbracketed IPv6 only when there is no port to confuse it with.
 */
export function checkHost(s: string, bareV6: boolean): { host: string } | { why: string } {
  if (s === "") return { why: "has an empty host" };
  if (s.startsWith("[") && s.endsWith("]")) {
    const inner = s.slice(1, -1);
    // Zone ids (fe80::1%eth0) would need escaping in URLs and Host headers; nobody load-balances to one.
    if (inner.includes("%") || !isIPv6(inner)) return { why: "has an invalid IPv6 address" };
    return { host: inner.toLowerCase() };
  }
  if (s.includes(":")) {
    if (bareV6 && !s.includes("%") && isIPv6(s)) return { host: s.toLowerCase() };
    return { why: bareV6 ? "is not a host" : "has an IPv6 address without brackets, e.g. [::1]:9001" };
  }
  if (isIPv4(s)) return { host: s };
  if (s.length > HOST_LEN_MAX) return { why: `has a host longer than ${HOST_LEN_MAX} characters` };
  const labels = s.split(".");
  if (!labels.every((l) => LABEL_RE.test(l))) {
    return { why: "has an invalid host (DNS name of letters, digits, '-' and '.', IPv4, or [IPv6])" };
  }
  // A numeric last label makes resolvers and URL parsers read the name as an IPv4 address
  // ("10.1" -> 10.0.0.1, "010.0.0.1" -> octal), so only a plain dotted quad is taken.
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) return { why: "has an invalid IPv4 address" };
  return { host: s };
}

export function listenHost(flag: string, raw: string): string {
  const r = checkHost(raw, true);
  if ("why" in r)
    throw new CliError(`${flag}: ${quote(raw)} is not a listen address (IPv4, IPv6 or host name)`);
  return r.host;
}

export interface Endpoint {
  readonly host: string;
  readonly port: number;
  /** The scheme the user wrote, if any. */
  readonly scheme: "http" | "https" | null;
}

/**
 * HOST:PORT, [IPv6]:PORT, or http(s)://HOST[:PORT] with no path, query, fragment or user info.
 * Returns why not rather than throwing, so each flag can say what it accepts.
 */
export function endpoint(raw: string): Endpoint | { why: string } {
  let rest = raw;
  let scheme: Endpoint["scheme"] = null;
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(raw);
  if (m) {
    const s = m[1]!.toLowerCase();
    if (s !== "http" && s !== "https") return { why: `has an unsupported scheme ${quote(m[1]!)}` };
    scheme = s;
    rest = raw.slice(m[0].length);
    // "http://host:8080/" is how URLs get pasted; the lone "/" is the root, not a path.
    if (rest.endsWith("/")) rest = rest.slice(0, -1);
  }
  if (rest.includes("@")) return { why: "has user info, which is not accepted" };
  if (rest.includes("/")) return { why: "has a path, which is not accepted" };
  if (rest.includes("?") || rest.includes("#"))
    return { why: "has a query or fragment, which is not accepted" };

  let hostPart: string;
  let portPart: string | null = null;
  if (rest.startsWith("[")) {
    const close = rest.indexOf("]");
    if (close < 0) return { why: "has an unclosed '['" };
    hostPart = rest.slice(0, close + 1);
    const after = rest.slice(close + 1);
    if (after.startsWith(":")) portPart = after.slice(1);
    else if (after !== "") return { why: "has text after ']' that is not :PORT" };
  } else {
    const colon = rest.lastIndexOf(":");
    hostPart = colon < 0 ? rest : rest.slice(0, colon);
    if (colon >= 0) portPart = rest.slice(colon + 1);
  }

  const h = checkHost(hostPart, false);
  if ("why" in h) return h;
  let p: number;
  if (portPart === null) {
    if (scheme === null) return { why: "has no port" };
    p = scheme === "https" ? 443 : 80;
  } else {
    const ok = /^[0-9]+$/.test(portPart) && portPart.length <= 5 ? Number(portPart) : 0;
    if (!(ok >= 1 && ok <= 65535)) return { why: `has port ${quote(portPart)}, not 1-65535` };
    p = ok;
  }
  return { host: h.host, port: p, scheme };
}

/** A host:port key that two spellings of one address share. */
export function endpointKey(e: Endpoint): string {
  // URL parsing canonicalizes IPv6 ("0:0::1" and "::1" are the same backend).
  const host = e.host.includes(":") ? new URL(`http://[${e.host}]`).hostname : e.host.toLowerCase();
  return `${host}:${e.port}`;
}

/** How to write an endpoint's host in a URL or host:port string. */
export function hostForUrl(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/** The file must be there and readable now, so a typo fails at startup, not at first reload. */
export function readableFile(flag: string, raw: string): string {
  if (raw === "") throw new CliError(`${flag}: "" is not a file path (a readable regular file)`);
  let st: Stats;
  try {
    st = statSync(raw);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" || code === "ENOTDIR" ? "does not exist" : `cannot be read (${code})`;
    throw new CliError(`${flag}: ${quote(raw)} ${why} (a readable regular file)`);
  }
  if (!st.isFile())
    throw new CliError(`${flag}: ${quote(raw)} is not a regular file (a readable regular file)`);
  try {
    accessSync(raw, constants.R_OK);
  } catch {
    throw new CliError(`${flag}: ${quote(raw)} is not readable (a readable regular file)`);
  }
  // Absolute, so a later chdir or a worker started elsewhere still finds the same file.
  return resolve(raw);
}

/** Visible ASCII only: a path with spaces or control characters cannot appear in a request line. */
const PATH_RE = /^\/[\x21-\x7e]*$/;

export function urlPath(flag: string, raw: string, allowQuery: boolean): string {
  const bad =
    !PATH_RE.test(raw) ||
    raw.length > URI_BYTES_MAX ||
    raw.includes("#") ||
    (!allowQuery && raw.includes("?"));
  if (bad) {
    const what = allowQuery
      ? "starting with / (visible ASCII)"
      : "starting with / (visible ASCII, no ? or #)";
    throw new CliError(`${flag}: ${quote(raw)} is not a path ${what}`);
  }
  return raw;
}

/** RFC 6265 cookie-name = RFC 9110 token. */
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export function cookieName(flag: string, raw: string, max: number): string {
  if (!TOKEN_RE.test(raw) || raw.length > max) {
    throw new CliError(
      `${flag}: ${quote(raw)} is not a cookie name (1-${max} letters, digits or !#$%&'*+-.^_\`|~)`,
    );
  }
  return raw;
}

/** Optimal string alignment distance: a swapped pair of letters ("--prot") counts as one edit. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    const row: number[] = [];
    for (let j = 0; j <= b.length; j++) {
      if (i === 0 || j === 0) {
        row.push(i + j);
        continue;
      }
      const prev = d[i - 1]!;
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        v = Math.min(v, d[i - 2]![j - 2]! + 1);
      row.push(v);
    }
    d.push(row);
  }
  return d[a.length]![b.length]!;
}
