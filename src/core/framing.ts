// Request-framing checks run on every client request before anything is forwarded.
//
// Bun.serve (1.4.5) already rejects most malformed requests on the wire, before our fetch handler runs
// (see docs/bun-serve-framing.md). This module refuses what Bun lets through but a reverse proxy must not
// forward: duplicate Content-Length merged into "5, 5", duplicate or malformed Host, bodies Bun discards
// (GET/HEAD), CONNECT, fragments, and request lines or header blocks over our own (smaller) limits.
// It also re-checks what Bun should have caught (CL+TE, bad codings) so that a Bun upgrade cannot silently
// open a smuggling hole.
//
// What it sees is what Bun's Request exposes: the method, req.url (absolute "http://host/path" built from
// Host, or origin-form "/path" when Host is missing or unusable), and req.headers (lower-case names, values
// with outer whitespace trimmed, repeated fields merged with ", " or "; " for Cookie). The HTTP version is
// not exposed; a request without Host can only be HTTP/1.0, since Bun answers 400 to HTTP/1.1 without Host.

import {
  HEADER_BYTES_MAX,
  HEADER_LINES_MAX,
  HOST_LEN_MAX,
  REQUEST_BODY_BYTES_MAX,
  URI_BYTES_MAX,
} from "./limits.ts";

export type FramingVerdict =
  | { ok: true }
  | { ok: false; status: 400 | 411 | 413 | 414 | 431 | 501; reason: string };

const OK: FramingVerdict = { ok: true };

/** RFC 9110 token. */
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** RFC 9110 Content-Length = 1*DIGIT (Bun has already trimmed OWS). */
const DIGITS_RE = /^[0-9]+$/;
/**
 * Host = uri-host [ ":" port ]. Stricter than RFC 3986 on purpose: no "%" (Bun decodes it in req.url, so the
 * header and the URL would disagree), no "," (two Host lines arrive merged as "a, b"), no "@", "/", space.
 */
const HOST_RE = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+;=-]+)(?::[0-9]{1,5})?$/;
const BODY_MAX_DIGITS = String(REQUEST_BODY_BYTES_MAX);
/** "HTTP/1.1" plus two spaces and CRLF around method and target in the request line. */
const REQUEST_LINE_OVERHEAD_BYTES = 12;
/** ": " after the name and CRLF after the value. */
const FIELD_OVERHEAD_BYTES = 4;

function fail(status: 400 | 411 | 413 | 414 | 431 | 501, reason: string): FramingVerdict {
  return { ok: false, status, reason };
}

/** A request's header fields as Headers.toJSON() gives them: lower-case names, repeated fields merged. */
export type RequestFields = Record<string, string | string[]>;

/**
 * 431 reason if the header block is over our limits, else null. Sizes are approximate: Bun merges
 * repeated fields, so they count once. (Bun itself stops at 198 lines; the line check guards upgrades.)
 */
function headerBlockProblem(fields: RequestFields, requestLineBytes: number): string | null {
  let bytes = requestLineBytes;
  let lines = 0;
  for (const name in fields) {
    const value = fields[name]!;
    lines++;
    bytes +=
      name.length +
      FIELD_OVERHEAD_BYTES +
      (typeof value === "string" ? value.length : value.join(", ").length);
  }
  if (bytes > HEADER_BYTES_MAX) return "header block too large";
  if (lines > HEADER_LINES_MAX) return "too many header fields";
  return null;
}

function one(fields: RequestFields, name: string): string | null {
  const v = fields[name];
  return v === undefined ? null : typeof v === "string" ? v : v.join(", ");
}

/**
 * Decides whether a request that Bun.serve accepted may be forwarded.
 * `url` is req.url, `fields` is req.headers.toJSON(). Never throws; does not read the body.
 * On { ok: false } answer `status` with "Connection: close" and forward nothing.
 */
export function checkRequestFraming(method: string, url: string, fields: RequestFields): FramingVerdict {
  // Bun hands CONNECT to the handler and then stops parsing HTTP on the connection; a reverse proxy has
  // no tunnel to offer.
  if (method === "CONNECT") return fail(501, "CONNECT is not supported");

  const targetStart = requestTargetStart(url);
  const targetBytes = url.length - targetStart;
  if (targetBytes > URI_BYTES_MAX) return fail(414, "request-target too long");
  if (url.indexOf("#", targetStart) !== -1) return fail(400, "fragment in request-target");

  const tooBig = headerBlockProblem(fields, method.length + targetBytes + REQUEST_LINE_OVERHEAD_BYTES);
  if (tooBig !== null) return fail(431, tooBig);
  const host = one(fields, "host");
  const te = one(fields, "transfer-encoding");
  const cl = one(fields, "content-length");

  // A missing Host means HTTP/1.0 (Bun rejects HTTP/1.1 without Host); that is allowed.
  if (host !== null) {
    const hostVerdict = checkHost(host);
    if (hostVerdict !== OK) return hostVerdict;
  }

  const bodyless = method === "GET" || method === "HEAD";
  if (te !== null) {
    if (cl !== null) return fail(400, "both Content-Length and Transfer-Encoding");
    const teVerdict = checkTransferEncoding(te);
    if (teVerdict !== OK) return teVerdict;
    // Bun reads and discards a GET/HEAD body: forwarding the framing header without it would desync.
    if (bodyless) return fail(400, `body on ${method} is not supported`);
    return OK;
  }
  if (cl !== null) {
    if (!DIGITS_RE.test(cl)) {
      return fail(400, cl.indexOf(",") === -1 ? "invalid Content-Length" : "duplicate Content-Length");
    }
    let first = 0; // skip leading zeros, keep the last digit
    while (first < cl.length - 1 && cl.charCodeAt(first) === 0x30) first++;
    const digits = cl.length - first;
    if (
      digits > BODY_MAX_DIGITS.length ||
      (digits === BODY_MAX_DIGITS.length && cl.slice(first) > BODY_MAX_DIGITS)
    ) {
      return fail(413, "Content-Length over the request body limit");
    }
    if (bodyless && !(digits === 1 && cl.charCodeAt(first) === 0x30)) {
      return fail(400, `body on ${method} is not supported`);
    }
  }
  return OK;
}

/** Index in req.url where the request-target (path and query) starts. */
function requestTargetStart(url: string): number {
  if (url.charCodeAt(0) === 0x2f) return 0; // origin-form: no usable Host
  const scheme = url.indexOf("://");
  if (scheme === -1) return 0;
  const slash = url.indexOf("/", scheme + 3);
  return slash === -1 ? url.length : slash;
}

function checkHost(host: string): FramingVerdict {
  if (host.length === 0) return fail(400, "empty Host");
  if (!HOST_RE.test(host)) {
    return fail(400, host.indexOf(",") === -1 ? "invalid Host" : "duplicate Host");
  }
  // HOST_RE guarantees any ":" outside brackets starts a 1-5 digit port.
  const bracket = host.lastIndexOf("]");
  const colon = host.indexOf(":", bracket + 1);
  const nameBytes = colon === -1 ? host.length : colon;
  if (nameBytes > HOST_LEN_MAX) return fail(400, "Host name too long");
  if (colon !== -1 && host.length - colon - 1 === 5 && host.slice(colon + 1) > "65535") {
    return fail(400, "Host port out of range");
  }
  return OK;
}

/**
 * RFC 9112 §6.1, §6.3: chunked must be the final coding and appear once, else the body length is unknown
 * (400). A list ending in chunked with other codings before it is well framed but not understood (501).
 */
function checkTransferEncoding(te: string): FramingVerdict {
  if (te.length === 7 && te.toLowerCase() === "chunked") return OK;
  const elements = te.split(",");
  let last = -1;
  for (let i = elements.length - 1; i >= 0; i--) {
    if (trimOws(elements[i] ?? "").length > 0) {
      last = i;
      break;
    }
  }
  if (last === -1) return fail(400, "empty Transfer-Encoding");
  let unknown = false;
  for (let i = 0; i <= last; i++) {
    const element = trimOws(elements[i] ?? "");
    if (element.length === 0) continue; // RFC 9110 §5.6.1: empty list elements are ignored
    const semicolon = element.indexOf(";");
    const name = semicolon === -1 ? element : trimOws(element.slice(0, semicolon));
    if (!TOKEN_RE.test(name)) return fail(400, "malformed Transfer-Encoding");
    const isChunked = name.toLowerCase() === "chunked";
    if (i === last) {
      if (!isChunked) return fail(400, "final transfer-coding is not chunked");
      if (semicolon !== -1) return fail(400, "malformed Transfer-Encoding");
    } else if (isChunked) {
      return fail(400, "chunked is not the final transfer-coding");
    } else {
      unknown = true;
    }
  }
  return unknown ? fail(501, "unsupported transfer-coding") : OK;
}

function trimOws(s: string): string {
  let start = 0;
  let end = s.length;
  while (start < end && isOws(s.charCodeAt(start))) start++;
  while (end > start && isOws(s.charCodeAt(end - 1))) end--;
  return start === 0 && end === s.length ? s : s.slice(start, end);
}

function isOws(c: number): boolean {
  return c === 0x20 || c === 0x09;
}
