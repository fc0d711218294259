// Header hygiene for both directions (RFC 9110 §7.6.1): hop-by-hop fields, and the fields named
// in Connection, belong to one connection and are never forwarded.

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/**
 * Request fields the proxy writes itself rather than copying: Host (policy), framing (we frame
 * the body we send), the X-Forwarded-* set, and Expect (the 100-continue exchange with the client
 * already happened in Bun.serve; the body is sent unconditionally).
 */
const REQUEST_OWN = new Set([
  "host",
  "content-length",
  "expect",
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
]);

/** Lower-cased field names listed in a Connection value ("close, X-Foo" -> {"x-foo"}); null if none. */
export function connectionListed(value: string | undefined | null): Set<string> | null {
  if (!value) return null;
  let out: Set<string> | null = null;
  for (const part of value.split(",")) {
    const name = part.trim().toLowerCase();
    if (name === "" || name === "close" || name === "keep-alive") continue;
    out ??= new Set();
    out.add(name);
  }
  return out;
}

export type BodyFraming = "none" | "length" | "chunked";

/** Methods whose requests carry content by definition (RFC 9110 §9.3). */
const CONTENT_METHODS = new Set(["POST", "PUT", "PATCH"]);

export interface RequestHeadInput {
  method: string;
  /** Client's Host, for X-Forwarded-Host ("" if absent). */
  clientHost: string;
  clientIp: string;
  proto: "http" | "https";
  framing: BodyFraming;
  /** Decimal digits, valid when framing is "length". */
  contentLength: string;
}

/**
 * The header lines sent upstream after the request line and Host (which depends on the backend),
 * ending with the blank line. `fields` is a plain object of lower-cased names to values
 * (Headers.toJSON()): repeated fields arrive already combined by the server (RFC 9110 §5.3).
 */
export function forwardedFields(input: RequestHeadInput, fields: Record<string, string | string[]>): string {
  let head = "";
  const listed = connectionListed(fields.connection as string | undefined);
  for (const name in fields) {
    if (REQUEST_OWN.has(name) || HOP_BY_HOP.has(name) || listed?.has(name)) continue;
    const value = fields[name]!;
    if (typeof value === "string") head += `${name}: ${value}\r\n`;
    else for (const v of value) head += `${name}: ${v}\r\n`;
  }
  const xff = fields["x-forwarded-for"];
  head += `x-forwarded-for: ${xff ? `${xff}, ${input.clientIp}` : input.clientIp}\r\n`;
  head += `x-forwarded-proto: ${input.proto}\r\n`;
  if (input.clientHost) head += `x-forwarded-host: ${input.clientHost}\r\n`;
  if (input.framing === "length") head += `content-length: ${input.contentLength}\r\n`;
  else if (input.framing === "chunked") head += "transfer-encoding: chunked\r\n";
  // RFC 9110 §8.6: a request whose method defines content SHOULD say its length even when it is 0;
  // many backends answer 411 to a POST without Content-Length.
  else if (CONTENT_METHODS.has(input.method)) head += "content-length: 0\r\n";
  return head + "\r\n";
}

export interface ResponseFields {
  /** For ResponseInit.headers, in wire order. */
  pairs: [string, string][];
  hasContentType: boolean;
}

/** Response fields to pass to the client, from the parser's flat [name, value, ...] list. */
export function responseFields(flat: readonly string[]): ResponseFields {
  let listed: Set<string> | null = null;
  for (let i = 0; i < flat.length; i += 2) {
    if (flat[i]!.toLowerCase() === "connection") {
      const more = connectionListed(flat[i + 1]);
      if (more) listed = listed ? new Set([...listed, ...more]) : more;
    }
  }
  const pairs: [string, string][] = [];
  let hasContentType = false;
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || listed?.has(lower)) continue;
    if (lower === "content-type") hasContentType = true;
    pairs.push([name, flat[i + 1]!]);
  }
  return { pairs, hasContentType };
}
