// One active health probe: GET health_path, any 2xx within the timeout is a success.
// Probes run at a low rate, once per backend per interval, so Bun's fetch (with its own
// keep-alive) is good enough here and keeps this file small.
import type { BackendSpec } from "../config/options.ts";
import { probeStatusOk } from "../core/health.ts";

/** Sent with every probe so backends (and their logs) can tell probes from traffic. */
export const PROBE_USER_AGENT = "zzz-lb-health-probe";

export interface ProbeResult {
  ok: boolean;
  reason: string;
}

export async function probeBackend(
  spec: BackendSpec,
  healthPath: string,
  timeoutMs: number,
  insecure: boolean,
): Promise<ProbeResult> {
  const host = spec.host.includes(":") ? `[${spec.host}]` : spec.host;
  const url = `${spec.tls ? "https" : "http"}://${host}:${spec.port}${healthPath}`;
  try {
    const res = await fetch(url, {
      method: "GET",
      redirect: "manual",
      signal: AbortSignal.timeout(timeoutMs),
      headers: { "user-agent": PROBE_USER_AGENT },
      tls: { rejectUnauthorized: !insecure },
    });
    await res.arrayBuffer().catch(() => undefined); // drain so the connection can be reused
    return probeStatusOk(res.status)
      ? { ok: true, reason: `probe ${res.status}` }
      : { ok: false, reason: `probe answered ${res.status}` };
  } catch (err) {
    const e = err as { name?: string; code?: string; message?: string };
    if (e.name === "TimeoutError") return { ok: false, reason: `probe timed out after ${timeoutMs} ms` };
    return { ok: false, reason: `probe failed: ${e.code ?? e.message ?? String(err)}` };
  }
}
