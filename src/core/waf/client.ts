// Client identity for the WAF: IP parsing, CIDR matching and X-Forwarded-For resolution.
//
// Every address lives in one 128-bit space as 4 big-endian uint32 words; IPv4 is stored
// v4-mapped (::ffff:a.b.c.d, RFC 4291 §2.5.5.2). One matcher then serves both families, and a
// dual-stack socket's "::ffff:10.0.0.1" peer is the same key as "10.0.0.1". Consequence: a v6
// CIDR that covers ::ffff:0:0/96 (e.g. "::/0") covers every IPv4 address too.

/** Words in one address (128 bits / 32). */
export const IP_WORDS = 4;
/** Longest prefix in the unified 128-bit space. */
export const CIDR_PREFIX_BITS_MAX = 128;
/** An IPv4 prefix p is the v4-mapped prefix 96 + p. */
const V4_MAPPED_PREFIX_BITS = 96;
/** Longest IPv6 text we parse ("ffff:...:ffff" with a dotted tail is 45); longer is garbage. */
export const IP_TEXT_CHARS_MAX = 45;
/** Port digits after an XFF entry ("65535"). */
const PORT_DIGITS_MAX = 5;
const PORT_MAX = 65_535;

/** An address as 4 big-endian uint32 words (length IP_WORDS). Also the rate-limit table's key. */
export type IpWords = Uint32Array;

/** A network in the unified space: host bits of `words` are zero; `prefix` is 0..128. */
export interface Cidr {
  readonly words: Uint32Array;
  readonly prefix: number;
}

const CH_0 = 48;
const CH_9 = 57;
const CH_DOT = 46;
const CH_COLON = 58;
const CH_COMMA = 44;
const CH_SPACE = 32;
const CH_TAB = 9;
const CH_LBRACKET = 91;
const CH_RBRACKET = 93;

function hexValue(c: number): number {
  if (c >= CH_0 && c <= CH_9) return c - CH_0;
  const lower = c | 0x20;
  if (lower >= 97 && lower <= 102) return lower - 87;
  return -1;
}

/**
 * Dotted-quad text[start, end) -> uint32, or -1. Strict like inet_pton: exactly four decimal
 * octets, no leading zeros (inet_aton would read "010" as octal: two parsers, two answers).
 */
function parseV4(text: string, start: number, end: number): number {
  let value = 0;
  let octets = 0;
  let i = start;
  while (octets < 4) {
    const first = i;
    let octet = 0;
    while (i < end) {
      const c = text.charCodeAt(i);
      if (c < CH_0 || c > CH_9) break;
      octet = octet * 10 + (c - CH_0);
      i++;
      if (i - first > 3) return -1;
    }
    const digits = i - first;
    if (digits === 0 || octet > 255) return -1;
    if (digits > 1 && text.charCodeAt(first) === CH_0) return -1;
    value = value * 256 + octet;
    octets++;
    if (octets < 4) {
      if (i >= end || text.charCodeAt(i) !== CH_DOT) return -1;
      i++;
    }
  }
  return i === end ? value >>> 0 : -1;
}

/** 16-bit groups of the address being parsed (module scratch: parsing never re-enters). */
const groups = new Uint16Array(8);

function storeGroups(out: Uint32Array): void {
  for (let w = 0; w < IP_WORDS; w++) out[w] = ((groups[2 * w]! << 16) | groups[2 * w + 1]!) >>> 0;
}

/** IPv6 text[start, end) (RFC 4291 §2.2, optional dotted tail; no zone id) into out. */
function parseV6(text: string, start: number, end: number, out: Uint32Array): boolean {
  let count = 0;
  let gap = -1; // group index where "::" sits
  let i = start;
  if (i < end && text.charCodeAt(i) === CH_COLON) {
    if (i + 1 >= end || text.charCodeAt(i + 1) !== CH_COLON) return false;
    gap = 0;
    i += 2;
    if (i === end) {
      groups.fill(0);
      storeGroups(out);
      return true;
    }
  }
  for (;;) {
    const first = i;
    let value = 0;
    while (i < end && i - first < 5) {
      const h = hexValue(text.charCodeAt(i));
      if (h < 0) break;
      value = value * 16 + h;
      i++;
    }
    const digits = i - first;
    if (i < end && text.charCodeAt(i) === CH_DOT) {
      // Dotted IPv4 tail: the last 32 bits.
      if (digits === 0 || count > 6) return false;
      const v4 = parseV4(text, first, end);
      if (v4 < 0) return false;
      groups[count++] = v4 >>> 16;
      groups[count++] = v4 & 0xffff;
      i = end;
      break;
    }
    if (digits === 0 || digits > 4 || count >= 8) return false;
    groups[count++] = value;
    if (i === end) break;
    if (text.charCodeAt(i) !== CH_COLON) return false; // includes "%zone"
    i++;
    if (i < end && text.charCodeAt(i) === CH_COLON) {
      if (gap >= 0) return false; // a second "::"
      gap = count;
      i++;
      if (i === end) break;
    } else if (i === end) {
      return false; // trailing single ":"
    }
  }
  if (gap < 0) {
    if (count !== 8) return false;
  } else {
    if (count > 7) return false; // "::" must stand for at least one group (RFC 4291)
    const tail = count - gap;
    for (let k = 1; k <= tail; k++) groups[8 - k] = groups[count - k]!;
    for (let k = gap; k < 8 - tail; k++) groups[k] = 0;
  }
  storeGroups(out);
  return true;
}

/**
 * Parses a bare address text[start, end) (IPv4 dotted or IPv6 text) into out. No brackets,
 * ports or zone ids. Returns false (out unspecified) on anything else.
 */
export function parseIpInto(text: string, start: number, end: number, out: Uint32Array): boolean {
  if (end - start < 2 || end - start > IP_TEXT_CHARS_MAX) return false;
  let colons = false;
  for (let i = start; i < end; i++) {
    if (text.charCodeAt(i) === CH_COLON) {
      colons = true;
      break;
    }
  }
  if (colons) return parseV6(text, start, end, out);
  return storeV4Mapped(parseV4(text, start, end), out);
}

/** An IPv4 address (or -1 for none) as its v4-mapped IPv6 words ::ffff:a.b.c.d; false for -1. */
function storeV4Mapped(v4: number, out: Uint32Array): boolean {
  if (v4 < 0) return false;
  out[0] = 0;
  out[1] = 0;
  out[2] = 0xffff;
  out[3] = v4;
  return true;
}

/** Parses a bare IPv4 or IPv6 address; null if it is not one. */
export function parseIp(text: string): IpWords | null {
  const out = new Uint32Array(IP_WORDS);
  return parseIpInto(text, 0, text.length, out) ? out : null;
}

function isV4Mapped(words: Uint32Array): boolean {
  return words[0] === 0 && words[1] === 0 && words[2] === 0xffff;
}

/**
 * Canonical text: IPv4 (and v4-mapped IPv6) dotted; IPv6 per RFC 5952 (lowercase, no leading
 * zeros, the longest run of two or more zero groups - the first on a tie - shown as "::").
 */
export function formatIp(words: Uint32Array): string {
  if (isV4Mapped(words)) {
    const v = words[3]!;
    return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
  }
  for (let w = 0; w < IP_WORDS; w++) {
    groups[2 * w] = words[w]! >>> 16;
    groups[2 * w + 1] = words[w]! & 0xffff;
  }
  let bestStart = -1;
  let bestLen = 1; // a single zero group is never compressed (RFC 5952 §4.2.2)
  for (let k = 0; k < 8; ) {
    if (groups[k] !== 0) {
      k++;
      continue;
    }
    const runStart = k;
    while (k < 8 && groups[k] === 0) k++;
    if (k - runStart > bestLen) {
      bestLen = k - runStart;
      bestStart = runStart;
    }
  }
  let s = "";
  for (let k = 0; k < 8; k++) {
    if (k === bestStart) {
      s += "::";
      k += bestLen - 1;
      continue;
    }
    if (s !== "" && !s.endsWith(":")) s += ":";
    s += groups[k]!.toString(16);
  }
  return s;
}

/**
 * Parses "a.b.c.d/p" (p 0..32), "v6/p" (p 0..128), or a bare address (a host route). Host bits
 * set below the prefix are cleared, as nginx's set_real_ip_from does ("10.1.2.3/8" is
 * 10.0.0.0/8); a config validator that wants to warn can compare against parseIp of the base.
 */
export function parseCidr(text: string): Cidr | null {
  const slash = text.indexOf("/");
  const end = slash < 0 ? text.length : slash;
  const words = new Uint32Array(IP_WORDS);
  let v4 = true;
  for (let i = 0; i < end; i++) if (text.charCodeAt(i) === CH_COLON) v4 = false;
  if (!parseIpInto(text, 0, end, words)) return null;
  let prefix = CIDR_PREFIX_BITS_MAX;
  if (slash >= 0) {
    const digits = text.length - slash - 1;
    if (digits < 1 || digits > 3) return null;
    prefix = 0;
    for (let i = slash + 1; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c < CH_0 || c > CH_9) return null;
      prefix = prefix * 10 + (c - CH_0);
    }
    if (digits > 1 && text.charCodeAt(slash + 1) === CH_0) return null;
    if (prefix > (v4 ? 32 : CIDR_PREFIX_BITS_MAX)) return null;
    if (v4) prefix += V4_MAPPED_PREFIX_BITS;
  }
  for (let w = 0; w < IP_WORDS; w++) words[w] = words[w]! & maskWord(prefix, w);
  return { words, prefix };
}

/** The mask for word w of a prefix. */
function maskWord(prefix: number, w: number): number {
  const bits = prefix - 32 * w;
  if (bits <= 0) return 0;
  if (bits >= 32) return 0xffffffff;
  return (0xffffffff << (32 - bits)) >>> 0;
}

export function cidrContains(cidr: Cidr, ip: Uint32Array): boolean {
  const base = cidr.words;
  for (let w = 0; w < IP_WORDS; w++) {
    const mask = maskWord(cidr.prefix, w);
    if (mask === 0) return true;
    if ((ip[w]! & mask) >>> 0 !== base[w]) return false;
  }
  return true;
}

export function inAnyCidr(cidrs: readonly Cidr[], ip: Uint32Array): boolean {
  for (let k = 0; k < cidrs.length; k++) if (cidrContains(cidrs[k]!, ip)) return true;
  return false;
}

function parsePort(text: string, start: number, end: number): boolean {
  const digits = end - start;
  if (digits < 1 || digits > PORT_DIGITS_MAX) return false;
  let port = 0;
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c < CH_0 || c > CH_9) return false;
    port = port * 10 + (c - CH_0);
  }
  return port <= PORT_MAX;
}

/**
 * One X-Forwarded-For entry text[start, end) (already trimmed) into out. Accepted forms: bare
 * IPv4 or IPv6, "a.b.c.d:port", "[v6]" and "[v6]:port". Anything else ("unknown", zone ids,
 * hostnames, "[1.2.3.4]") is garbage and returns false.
 */
export function parseXffEntryInto(text: string, start: number, end: number, out: Uint32Array): boolean {
  if (start >= end) return false;
  if (text.charCodeAt(start) === CH_LBRACKET) {
    let close = -1;
    for (let i = start + 1; i < end; i++) {
      if (text.charCodeAt(i) === CH_RBRACKET) {
        close = i;
        break;
      }
    }
    if (close < 0) return false;
    if (close + 1 < end && (text.charCodeAt(close + 1) !== CH_COLON || !parsePort(text, close + 2, end))) {
      return false;
    }
    let hasColon = false;
    for (let i = start + 1; i < close; i++) if (text.charCodeAt(i) === CH_COLON) hasColon = true;
    return hasColon && parseV6(text, start + 1, close, out);
  }
  let colons = 0;
  let lastColon = -1;
  for (let i = start; i < end; i++) {
    if (text.charCodeAt(i) === CH_COLON) {
      colons++;
      lastColon = i;
    }
  }
  if (colons === 1) {
    // One colon can only be IPv4 with a port (IPv6 text has at least two).
    if (!parsePort(text, lastColon + 1, end)) return false;
    return storeV4Mapped(parseV4(text, start, lastColon), out);
  }
  return parseIpInto(text, start, end, out);
}

const peerScratch = new Uint32Array(IP_WORDS);
const entryScratch = new Uint32Array(IP_WORDS);

function isOws(c: number): boolean {
  return c === CH_SPACE || c === CH_TAB;
}

/**
 * The client address as words, written to out; false only when the peer text itself is not an
 * address (then out is unspecified and the caller keys on the peer text).
 *
 * An untrusted peer is the client, whatever it sends. A trusted peer's X-Forwarded-For lines are
 * read as one list in line order and walked from the right: trusted entries are our own proxy
 * hops, garbage entries are skipped, and the first valid untrusted entry is the client. If every
 * valid entry is trusted, the leftmost valid one is the client (nginx real_ip_recursive does the
 * same): it is the hop furthest from us that our own proxies vouch for. With no valid entry at
 * all, the peer is the client. The walk is O(header bytes), bounded by HEADER_BYTES_MAX.
 */
export function resolveClientInto(
  peerIp: string,
  xffHeaderValues: readonly string[],
  trusted: readonly Cidr[],
  out: Uint32Array,
): boolean {
  if (!parseXffEntryInto(peerIp, 0, peerIp.length, peerScratch)) return false;
  out.set(peerScratch);
  if (trusted.length === 0 || !inAnyCidr(trusted, peerScratch)) return true;
  for (let line = xffHeaderValues.length - 1; line >= 0; line--) {
    const value = xffHeaderValues[line]!;
    let end = value.length;
    while (end > 0) {
      let start = end;
      while (start > 0 && value.charCodeAt(start - 1) !== CH_COMMA) start--;
      const next = start - 1; // the comma before this entry (or -1)
      let s = start;
      let e = end;
      while (s < e && isOws(value.charCodeAt(s))) s++;
      while (e > s && isOws(value.charCodeAt(e - 1))) e--;
      if (parseXffEntryInto(value, s, e, entryScratch)) {
        out.set(entryScratch);
        if (!inAnyCidr(trusted, entryScratch)) return true;
      }
      end = next;
    }
  }
  return true;
}

const clientScratch = new Uint32Array(IP_WORDS);

/**
 * The client IP as canonical text (see resolveClientInto for the rules). A peer that is not an
 * address (a unix socket name, say) is returned as given.
 */
export function resolveClient(
  peerIp: string,
  xffHeaderValues: readonly string[],
  trusted: readonly Cidr[],
): string {
  if (!resolveClientInto(peerIp, xffHeaderValues, trusted, clientScratch)) return peerIp;
  return formatIp(clientScratch);
}

/**
 * A 32-bit hash of an address for open-addressing tables (murmur3 fmix over the 4 words), so
 * the rate-limit table hashes a client without string work. `seed` lets a table vary it.
 */
export function ipWordsHash32(words: Uint32Array, seed: number): number {
  let h = seed >>> 0;
  for (let w = 0; w < IP_WORDS; w++) {
    let k = Math.imul(words[w]!, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, 0x1b873593);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
