// Bounded streaming JSON nesting-depth scanner. It measures depth only (not validity), so a
// hostile body is never parsed: O(bytes), constant state, no allocation per chunk, and it stops
// reading at the byte that goes one level too deep (a 1 MB body of "[" costs maxDepth+1 bytes).
//
// Byte-level scanning is exact for UTF-8 (RFC 8259 §8.1 requires it for JSON on the wire): bytes
// of multi-byte characters are all >= 0x80, so they never look like quotes, backslashes or
// brackets.

const B_QUOTE = 0x22;
const B_BACKSLASH = 0x5c;
const B_LBRACKET = 0x5b;
const B_RBRACKET = 0x5d;
const B_LBRACE = 0x7b;
const B_RBRACE = 0x7d;

export type JsonDepthVerdict = "ok" | "too_deep";

export class JsonDepthScanner {
  private depth = 0;
  private inString = false;
  /** The previous byte was a backslash inside a string (survives a chunk boundary). */
  private afterBackslash = false;
  private tripped = false;
  private scannedBytes = 0;

  /** maxDepth: deepest nesting accepted ("[]" is depth 1, "[[]]" depth 2). */
  constructor(readonly maxDepth: number) {}

  /** Bytes examined so far; once too deep, the index of the offending byte plus one. */
  get bytesScanned(): number {
    return this.scannedBytes;
  }

  /**
   * Feeds the next chunk. "too_deep" as soon as an opening bracket or brace goes beyond
   * maxDepth (the rest of the chunk is not read); every later push answers "too_deep" too.
   */
  push(chunk: Uint8Array): JsonDepthVerdict {
    if (this.tripped) return "too_deep";
    let depth = this.depth;
    let inString = this.inString;
    let afterBackslash = this.afterBackslash;
    const max = this.maxDepth;
    const n = chunk.length;
    for (let i = 0; i < n; i++) {
      const b = chunk[i]!;
      if (inString) {
        if (afterBackslash) afterBackslash = false;
        else if (b === B_BACKSLASH) afterBackslash = true;
        else if (b === B_QUOTE) inString = false;
        continue;
      }
      if (b === B_QUOTE) {
        inString = true;
      } else if (b === B_LBRACKET || b === B_LBRACE) {
        depth++;
        if (depth > max) {
          this.tripped = true;
          this.depth = depth;
          this.scannedBytes += i + 1;
          return "too_deep";
        }
      } else if ((b === B_RBRACKET || b === B_RBRACE) && depth > 0) {
        // Clamped at 0: stray closers must not buy extra depth for the openers after them.
        depth--;
      }
    }
    this.depth = depth;
    this.inString = inString;
    this.afterBackslash = afterBackslash;
    this.scannedBytes += n;
    return "ok";
  }
}

/** True for "application/json" and "application/<anything>+json", any parameters, any case. */
export function isJsonContentType(value: string | null): boolean {
  if (value === null) return false;
  let start = 0;
  let end = value.length;
  const semi = value.indexOf(";");
  if (semi >= 0) end = semi;
  while (start < end && isOws(value.charCodeAt(start))) start++;
  while (end > start && isOws(value.charCodeAt(end - 1))) end--;
  const typeEnd = start + "application/".length;
  if (end <= typeEnd || !equalsIgnoreCase(value, start, "application/")) return false;
  if (end - typeEnd === 4) return equalsIgnoreCase(value, typeEnd, "json");
  // "+json" with a non-empty subtype name before it (application/problem+json, ld+json, ...).
  return end - typeEnd > 5 && equalsIgnoreCase(value, end - 5, "+json");
}

function isOws(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

/** value[at, at + lower.length) equals `lower` (an ASCII lower-case literal), ignoring case. */
function equalsIgnoreCase(value: string, at: number, lower: string): boolean {
  for (let k = 0; k < lower.length; k++) {
    const c = value.charCodeAt(at + k);
    const folded = c >= 65 && c <= 90 ? c + 32 : c;
    if (folded !== lower.charCodeAt(k)) return false;
  }
  return true;
}
