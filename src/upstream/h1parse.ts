// Strict, incremental HTTP/1.1 response parser for bytes coming from backends (RFC 9112 §2-7, RFC 9110 §5).
// It sits on the proxy hot path, so it scans bytes directly with lookup tables, decodes only the head region
// into one latin1 string, and allocates nothing per header besides the strings it returns. Anything that
// could make us and the backend disagree on where a response ends (smuggling / desync) is rejected.
import { CHUNK_LINE_BYTES_MAX, CHUNK_SIZE_MAX, HEADER_BYTES_MAX, HEADER_LINES_MAX } from "../core/limits.ts";

export class H1ParseError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "H1ParseError";
  }
}

export interface ResponseHead {
  status: number;
  reason: string;
  /** Flat list in wire order: [name0, value0, name1, value1, ...]; names as received, values trimmed of OWS. */
  headers: string[];
  /** Body framing decided per RFC 9112 §6.3 for a response to the request method. */
  framing: "none" | "length" | "chunked" | "close";
  /** Valid when framing === "length", else -1. */
  contentLength: number;
  /** False for HTTP/1.0 without "Connection: keep-alive", Connection: close, framing "close", 101, CONNECT 2xx. */
  keepAlive: boolean;
  /** Bytes consumed for status line + headers + final CRLF. */
  headBytes: number;
}

const HTAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const DQUOTE = 0x22;
const COMMA = 0x2c;
const SEMI = 0x3b;
const COLON = 0x3a;
const EQUALS = 0x3d;
const BACKSLASH = 0x5c;
const DIGIT0 = 0x30;

// Character classes (bit flags), one table lookup per byte.
const C_TCHAR = 1; // RFC 9110 §5.6.2 tchar
const C_FVAL = 2; // field-value byte: VCHAR / obs-text / SP / HTAB (RFC 9110 §5.5)
const C_QDTEXT = 4; // RFC 9110 §5.6.4 qdtext: HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
const CLASS = new Uint8Array(256);
for (let b = 0; b < 256; b++) {
  let f = 0;
  if (b === HTAB || b === SP || (b >= 0x21 && b <= 0x7e) || b >= 0x80) f |= C_FVAL;
  if (
    b === HTAB ||
    b === SP ||
    b === 0x21 ||
    (b >= 0x23 && b <= 0x5b) ||
    (b >= 0x5d && b <= 0x7e) ||
    b >= 0x80
  ) {
    f |= C_QDTEXT;
  }
  CLASS[b] = f;
}
for (const ch of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  CLASS[ch.charCodeAt(0)]! |= C_TCHAR;
}

/** Hex digit value, or -1. */
const HEXVAL = new Int8Array(256).fill(-1);
for (let i = 0; i < 16; i++) {
  HEXVAL["0123456789abcdef".charCodeAt(i)] = i;
  HEXVAL["0123456789ABCDEF".charCodeAt(i)] = i;
}

const bytesOf = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
const L_CONNECTION = bytesOf("connection");
const L_CONTENT_LENGTH = bytesOf("content-length");
const L_TRANSFER_ENCODING = bytesOf("transfer-encoding");
const L_CLOSE = bytesOf("close");
const L_KEEP_ALIVE = bytesOf("keep-alive");
const L_CHUNKED = bytesOf("chunked");
const HTTP_1_PREFIX = bytesOf("HTTP/1.");

// Buffer#latin1Slice maps byte n to U+00nn (lossless, so values re-encode byte-for-byte) and works on any
// Uint8Array in Bun. TextDecoder("latin1") is windows-1252 per WHATWG and would corrupt 0x80-0x9f.
type Latin1Slice = (this: Uint8Array, start: number, end: number) => string;
const nativeLatin1 = (Buffer.prototype as unknown as { latin1Slice?: Latin1Slice }).latin1Slice;
const latin1Slice: Latin1Slice =
  typeof nativeLatin1 === "function"
    ? nativeLatin1
    : function (this: Uint8Array, start: number, end: number): string {
        let s = "";
        for (let i = start; i < end; i += 4096) {
          const sub = this.subarray(i, Math.min(end, i + 4096));
          s += String.fromCharCode.apply(null, sub as unknown as number[]);
        }
        return s;
      };

/**
 * True if buf[from..to) equals `lower` ignoring ASCII case. Callers only pass tchar bytes and lowercase
 * letters/'-' in `lower`; `| 0x20` can only turn an uppercase letter into its lowercase form there.
 */
function eqLower(buf: Uint8Array, from: number, to: number, lower: Uint8Array): boolean {
  const n = lower.length;
  if (to - from !== n) return false;
  for (let i = 0; i < n; i++) if ((buf[from + i]! | 0x20) !== lower[i]) return false;
  return true;
}

// Field offsets of the head being parsed: [nameStart, nameEnd, valueStart, valueEnd] per field. Parsing is
// synchronous and never re-entered, so one module-level scratch array serves every call without allocating.
const fieldOffsets = new Int32Array(HEADER_LINES_MAX * 4);

// Framing facts gathered while scanning fields (module-level for the same reason; reset on every call).
let clValue = -1;
let teSeen = false;
let teChunkedFinal = false;
let teChunkedCount = 0;
let connClose = false;
let connKeepAlive = false;

function fail(code: string, message: string): never {
  throw new H1ParseError(code, message);
}

/** Content-Length (RFC 9110 §8.6): 1*DIGIT, or a list of identical values. Digits accumulated by hand. */
function scanContentLength(buf: Uint8Array, p: number, end: number): void {
  if (p === end) fail("bad_content_length", "empty Content-Length");
  for (;;) {
    let v = 0;
    const digitsStart = p;
    while (p < end) {
      const d = buf[p]! - DIGIT0;
      if (d < 0 || d > 9) break;
      v = v * 10 + d;
      // Any true value above 2^53-1 is still > MAX_SAFE_INTEGER after float rounding, so this is exact.
      if (v > Number.MAX_SAFE_INTEGER) fail("bad_content_length", "Content-Length too large");
      p++;
    }
    if (p === digitsStart) fail("bad_content_length", "Content-Length is not 1*DIGIT");
    if (clValue !== -1 && clValue !== v) fail("bad_content_length", "differing Content-Length values");
    clValue = v;
    while (p < end && (buf[p] === SP || buf[p] === HTAB)) p++;
    if (p === end) return;
    // Only a comma may follow a number; an empty list element is refused (no lenient guessing on framing).
    if (buf[p] !== COMMA) fail("bad_content_length", "Content-Length is not 1*DIGIT");
    p++;
    while (p < end && (buf[p] === SP || buf[p] === HTAB)) p++;
  }
}

/** Connection (RFC 9110 §7.6.1): comma-separated, case-insensitive options; only close/keep-alive matter. */
function scanConnection(buf: Uint8Array, p: number, end: number): void {
  while (p < end) {
    let q = p;
    while (q < end && buf[q] !== COMMA) q++;
    let e = q;
    while (p < e && (buf[p] === SP || buf[p] === HTAB)) p++;
    while (e > p && (buf[e - 1] === SP || buf[e - 1] === HTAB)) e--;
    if (eqLower(buf, p, e, L_CLOSE)) connClose = true;
    else if (eqLower(buf, p, e, L_KEEP_ALIVE)) connKeepAlive = true;
    p = q + 1;
  }
}

/**
 * Transfer-Encoding (RFC 9112 §6.1): #transfer-coding, transfer-coding = token *( OWS ";" OWS param ).
 * Parsed properly (quoted strings included) so a comma inside a parameter cannot fake a final "chunked".
 * Across several fields the list continues, so the state lives in teChunkedFinal / teChunkedCount.
 */
function scanTransferEncoding(buf: Uint8Array, p: number, end: number): void {
  teSeen = true;
  // Fast path: the overwhelmingly common exact value.
  if (eqLower(buf, p, end, L_CHUNKED)) {
    teChunkedCount++;
    teChunkedFinal = true;
    if (teChunkedCount > 1) fail("unsupported_transfer_coding", "chunked applied more than once");
    return;
  }
  let codings = 0;
  while (p < end) {
    // Empty list elements are ignored (RFC 9110 §5.6.1).
    const c0 = buf[p]!;
    if (c0 === SP || c0 === HTAB || c0 === COMMA) {
      p++;
      continue;
    }
    const nameStart = p;
    while (p < end && CLASS[buf[p]!]! & C_TCHAR) p++;
    if (p === nameStart) fail("unsupported_transfer_coding", "bad transfer-coding syntax");
    const isChunked = eqLower(buf, nameStart, p, L_CHUNKED);
    codings++;
    let hasParams = false;
    // Parameters: OWS ";" OWS token BWS "=" BWS ( token / quoted-string ).
    for (;;) {
      while (p < end && (buf[p] === SP || buf[p] === HTAB)) p++;
      if (p === end || buf[p] === COMMA) break;
      if (buf[p] !== SEMI) fail("unsupported_transfer_coding", "bad transfer-coding syntax");
      hasParams = true;
      p++;
      while (p < end && (buf[p] === SP || buf[p] === HTAB)) p++;
      const pn = p;
      while (p < end && CLASS[buf[p]!]! & C_TCHAR) p++;
      if (p === pn) fail("unsupported_transfer_coding", "bad transfer-coding parameter");
      while (p < end && (buf[p] === SP || buf[p] === HTAB)) p++;
      if (p === end || buf[p] !== EQUALS)
        fail("unsupported_transfer_coding", "bad transfer-coding parameter");
      p++;
      while (p < end && (buf[p] === SP || buf[p] === HTAB)) p++;
      if (p < end && buf[p] === DQUOTE) {
        p++;
        for (;;) {
          if (p === end) fail("unsupported_transfer_coding", "unterminated quoted-string");
          const c = buf[p]!;
          if (c === DQUOTE) break;
          if (c === BACKSLASH) {
            p++;
            if (p === end || !(CLASS[buf[p]!]! & C_FVAL))
              fail("unsupported_transfer_coding", "bad quoted-pair");
          } else if (!(CLASS[c]! & C_QDTEXT)) fail("unsupported_transfer_coding", "bad quoted-string");
          p++;
        }
        p++;
      } else {
        const pv = p;
        while (p < end && CLASS[buf[p]!]! & C_TCHAR) p++;
        if (p === pv) fail("unsupported_transfer_coding", "bad transfer-coding parameter");
      }
    }
    if (isChunked) {
      // chunked takes no parameters and must not be applied twice (RFC 9112 §7.1, §6.1).
      if (hasParams) fail("unsupported_transfer_coding", "chunked with parameters");
      if (++teChunkedCount > 1) fail("unsupported_transfer_coding", "chunked applied more than once");
    }
    teChunkedFinal = isChunked;
  }
  if (codings === 0) fail("unsupported_transfer_coding", "empty Transfer-Encoding");
}

/**
 * Parse a response head from buf[start..end). Returns null while the head is incomplete (call again with more
 * bytes appended). Throws H1ParseError on anything invalid or once the head would exceed maxHeadBytes.
 * HEAD responses and 1xx/204/304 (and 2xx to CONNECT) get framing "none" whatever their headers say.
 */
export function parseResponseHead(
  buf: Uint8Array,
  start: number,
  end: number,
  requestMethod: string,
  maxHeadBytes: number = HEADER_BYTES_MAX,
): ResponseHead | null {
  const avail = end - start;
  // Never look past the size limit: a head that has not ended by then is rejected, not buffered further.
  const limit = avail > maxHeadBytes ? start + maxHeadBytes : end;

  // --- status-line = HTTP-version SP 3DIGIT SP [ reason ] (RFC 9112 §4). Prefix checked early so a
  // non-HTTP peer fails on its first bytes instead of after 8 KiB.
  const pre = Math.min(avail, 9);
  for (let i = 0; i < pre; i++) {
    const b = buf[start + i]!;
    let ok: boolean;
    if (i < 7) ok = b === HTTP_1_PREFIX[i];
    else if (i === 7)
      ok = b === DIGIT0 + 1 || b === DIGIT0; // minor version: only 1.1 and 1.0 exist
    else ok = b === SP;
    if (!ok) fail("bad_status_line", "status line does not start with HTTP/1.1 or HTTP/1.0");
  }
  let status = 0;
  const digits = Math.min(avail, 12);
  for (let i = 9; i < digits; i++) {
    const d = buf[start + i]! - DIGIT0;
    if (d < 0 || d > 9) fail("bad_status_line", "status code is not 3 digits");
    status = status * 10 + d;
  }
  if (limit - start < 13) return incomplete(avail, maxHeadBytes);
  if (status < 100) fail("bad_status_line", "status code below 100");
  const http11 = buf[start + 7] === DIGIT0 + 1;
  let p = start + 12;
  let c = buf[p]!;
  let reasonStart = p;
  let reasonEnd = p;
  if (c === SP) {
    reasonStart = ++p;
    for (;;) {
      if (p >= limit) return incomplete(avail, maxHeadBytes);
      c = buf[p]!;
      if (c === CR || c === LF) break;
      if (!(CLASS[c]! & C_FVAL)) fail("bad_status_line", "invalid byte in reason phrase");
      p++;
    }
    reasonEnd = p;
  } else if (c !== CR && c !== LF) fail("bad_status_line", "status code is not 3 digits");
  // Status line terminator: CRLF or bare LF (RFC 9112 §2.2); CR must be followed by LF.
  if (c === CR) {
    if (p + 1 >= limit) return incomplete(avail, maxHeadBytes);
    if (buf[p + 1] !== LF) fail("bad_status_line", "bare CR in status line");
    p += 2;
  } else p++;

  // --- field lines until the empty line.
  let nFields = 0;
  for (;;) {
    if (p >= limit) return incomplete(avail, maxHeadBytes);
    c = buf[p]!;
    if (c === CR) {
      if (p + 1 >= limit) return incomplete(avail, maxHeadBytes);
      if (buf[p + 1] !== LF) fail("bad_header", "bare CR in header section");
      p += 2;
      break;
    }
    if (c === LF) {
      p++;
      break;
    }
    if (nFields === HEADER_LINES_MAX) fail("too_many_headers", `more than ${HEADER_LINES_MAX} header lines`);
    const nameStart = p;
    while (CLASS[c]! & C_TCHAR) {
      if (++p >= limit) return incomplete(avail, maxHeadBytes);
      c = buf[p]!;
    }
    // Covers obs-fold (line starting with SP/HTAB), whitespace before the colon, empty name, no colon.
    if (c !== COLON || p === nameStart) fail("bad_header", "malformed header field name");
    const nameEnd = p++;
    while (p < limit && (buf[p] === SP || buf[p] === HTAB)) p++;
    const valueStart = p;
    for (;;) {
      if (p >= limit) return incomplete(avail, maxHeadBytes);
      c = buf[p]!;
      if (!(CLASS[c]! & C_FVAL)) break;
      p++;
    }
    let valueEnd = p;
    if (c === CR) {
      if (p + 1 >= limit) return incomplete(avail, maxHeadBytes);
      if (buf[p + 1] !== LF) fail("bad_header", "bare CR in header field");
      p += 2;
    } else if (c === LF) p++;
    else fail("bad_header", "invalid byte in header field value");
    while (valueEnd > valueStart && (buf[valueEnd - 1] === SP || buf[valueEnd - 1] === HTAB)) valueEnd--;
    const o = nFields * 4;
    fieldOffsets[o] = nameStart;
    fieldOffsets[o + 1] = nameEnd;
    fieldOffsets[o + 2] = valueStart;
    fieldOffsets[o + 3] = valueEnd;
    nFields++;
  }

  // --- complete: decode strings and decide framing.
  const headEnd = p;
  const head = latin1Slice.call(buf, start, headEnd);
  const headers: string[] = [];
  clValue = -1;
  teSeen = false;
  teChunkedFinal = false;
  teChunkedCount = 0;
  connClose = false;
  connKeepAlive = false;
  for (let i = 0; i < nFields; i++) {
    const o = i * 4;
    const ns = fieldOffsets[o]!;
    const ne = fieldOffsets[o + 1]!;
    const vs = fieldOffsets[o + 2]!;
    const ve = fieldOffsets[o + 3]!;
    headers.push(head.slice(ns - start, ne - start), head.slice(vs - start, ve - start));
    switch (ne - ns) {
      case 10:
        if (eqLower(buf, ns, ne, L_CONNECTION)) scanConnection(buf, vs, ve);
        break;
      case 14:
        if (eqLower(buf, ns, ne, L_CONTENT_LENGTH)) scanContentLength(buf, vs, ve);
        break;
      case 17:
        if (eqLower(buf, ns, ne, L_TRANSFER_ENCODING)) scanTransferEncoding(buf, vs, ve);
        break;
    }
  }

  // TE in HTTP/1.0 (RFC 9112 §6.1: MUST treat as faulty framing) and TE+CL (RFC 9112 §6.3 lets TE win, but a
  // proxy cannot know which one the backend meant; classic smuggling signal) are refused even when the
  // response has no body, since the headers themselves are then untrustworthy.
  if (teSeen && !http11) fail("conflicting_framing", "Transfer-Encoding in an HTTP/1.0 response");
  if (teSeen && clValue !== -1) fail("conflicting_framing", "both Transfer-Encoding and Content-Length");

  const connectOk = status >= 200 && status < 300 && requestMethod === "CONNECT";
  let framing: ResponseHead["framing"];
  let contentLength = -1;
  if (status < 200 || status === 204 || status === 304 || requestMethod === "HEAD" || connectOk)
    framing = "none";
  else if (teSeen) framing = teChunkedFinal ? "chunked" : "close";
  else if (clValue !== -1) {
    framing = "length";
    contentLength = clValue;
  } else framing = "close";

  // After 101 or a 2xx to CONNECT the connection is a tunnel, never reusable for another HTTP exchange.
  const keepAlive =
    (http11 ? !connClose : connKeepAlive && !connClose) &&
    framing !== "close" &&
    status !== 101 &&
    !connectOk;

  return {
    status,
    reason: head.slice(reasonStart - start, reasonEnd - start),
    headers,
    framing,
    contentLength,
    keepAlive,
    headBytes: headEnd - start,
  };
}

function incomplete(avail: number, maxHeadBytes: number): null {
  if (avail >= maxHeadBytes) fail("header_too_large", `response head exceeds ${maxHeadBytes} bytes`);
  return null;
}

// ChunkedDecoder states.
const S_SIZE_FIRST = 0; // expecting the first hex digit of a chunk-size
const S_SIZE = 1; // more hex digits, or BWS / ";" / CR
const S_SIZE_BWS = 2; // whitespace after the size: only ";" may follow (BWS before chunk-ext)
const S_EXT = 3; // inside chunk extensions, until CR
const S_SIZE_LF = 4; // CR seen after the size line, expecting LF
const S_DATA = 5;
const S_DATA_CR = 6; // chunk-data done, expecting CR
const S_DATA_LF = 7;
const S_TRAILER_START = 8; // start of a trailer line or of the final CRLF
const S_TRAILER_NAME = 9;
const S_TRAILER_VALUE = 10;
const S_TRAILER_LF = 11; // CR seen at the end of a trailer field line
const S_FINAL_LF = 12; // CR of the final empty line seen
const S_DONE = 13;
const S_FAILED = 14; // a previous feed threw; the stream position is unknown, so every later feed throws too

/**
 * Incremental chunked-body decoder (RFC 9112 §7.1). Line terminators inside the body must be exactly CRLF:
 * bare-LF leniency in chunk framing is a known request/response desync vector, and backends never need it.
 */
export class ChunkedDecoder {
  done = false;
  private state = S_SIZE_FIRST;
  /** Bytes left in the current chunk's data, or the size being accumulated in the size line. */
  private remaining = 0;
  /** Bytes of the current chunk-size line (digits + extensions) or of the trailer section so far. */
  private lineBytes = 0;

  /**
   * Consume bytes, calling onData with subarrays of `data` for body bytes. Returns the bytes consumed: all of
   * `data` unless the body (through trailers and the final CRLF) ends inside it; the rest is the next response.
   */
  feed(data: Uint8Array, onData: (bytes: Uint8Array) => void): number {
    const n = data.length;
    let p = 0;
    let state = this.state;
    if (state === S_FAILED) fail("bad_chunk", "chunked decoder already failed");
    // Restored on every normal exit, so it stays set if anything below (including onData) throws.
    this.state = S_FAILED;
    while (p < n) {
      if (state === S_DATA) {
        const left = n - p;
        const take = Math.min(left, this.remaining);
        onData(data.subarray(p, p + take));
        p += take;
        this.remaining -= take;
        if (this.remaining === 0) state = S_DATA_CR;
        continue;
      }
      const c = data[p]!;
      switch (state) {
        case S_SIZE_FIRST: {
          const d = HEXVAL[c]!;
          if (d < 0) fail("bad_chunk", "chunk size is not a hex number");
          this.remaining = d;
          this.lineBytes = 1;
          state = S_SIZE;
          break;
        }
        case S_SIZE: {
          const d = HEXVAL[c]!;
          if (c === CR) {
            state = S_SIZE_LF;
            break;
          }
          // The line limit counts every byte before the CRLF: digits (leading zeros too), BWS, extensions.
          if (++this.lineBytes > CHUNK_LINE_BYTES_MAX) fail("bad_chunk", "chunk-size line too long");
          if (d >= 0) {
            const v = this.remaining * 16 + d;
            // Float rounding keeps any value > 2^53-1 above the bound, so the check stays exact.
            if (v > CHUNK_SIZE_MAX) fail("chunk_too_large", "chunk size too large");
            this.remaining = v;
          } else if (c === SEMI) state = S_EXT;
          else if (c === SP || c === HTAB) state = S_SIZE_BWS;
          else fail("bad_chunk", "invalid byte after chunk size");
          break;
        }
        case S_SIZE_BWS:
          if (++this.lineBytes > CHUNK_LINE_BYTES_MAX) fail("bad_chunk", "chunk-size line too long");
          if (c === SEMI) state = S_EXT;
          else if (c !== SP && c !== HTAB) fail("bad_chunk", "whitespace after chunk size");
          break;
        case S_EXT: {
          // Extensions are ignored; only their bytes are checked, so no CTL (bare CR/LF, NUL) can hide in them.
          let q = p;
          let lb = this.lineBytes;
          while (q < n) {
            const b = data[q]!;
            if (!(CLASS[b]! & C_FVAL)) break;
            q++;
            lb++;
          }
          this.lineBytes = lb;
          if (lb > CHUNK_LINE_BYTES_MAX) fail("bad_chunk", "chunk-size line too long");
          if (q === n) {
            p = n;
            continue;
          }
          if (data[q] !== CR) fail("bad_chunk", "invalid byte in chunk extension");
          p = q;
          state = S_SIZE_LF;
          break;
        }
        case S_SIZE_LF:
          if (c !== LF) fail("bad_chunk", "chunk-size line not terminated by CRLF");
          if (this.remaining === 0) {
            state = S_TRAILER_START;
            this.lineBytes = 0;
          } else state = S_DATA;
          break;
        case S_DATA_CR:
          if (c !== CR) fail("bad_chunk", "missing CRLF after chunk data");
          state = S_DATA_LF;
          break;
        case S_DATA_LF:
          if (c !== LF) fail("bad_chunk", "missing CRLF after chunk data");
          state = S_SIZE_FIRST;
          break;
        case S_TRAILER_START:
          this.trailerByte();
          if (c === CR) state = S_FINAL_LF;
          else if (CLASS[c]! & C_TCHAR) state = S_TRAILER_NAME;
          else fail("bad_header", "malformed trailer field");
          break;
        case S_TRAILER_NAME:
          this.trailerByte();
          if (c === COLON) state = S_TRAILER_VALUE;
          else if (!(CLASS[c]! & C_TCHAR)) fail("bad_header", "malformed trailer field name");
          break;
        case S_TRAILER_VALUE:
          this.trailerByte();
          if (c === CR) state = S_TRAILER_LF;
          else if (!(CLASS[c]! & C_FVAL)) fail("bad_header", "invalid byte in trailer field value");
          break;
        case S_TRAILER_LF:
          this.trailerByte();
          if (c !== LF) fail("bad_header", "trailer field not terminated by CRLF");
          state = S_TRAILER_START;
          break;
        case S_FINAL_LF:
          this.trailerByte();
          if (c !== LF) fail("bad_chunk", "chunked body not terminated by CRLF");
          this.state = S_DONE;
          this.done = true;
          return p + 1;
        default:
          // S_DONE: the body already ended; nothing more belongs to it.
          this.state = S_DONE;
          return p;
      }
      p++;
    }
    this.state = state;
    return p;
  }

  private trailerByte(): void {
    if (++this.lineBytes > HEADER_BYTES_MAX) fail("header_too_large", "trailer section too large");
  }
}
