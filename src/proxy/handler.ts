// The per-request pipeline for Bun.serve: refuse bad framing -> select -> forward -> respond.
import type { Server } from "bun";
import type { Options } from "../config/options.ts";
import { pickRoundRobin, type RoundRobinState } from "../core/balancer.ts";
import { checkRequestFraming } from "../core/framing.ts";
import { type BodyFraming, buildRequestHead } from "../core/headers.ts";
import { REQUEST_BODY_BUFFER_BYTES_MAX } from "../core/limits.ts";
import { log } from "../telemetry/log.ts";
import type { FifoDeadlines } from "../upstream/deadlines.ts";
import { Exchange, type ExchangeInput } from "../upstream/exchange.ts";
import type { BackendPool } from "../upstream/pool.ts";
import { errorResponse } from "./errors.ts";

export interface ProxyContext {
  readonly options: Options;
  readonly pools: readonly BackendPool[];
  readonly rr: RoundRobinState;
  readonly deadlines: FifoDeadlines;
}

const REFUSAL_TEXT: Record<number, string> = {
  400: "Bad Request",
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
  const { options, pools, rr, deadlines } = ctx;
  const hostPolicy = options.hostHeader;

  return function handle(req: Request, server: Server<undefined>): Response | Promise<Response> {
    const url = req.url;
    const method = req.method;
    const headers = req.headers;
    const verdict = checkRequestFraming(method, url, headers);
    if (!verdict.ok) {
      log.info("proxy", `refused ${method} request: ${verdict.status} ${verdict.reason}`);
      return refusal(verdict.status, verdict.reason);
    }
    const target = originForm(url);

    const i = pickRoundRobin(rr, pools.length);
    if (i < 0) return errorResponse("no_backend");
    const pool = pools[i]!;

    const fields = headers.toJSON() as Record<string, string | string[]>;
    const te = fields["transfer-encoding"];
    const cl = fields["content-length"];
    let framing: BodyFraming = "none";
    if (te !== undefined) framing = "chunked";
    else if (cl !== undefined) framing = "length";
    const clientHost = (fields.host as string | undefined) ?? "";
    const useBackendHost =
      hostPolicy === "backend" || (hostPolicy === "auto" && (pool.spec.tls || !clientHost));

    const head = buildRequestHead(
      {
        method,
        target,
        host: useBackendHost ? pool.hostHeader : clientHost,
        clientHost,
        clientIp: clientAddress(server, req),
        proto: "http",
        framing,
        contentLength: typeof cl === "string" ? cl : "",
      },
      fields,
    );
    const input: ExchangeInput = {
      pool,
      method,
      head,
      body: null,
      chunked: framing === "chunked",
      deadlines,
      signal: req.signal,
      target,
    };
    if (framing === "chunked" || (framing === "length" && cl !== "0")) {
      // Small bodies are read whole (as nginx buffers them) so head and body leave in one write and
      // the request can be replayed on a stale pooled connection; larger ones stream as they arrive.
      // `cl` passed checkRequestFraming: plain digits, so Number() is exact here.
      if (framing === "length" && (cl as string).length <= 9 && Number(cl) <= REQUEST_BODY_BUFFER_BYTES_MAX) {
        return req.bytes().then(
          (bytes) => {
            input.body = bytes;
            return new Exchange(input).run();
          },
          () => errorResponse("client_aborted"),
        );
      }
      input.body = req.body;
    }
    return new Exchange(input).run();
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

function clientAddress(server: Server<undefined>, req: Request): string {
  const addr = server.requestIP(req)?.address ?? "unknown";
  // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6.
  return addr.startsWith("::ffff:") && addr.includes(".") ? addr.slice(7) : addr;
}
