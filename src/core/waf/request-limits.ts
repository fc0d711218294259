// Request validation decision for the WAF (step 1 of the WAF flow): URI length -> 414, body
// size -> 413 (from Content-Length before reading, and while streaming when the length is not
// known), JSON nesting depth -> 400 (the caller streams the body through a JsonDepthScanner).
// Compiled once per config; checking a request allocates nothing (verdicts are prebuilt).

import { isJsonContentType } from "./json-depth.ts";
import { compilePathPattern, type PathPattern, pathPatternMatches } from "./path.ts";

export const STATUS_URI_TOO_LONG = 414;
export const STATUS_BODY_TOO_LARGE = 413;
export const STATUS_JSON_TOO_DEEP = 400;

/** The request_limits section of waf.json (absent limit = no limit). */
export interface RequestLimitsConfig {
  readonly maxUriLength?: number;
  readonly maxBodySize?: number;
  readonly maxJsonDepth?: number;
  /** Per-path body size overrides; paths match like rate-limit rules (exact, or prefix with "*"). */
  readonly endpoints: readonly { readonly path: string; readonly maxBodySize: number }[];
}

export interface RequestFacts {
  /** Bytes of the request-target, query included. */
  readonly uriBytes: number;
  /** The path after normalisePath (so endpoint overrides cannot be dodged either). */
  readonly normalisedPath: string;
  /** Declared body length; 0 when the request has no body; null when it is not known (chunked). */
  readonly contentLength: number | null;
  readonly contentType: string | null;
}

/**
 * `bodyBytesMax` is the limit to enforce while streaming (bodyOverLimit); Infinity when none.
 * needs_json_scan: stream the body through `new JsonDepthScanner(jsonDepthMax)`; too deep -> 400.
 */
export type RequestLimitsVerdict =
  | { readonly kind: "ok"; readonly bodyBytesMax: number }
  | { readonly kind: "needs_json_scan"; readonly bodyBytesMax: number; readonly jsonDepthMax: number }
  | { readonly kind: "uri_too_long"; readonly status: typeof STATUS_URI_TOO_LONG }
  | {
      readonly kind: "body_too_large";
      readonly status: typeof STATUS_BODY_TOO_LARGE;
      readonly bodyBytesMax: number;
    };

interface BodyVerdicts {
  readonly bodyBytesMax: number;
  readonly ok: RequestLimitsVerdict;
  readonly json: RequestLimitsVerdict;
  readonly tooLarge: RequestLimitsVerdict;
}

const URI_TOO_LONG: RequestLimitsVerdict = Object.freeze({
  kind: "uri_too_long",
  status: STATUS_URI_TOO_LONG,
});

function bodyVerdicts(bodyBytesMax: number, jsonDepthMax: number): BodyVerdicts {
  return Object.freeze({
    bodyBytesMax,
    ok: Object.freeze({ kind: "ok", bodyBytesMax }),
    json: Object.freeze({ kind: "needs_json_scan", bodyBytesMax, jsonDepthMax }),
    tooLarge: Object.freeze({ kind: "body_too_large", status: STATUS_BODY_TOO_LARGE, bodyBytesMax }),
  });
}

export class RequestLimits {
  private readonly uriBytesMax: number;
  /** null: no JSON depth check. */
  private readonly jsonDepthMax: number | null;
  /** Endpoint patterns in precedence order (see constructor); first match wins. */
  private readonly patterns: readonly PathPattern[];
  private readonly endpointVerdicts: readonly BodyVerdicts[];
  private readonly globalVerdicts: BodyVerdicts;

  /**
   * Endpoint precedence, independent of config order: an exact endpoint beats every prefix one
   * (it names exactly this resource, as nginx's "location =" beats prefixes); among prefixes the
   * longest literal wins (the most specific subtree, as nginx's longest-prefix location), so
   * "/api/upload/*" overrides "/api/*" whichever is listed first. Ties keep config order.
   */
  constructor(config: RequestLimitsConfig) {
    this.uriBytesMax = config.maxUriLength ?? Number.POSITIVE_INFINITY;
    this.jsonDepthMax = config.maxJsonDepth ?? null;
    const depth = this.jsonDepthMax ?? 0;
    const compiled = config.endpoints.map((e, order) => ({
      pattern: compilePathPattern(e.path),
      bodyBytesMax: e.maxBodySize,
      order,
    }));
    compiled.sort((a, b) => {
      const ka = a.pattern.kind === "exact" ? 0 : 1;
      const kb = b.pattern.kind === "exact" ? 0 : 1;
      if (ka !== kb) return ka - kb;
      if (a.pattern.text.length !== b.pattern.text.length)
        return b.pattern.text.length - a.pattern.text.length;
      return a.order - b.order;
    });
    this.patterns = compiled.map((c) => c.pattern);
    this.endpointVerdicts = compiled.map((c) => bodyVerdicts(c.bodyBytesMax, depth));
    this.globalVerdicts = bodyVerdicts(config.maxBodySize ?? Number.POSITIVE_INFINITY, depth);
  }

  /** The body limit for a path: the winning endpoint override, else the global max (Infinity if none). */
  bodyBytesMaxFor(normalisedPath: string): number {
    return this.verdictsFor(normalisedPath).bodyBytesMax;
  }

  private verdictsFor(normalisedPath: string): BodyVerdicts {
    const patterns = this.patterns;
    for (let i = 0; i < patterns.length; i++) {
      if (pathPatternMatches(patterns[i]!, normalisedPath)) return this.endpointVerdicts[i]!;
    }
    return this.globalVerdicts;
  }

  /**
   * URI first (no point looking further at a request we will not route), then the declared body
   * size against the override-or-global limit, then whether the body needs a JSON depth scan
   * (only a JSON content type with a body that may be non-empty).
   */
  check(req: RequestFacts): RequestLimitsVerdict {
    if (req.uriBytes > this.uriBytesMax) return URI_TOO_LONG;
    const v = this.verdictsFor(req.normalisedPath);
    const length = req.contentLength;
    if (length !== null && length > v.bodyBytesMax) return v.tooLarge;
    if (this.jsonDepthMax !== null && length !== 0 && isJsonContentType(req.contentType)) return v.json;
    return v.ok;
  }
}

export function compileRequestLimits(config: RequestLimitsConfig): RequestLimits {
  return new RequestLimits(config);
}

/** While streaming: true once the body has gone past its limit (-> 413, stop reading). */
export function bodyOverLimit(bodyBytesSeen: number, bodyBytesMax: number): boolean {
  return bodyBytesSeen > bodyBytesMax;
}
