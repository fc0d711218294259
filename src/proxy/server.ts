// The serving part of a process: Bun.serve over a Fleet that reads the shared region. An mp worker
// runs only this; the sp process runs it next to the control plane (startProxy), over the same region,
// so both modes share one code path.
import type { Server } from "bun";
import type { Options } from "../config/options.ts";
import { CLIENT_IDLE_TIMEOUT_S, DRAIN_CLOSE_GRACE_MS, REQUEST_BODY_BYTES_MAX } from "../core/limits.ts";
import { SharedMetricsStore } from "../shm/metrics-store.ts";
import { createRegion, type Region, removeRegion } from "../shm/region.ts";
import { inheritWafState } from "../shm/waf.ts";
import { Control } from "../supervisor/control.ts";
import { WafControl } from "../supervisor/waf-control.ts";
import { log } from "../telemetry/log.ts";
import { FifoDeadlines } from "../upstream/deadlines.ts";
import type { BackendPool } from "../upstream/pool.ts";
import { Fleet } from "./fleet.ts";
import { createHandler } from "./handler.ts";
import { Waf } from "./waf.ts";

export interface Serving {
  readonly server: Server<undefined>;
  readonly fleet: Fleet;
  /** Stops accepting, lets in-flight requests finish (bounded by drainTimeoutMs), closes pools. */
  stop(): Promise<void>;
}

/** Serves on options.host:port with reusePort, recording into process slot `slot` of the region. */
export function serve(options: Options, region: Region, slot: number, slotsInUse: number): Serving {
  const fleet = new Fleet(options, region, new SharedMetricsStore(region, slot, slotsInUse));
  const deadlines = new FifoDeadlines(options.upstreamTimeoutMs);
  const waf = new Waf(region, slot, slotsInUse, fleet.metrics, options.wafShadow);
  const bodyDeadlines = new FifoDeadlines(options.bodyTimeoutMs);
  const handle = createHandler({ options, fleet, deadlines, waf, bodyDeadlines });
  let draining = false;
  const server = Bun.serve({
    hostname: options.host,
    port: options.port,
    reusePort: true,
    idleTimeout: CLIENT_IDLE_TIMEOUT_S,
    maxRequestBodySize: REQUEST_BODY_BYTES_MAX,
    fetch(req, srv) {
      const res = handle(req, srv);
      if (!draining) return res;
      // Draining: every answer closes its connection, so a keep-alive client moves to a new
      // connection (another worker, or the new instance) instead of racing our close.
      return Promise.resolve(res).then(closing);
    },
    error(err) {
      // Reached only by a bug in our handler: answer 500 and keep serving.
      log.err("proxy", `internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      return new Response("500 Internal Server Error\n", { status: 500 });
    },
  });
  let stopping: Promise<void> | null = null;
  return {
    server,
    fleet,
    stop() {
      stopping ??= (async () => {
        draining = true;
        // Keep accepting for a moment: connections already queued on our listener are answered (with
        // Connection: close) instead of being reset when it closes, and busy keep-alive clients get
        // their Connection: close. Idle ones are closed by stop(false) below.
        await Bun.sleep(Math.min(DRAIN_CLOSE_GRACE_MS, options.drainTimeoutMs));
        const drain = server.stop(false);
        const timer = setTimeout(() => server.stop(true), options.drainTimeoutMs);
        await drain;
        clearTimeout(timer);
        fleet.close();
      })();
      return stopping;
    },
  };
}

/** Answers with Connection: close (Bun then closes the connection after the response). */
function closing(res: Response): Response {
  res.headers.set("connection", "close");
  return res;
}

export interface Running extends Serving {
  readonly control: Control;
  readonly region: Region;
  /** Connection pools of the current backends (tests inspect their stats). */
  readonly pools: readonly BackendPool[];
  /** Re-reads the config file now (SIGHUP); a no-op without -c. */
  reload(): void;
}

export interface StartOptions {
  /** Active health probes (default on). In-process tests that count backend requests turn them off. */
  readonly activeProbes?: boolean;
  /** Long names of the flags given on the command line: they win over the -c file's settings. */
  readonly flagsGiven?: ReadonlySet<string>;
  /** Binary upgrade: the previous instance's region, whose health state this one takes over. */
  readonly inherit?: Region | null;
}

/** Process slots in sp mode: the control plane (0) and the one serving part (1). */
const SP_SLOTS = 2;

/** Single-process mode: control plane and serving in this process, over a region of its own. */
export function startProxy(options: Options, start: StartOptions = {}): Running {
  const region = createRegion(options.port);
  let control: Control;
  let waf: WafControl | null = null;
  let serving: Serving;
  try {
    control = new Control(options, region, { ...start, slotsInUse: SP_SLOTS });
    if (options.wafConfig !== null)
      waf = new WafControl(options.wafConfig, region, control.metrics, options.wafShadow);
    if (start.inherit) {
      control.inherit(start.inherit);
      inheritWafState(region, start.inherit);
    }
    serving = serve(options, region, 1, SP_SLOTS);
  } catch (err) {
    removeRegion(region);
    throw err;
  }
  control.run();
  waf?.run();
  let stopping: Promise<void> | null = null;
  return {
    server: serving.server,
    fleet: serving.fleet,
    control,
    region,
    get pools() {
      return serving.fleet.backends.map((b) => b.pool);
    },
    reload() {
      control.reload();
      waf?.reload();
    },
    stop() {
      stopping ??= (async () => {
        control.close();
        waf?.close();
        await serving.stop();
        removeRegion(region);
      })();
      return stopping;
    },
  };
}
