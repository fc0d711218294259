// Path normalisation and path/method rule matching for the WAF.
//
// Rules match the normalised path so that spellings a backend treats as the same resource
// ("/api/../api/x", "//api//x", "/%61pi/x", "/api/./x") cannot dodge a rule on "/api/*".

const CH_PERCENT = 37;
const CH_SLASH = 47;
const CH_DOT = 46;
const CH_STAR = 42;
const CH_SEMI = 59;

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  const lower = c | 0x20;
  if (lower >= 97 && lower <= 102) return lower - 87;
  return -1;
}

/** RFC 3986 §2.3 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~". */
function isUnreserved(c: number): boolean {
  const lower = c | 0x20;
  return (
    (lower >= 97 && lower <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 46 || c === 95 || c === 126
  );
}

/** True when the path needs no work: no "%", no ";", no "//", no "." or ".." segment. */
function isNormal(path: string): boolean {
  if (path.charCodeAt(0) !== CH_SLASH) return false;
  const n = path.length;
  for (let i = 0; i < n; i++) {
    const c = path.charCodeAt(i);
    if (c === CH_PERCENT || c === CH_SEMI) return false;
    if (c !== CH_SLASH || i + 1 >= n) continue;
    const c1 = path.charCodeAt(i + 1);
    if (c1 === CH_SLASH) return false;
    if (c1 !== CH_DOT) continue;
    // "/." or "/.." followed by "/" or the end is a dot segment.
    const c2 = i + 2 < n ? path.charCodeAt(i + 2) : CH_SLASH;
    if (c2 === CH_SLASH) return false;
    if (c2 === CH_DOT && (i + 3 >= n || path.charCodeAt(i + 3) === CH_SLASH)) return false;
  }
  return true;
}

/**
 * Percent-escapes of unreserved characters decoded (RFC 3986 §6.2.2.2: "%61" is "a"); every
 * other escape kept with upper-case hex ("%2f" -> "%2F", so an encoded slash never splits a
 * segment); a "%" not followed by two hex digits kept as is.
 */
function decodeUnreserved(path: string): string {
  let out = "";
  let copied = 0;
  const n = path.length;
  for (let i = 0; i < n; i++) {
    if (path.charCodeAt(i) !== CH_PERCENT || i + 2 >= n) continue;
    const hi = hexValue(path.charCodeAt(i + 1));
    const lo = hexValue(path.charCodeAt(i + 2));
    if (hi < 0 || lo < 0) continue;
    const byte = hi * 16 + lo;
    out += path.slice(copied, i);
    out += isUnreserved(byte) ? String.fromCharCode(byte) : path.slice(i, i + 3).toUpperCase();
    copied = i + 3;
    i += 2;
  }
  return copied === 0 ? path : out + path.slice(copied);
}

/**
 * The path rules are matched against. Input is the request path without the query. Unreserved
 * escapes decoded (so "%2E%2E" is a ".." segment), duplicate slashes collapsed, then dot
 * segments removed (RFC 3986 §5.2.4; collapsing first is nginx's merge_slashes order, so
 * "/a//../x" is "/x"). A trailing slash is kept ("/api/" stays "/api/"); ".." never climbs above
 * the root; the result always starts with "/". Case is kept (paths are case-sensitive).
 * Allocation only when the path is not already normal. Work is O(path length), and the path is
 * bounded by the URI length limit.
 */
export function normalisePath(path: string): string {
  if (isNormal(path)) return path;
  const decoded = decodeUnreserved(path);
  const segments: string[] = [];
  let trailingSlash = false;
  const n = decoded.length;
  let start = 0;
  while (start <= n) {
    let end = decoded.indexOf("/", start);
    if (end < 0) end = n;
    // ";params" of a segment are dropped for matching: servlet containers (Tomcat, Jetty) route
    // "/login;jsessionid=x" as "/login", so a rule on "/login" must see it that way too.
    const semi = decoded.indexOf(";", start);
    const segEnd = semi >= 0 && semi < end ? semi : end;
    const len = segEnd - start;
    if (len === 0) {
      trailingSlash = true;
    } else if (len === 1 && decoded.charCodeAt(start) === CH_DOT) {
      trailingSlash = true;
    } else if (
      len === 2 &&
      decoded.charCodeAt(start) === CH_DOT &&
      decoded.charCodeAt(start + 1) === CH_DOT
    ) {
      segments.pop();
      trailingSlash = true;
    } else {
      segments.push(decoded.slice(start, segEnd));
      trailingSlash = false;
    }
    start = end + 1;
  }
  if (segments.length === 0) return "/";
  const joined = "/" + segments.join("/");
  return trailingSlash ? joined + "/" : joined;
}

/** Exact match, or prefix match for a pattern written with a trailing "*". */
export type PathMatchKind = "exact" | "prefix";

/** A compiled path pattern. For Prefix, `text` is the pattern before the "*". */
export interface PathPattern {
  readonly kind: PathMatchKind;
  readonly text: string;
  /**
   * For "/x/*" patterns: "/x", which the pattern also matches. For exact patterns: the same path
   * with the trailing slash added or removed, which it also matches (see pathPatternMatches).
   */
  readonly bare: string | null;
}

/**
 * Compiles a config path: "/api/*" is a prefix pattern, anything else exact. The literal part is
 * normalised like a request path, so "/api//v1/*" and "/api/v1/*" are the same pattern.
 */
export function compilePathPattern(pattern: string): PathPattern {
  const star = pattern.length > 0 && pattern.charCodeAt(pattern.length - 1) === CH_STAR;
  if (!star) {
    const text = normalisePath(pattern);
    if (text === "/") return { kind: "exact", text, bare: null };
    const slashed = text.charCodeAt(text.length - 1) === CH_SLASH;
    return { kind: "exact", text, bare: slashed ? text.slice(0, -1) : text + "/" };
  }
  const literal = pattern.slice(0, -1);
  // normalisePath("") is "/", so "*" alone matches every path.
  const text = literal === "" ? "/" : normalisePath(literal);
  const endsSlash = text.length > 1 && text.charCodeAt(text.length - 1) === CH_SLASH;
  return { kind: "prefix", text, bare: endsSlash ? text.slice(0, -1) : null };
}

/**
 * Exact: equal strings. Prefix: the path starts with the literal, so "/api/*" matches "/api/"
 * and "/api/x" but not "/apix". "/api/*" also matches "/api" itself: routers commonly serve
 * "/api" and "/api/" alike (nginx redirects one to the other), and a limit that dropping one
 * character dodges is the bypass this matcher exists to close. A pattern with no slash before
 * the "*" ("/api*") is a plain string prefix and matches "/apix", as written.
 */
export function pathPatternMatches(p: PathPattern, normalisedPath: string): boolean {
  // Exact patterns also match with or without a trailing slash: most routers (Express, Spring)
  // serve "/login" and "/login/" alike, so "/login/" must not dodge a rule on "/login".
  if (p.kind === "exact") return normalisedPath === p.text || normalisedPath === p.bare;
  return normalisedPath.startsWith(p.text) || normalisedPath === p.bare;
}

export interface PathRule {
  readonly path: string;
  readonly method?: string;
}

/**
 * Rules compiled once per config; matching allocates nothing. Iterate the matching rules in rule
 * order with `for (let i = m.first(p, m0); i >= 0; i = m.next(p, m0, i))`.
 */
export class RuleMatcher {
  private readonly patterns: readonly PathPattern[];
  /** null: any method. Compared exactly: methods are case-sensitive (RFC 9110 §9.1). */
  private readonly methods: readonly (string | null)[];

  constructor(rules: readonly PathRule[]) {
    this.patterns = rules.map((r) => compilePathPattern(r.path));
    this.methods = rules.map((r) => r.method ?? null);
  }

  get size(): number {
    return this.patterns.length;
  }

  /** Whether rule `index` matches. */
  matches(index: number, normalisedPath: string, method: string): boolean {
    const m = this.methods[index];
    if (m !== null && m !== method) return false;
    return pathPatternMatches(this.patterns[index]!, normalisedPath);
  }

  /** Index of the first matching rule, or -1. */
  first(normalisedPath: string, method: string): number {
    return this.next(normalisedPath, method, -1);
  }

  /** Index of the next matching rule after `after`, or -1. */
  next(normalisedPath: string, method: string, after: number): number {
    const n = this.patterns.length;
    for (let i = after + 1; i < n; i++) if (this.matches(i, normalisedPath, method)) return i;
    return -1;
  }

  /** All matching rule indexes in rule order (allocates; for cold paths and tests). */
  matchAll(normalisedPath: string, method: string): number[] {
    const out: number[] = [];
    for (let i = this.first(normalisedPath, method); i >= 0; i = this.next(normalisedPath, method, i)) {
      out.push(i);
    }
    return out;
  }
}

export function compileRules(rules: readonly PathRule[]): RuleMatcher {
  return new RuleMatcher(rules);
}
