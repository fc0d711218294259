// The validated, frozen run configuration that the CLI produces and everything else reads.
import type { Level } from "../telemetry/log.ts";

export type Strategy = "round_robin" | "weighted" | "random" | "sticky" | "least_conn" | "p2c";
export type Mode = "mp" | "sp";
export type HostHeaderPolicy = "auto" | "preserve" | "backend";

export interface BackendSpec {
  readonly host: string; // name or IP literal, without brackets
  readonly port: number;
  readonly tls: boolean;
  readonly weight: number;
}

export interface HealthOptions {
  readonly healthPath: string;
  readonly probeIntervalMs: number;
  readonly probeTimeoutMs: number;
  readonly unhealthyThreshold: number;
  readonly healthyThreshold: number;
}

export interface Options {
  readonly host: string;
  readonly port: number;
  readonly mode: Mode;
  /** 0 = one per CPU core. */
  readonly workers: number;
  readonly backends: readonly BackendSpec[];
  readonly strategy: Strategy;
  readonly configFile: string | null;
  readonly logLevel: Level;
  readonly insecure: boolean;
  readonly trace: boolean;
  readonly tlsTrace: boolean;
  readonly upstreamTimeoutMs: number;
  /** auto: client's Host to plain-HTTP backends, the backend's name to TLS backends. */
  readonly hostHeader: HostHeaderPolicy;
  readonly health: HealthOptions;
  readonly cookieName: string;
  /** "" disables the endpoint. */
  readonly metricsPath: string;
  readonly drainTimeoutMs: number;
  /** Deadline for receiving a request body that is buffered before forwarding (408 after it). */
  readonly bodyTimeoutMs: number;
  readonly wafConfig: string | null;
  readonly wafShadow: boolean;
  readonly otelEndpoint: string | null;
}
