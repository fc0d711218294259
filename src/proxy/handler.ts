// The per-request pipeline for Bun.serve: refuse bad framing -> metrics endpoint -> select ->
// forward -> respond. Errors map to statuses in errors.ts; retries and health live in the exchange.
import type { Server } from "bun";
import type { Options } from "../config/options.ts";
import { newPickRequest } from "../core/balancer.ts";
import { checkRequestFraming, type RequestFields } from "../core/framing.ts";
import { type BodyFraming, forwardedFields } from "../core/headers.ts";
import { REQUEST_BODY_BUFFER_BYTES_MAX } from "../core/limits.ts";
import { log } from "../telemetry/log.ts";
import { METRICS_CONTENT_TYPE } from "../telemetry/metrics.ts";
import type { FifoDeadlines } from "../upstream/deadlines.ts";
import { Exchange, type ExchangeInput } from "../upstream/exchange.ts";
import { BODY_TIMED_OUT, readWithin } from "./body-deadline.ts";
import { errorResponse } from "./errors.ts";
import type { Fleet } from "./fleet.ts";
import { type Waf, type WafVerdict, wafResponse } from "./waf.ts";
import { readChecked } from "./waf-body.ts";

export interface ProxyContext {
  readonly options: Options;
  readonly fleet: Fleet;
  readonly deadlines: FifoDeadlines;
  readonly waf: Waf;
  /** Deadlines of buffered request-body reads (--body-timeout-ms). */
  readonly bodyDeadlines: FifoDeadlines;
}

const REFUSAL_TEXT: Record<number, string> = {
  400: "Bad Request",
  408: "Request Timeout",
  411: "Length Required",
  413: "Content Too Large",
  414: "URI Too Long",
  431: "Request Header Fields Too Large",
  501: "Not Implemented",
};

/** A request we refuse before anything is forwarded; the connection is closed after it. */
function refusal(status: number, reason: string): Response {
  return new Response(`${status} ${REFUSAL_TEXT[status] ?? "Error"}: ${reason}\n`, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", connection: "close" },
  });
}

export function createHandler(ctx: ProxyContext) {
  const { options, fleet, deadlines, waf, bodyDeadlines } = ctx;
  /** Starts the exchange; if that throws (a bug), the WAF's in-flight count is given back first. */
  const runExchange = (input: ExchangeInput, v: WafVerdict | null): Promise<Response> => {
    try {
      return new Exchange(input).run();
    } catch (err) {
      if (v !== null) waf.release(v);
      throw err;
    }
  };
  const bodyTimedOut = () => {
    log.info("proxy", `request body not received within ${options.bodyTimeoutMs} ms: 408`);
    return refusal(408, `request body not received within ${options.bodyTimeoutMs} ms`);
  };
  const metricsPath = options.metricsPath;

  return function handle(req: Request, server: Server<undefined>): Response | Promise<Response> {
    const url = req.url;
    const method = req.method;
    const fields = req.headers.toJSON() as RequestFields;
    const verdict = checkRequestFraming(method, url, fields);
    if (!verdict.ok) {
      log.info("proxy", `refused ${method} request: ${verdict.status} ${verdict.reason}`);
      return refusal(verdict.status, verdict.reason);
    }
    const target = originForm(url);
    if (metricsPath !== "" && isPath(target, metricsPath) && (method === "GET" || method === "HEAD")) {
      waf.active; // adopt a newly published WAF config first: its rule names label the WAF series
      return new Response(fleet.metrics.render(), { headers: { "content-type": METRICS_CONTENT_TYPE } });
    }

    const te = fields["transfer-encoding"];
    const cl = fields["content-length"];
    let framing: BodyFraming = "none";
    if (te !== undefined) framing = "chunked";
    else if (cl !== undefined) framing = "length";
    const clientIp = clientAddress(server, req);

    let wafVerdict: WafVerdict | null = null;
    if (waf.active) {
      const declared = framing === "chunked" ? null : framing === "length" ? Number(cl) : 0;
      const xff = fields["x-forwarded-for"];
      const ct = fields["content-type"];
      const ce = fields["content-encoding"];
      wafVerdict = waf.admit(
        method,
        target,
        clientIp,
        typeof xff === "string" ? xff : undefined,
        declared,
        typeof ct === "string" ? ct : null,
        typeof ce === "string" ? ce : null,
      );
      if (wafVerdict !== null && wafVerdict.decision === "block") {
        waf.release(wafVerdict);
        return wafResponse(wafVerdict);
      }
    }

    const stickyCookie = fleet.stickyCookie;
    const pickReq = newPickRequest(stickyCookie === null ? null : cookieValue(fields.cookie, stickyCookie));
    const picked = fleet.pick(pickReq);
    if (picked === null) {
      // Every backend is down: answer at once rather than wait on timeouts.
      if (wafVerdict !== null) waf.release(wafVerdict);
      fleet.metrics.noBackend();
      return errorResponse("no_backend");
    }

    const clientHost = (fields.host as string | undefined) ?? "";
    const v = wafVerdict;
    const input: ExchangeInput = {
      fleet,
      first: picked,
      pick: pickReq,
      method,
      requestLine: `${method} ${target} HTTP/1.1\r\n`,
      rest: forwardedFields(
        {
          method,
          clientHost,
          clientIp,
          proto: "http",
          framing,
          contentLength: typeof cl === "string" ? cl : "",
        },
        fields,
      ),
      clientHost,
      hostPolicy: options.hostHeader,
      body: null,
      chunked: framing === "chunked",
      hasIdempotencyKey: fields["idempotency-key"] !== undefined,
      stickyCookie,
      setSticky: fleet.pickedSetSticky,
      deadlines,
      signal: req.signal,
      target,
      waf: v,
      onDone: v === null || v.connSlot < 0 ? null : () => waf.release(v),
    };
    if (
      v !== null &&
      framing !== "none" &&
      (v.jsonDepthMax > 0 || (framing === "chunked" && Number.isFinite(v.bodyBytesMax)))
    ) {
      // The WAF must see the body before the backend does: read it (bounded by the limit), then forward.
      return readWithin(bodyDeadlines, readChecked(req, v, framing === "length" ? Number(cl) : -1)).then(
        (r) => {
          if (r === BODY_TIMED_OUT) {
            waf.release(v);
            return bodyTimedOut();
          }
          if (r.refused !== null && waf.bodyRefused(v, r.refused, method, target)) {
            waf.release(v);
            return wafResponse(v);
          }
          waf.passed(v, method, target);
          if (r.rest === null) {
            input.body = r.bytes;
            input.chunked = false;
            input.rest = forwardedFields(
              {
                method,
                clientHost,
                clientIp,
                proto: "http",
                framing: "length",
                contentLength: String(r.bytes.length),
              },
              fields,
            );
          } else input.body = r.rest; // shadow mode: a finding, but the body goes on as it arrives
          return runExchange(input, v);
        },
        () => {
          waf.release(v);
          return errorResponse("client_aborted");
        },
      );
    }
    if (v !== null) waf.passed(v, method, target);
    if (framing === "chunked" || (framing === "length" && cl !== "0")) {
      // Small bodies are read whole (as nginx buffers them) so head and body leave in one write and
      // the request can be replayed on another backend; larger ones stream as they arrive.
      // `cl` passed checkRequestFraming: plain digits, so Number() is exact here.
      if (framing === "length" && (cl as string).length <= 9 && Number(cl) <= REQUEST_BODY_BUFFER_BYTES_MAX) {
        return readWithin(bodyDeadlines, req.bytes()).then(
          (bytes) => {
            if (bytes === BODY_TIMED_OUT) {
              if (v !== null) waf.release(v);
              return bodyTimedOut();
            }
            input.body = bytes;
            return runExchange(input, v);
          },
          () => {
            if (v !== null) waf.release(v);
            return errorResponse("client_aborted");
          },
        );
      }
      input.body = req.body;
    }
    return runExchange(input, v);
  };
}

/**
 * The origin-form target from req.url: absolute ("http://host/path?q") when the request had a Host,
 * the bare path when it had none (HTTP/1.0).
 */
function originForm(url: string): string {
  if (url.charCodeAt(0) === 0x2f) return url;
  const slash = url.indexOf("/", url.indexOf("//") + 2);
  return slash < 0 ? "/" : url.slice(slash);
}

/** target is exactly `path`, optionally followed by a query. */
function isPath(target: string, path: string): boolean {
  return (
    target.startsWith(path) && (target.length === path.length || target.charCodeAt(path.length) === 0x3f)
  );
}

/** Value of cookie `name` in a Cookie header ("a=1; b=2"), or null. */
function cookieValue(header: string | string[] | undefined, name: string): string | null {
  if (typeof header !== "string") return null;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

function clientAddress(server: Server<undefined>, req: Request): string {
  const addr = server.requestIP(req)?.address ?? "unknown";
  // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6.
  return addr.startsWith("::ffff:") && addr.includes(".") ? addr.slice(7) : addr;
}
