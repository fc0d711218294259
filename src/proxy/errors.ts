// One error type for everything that can go wrong between accepting a request and answering it,
// and the one place that maps it to a status code.

export type ProxyErrorCode =
  | "no_backend" // nothing to send to -> 503
  | "connect_refused" // TCP connect failed -> 502
  | "connect_timeout" // TCP/TLS connect took too long -> 504
  | "tls_failed" // handshake or certificate verification failed -> 502
  | "upstream_reset" // connection closed/reset before a complete response -> 502
  | "bad_response" // the backend's reply violates HTTP/1.1 -> 502
  | "upstream_timeout" // no response headers within --upstream-timeout-ms -> 504
  | "client_aborted"; // the client went away; nobody to answer

export class ProxyError extends Error {
  constructor(
    readonly code: ProxyErrorCode,
    detail: string,
  ) {
    super(detail);
  }
}

const STATUS: Record<ProxyErrorCode, number> = {
  no_backend: 503,
  connect_refused: 502,
  connect_timeout: 504,
  tls_failed: 502,
  upstream_reset: 502,
  bad_response: 502,
  upstream_timeout: 504,
  client_aborted: 499,
};

const TEXT: Record<number, string> = {
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  499: "Client Closed Request",
};

/** Seconds a client should wait before retrying when no backend is available. */
export const RETRY_AFTER_S_NO_BACKEND = 1;

export function statusFor(code: ProxyErrorCode): number {
  return STATUS[code];
}

/** A short text answer; the detail goes to the log, never to the client (it may name internal hosts). */
export function errorResponse(code: ProxyErrorCode): Response {
  const status = STATUS[code];
  const headers: Record<string, string> = { "content-type": "text/plain; charset=utf-8" };
  if (status === 503) headers["retry-after"] = String(RETRY_AFTER_S_NO_BACKEND);
  return new Response(`${status} ${TEXT[status]} (${code})\n`, { status, headers });
}
