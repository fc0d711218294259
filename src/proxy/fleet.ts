// The live backend set of one process: the table strategies pick from, health state per backend,
// passive and active health results, metrics, and atomic replacement on reload. A request keeps the
// Backend object it started with, so a reload never moves a request in flight.
import type { BackendSpec, HealthOptions, Options, Strategy } from "../config/options.ts";
import {
  BackendTable,
  ewmaMs,
  type PickRequest,
  pick,
  stickyCookieValue,
  type TableEntry,
} from "../core/balancer.ts";
import {
  canStartProbe,
  describeTransition,
  type HealthState,
  newHealthState,
  probeFinished,
  probeStarted,
  recordResult,
} from "../core/health.ts";
import { BACKENDS_MAX } from "../core/limits.ts";
import { WindowRetryBudget } from "../core/retry.ts";
import { log } from "../telemetry/log.ts";
import { Metrics } from "../telemetry/metrics.ts";
import { BackendPool, type PoolOptions } from "../upstream/pool.ts";
import { probeBackend } from "../upstream/probe.ts";

/** How often the probe loop looks for due probes; probes themselves run every probeIntervalMs. */
const PROBE_TICK_MS = 100;

export class Backend implements TableEntry {
  readonly key: string;
  readonly stickyId: string;
  readonly health: HealthState = newHealthState();
  /** Index in the current table (updated when a reload builds a new table). */
  index = 0;
  inFlight = 0;
  latencyEwmaMs = 0;

  constructor(
    public spec: BackendSpec,
    readonly pool: BackendPool,
  ) {
    this.key = pool.key;
    this.stickyId = stickyCookieValue(pool.key);
  }

  get weight(): number {
    return this.spec.weight;
  }
}

/** The fleet's table: Backend objects carry health, in-flight and latency across reloads. */
function tableOf(backends: readonly Backend[], ticket: { n: number }): BackendTable<Backend> {
  backends.forEach((b, i) => {
    b.index = i;
  });
  return new BackendTable(backends, ticket, (b) => b.health.up);
}

export class Fleet {
  private table: BackendTable<Backend>;
  private readonly ticket = { n: 0 };
  readonly metrics: Metrics;
  readonly budget = new WindowRetryBudget();
  private health: HealthOptions;
  private probeTimer: ReturnType<typeof setInterval> | null = null;
  private readonly poolOpts: PoolOptions;
  private strategy: Strategy;
  private readonly cookieName: string;

  constructor(options: Options, specs: readonly BackendSpec[]) {
    this.poolOpts = { insecure: options.insecure, trace: options.trace, tlsTrace: options.tlsTrace };
    this.strategy = options.strategy;
    this.cookieName = options.cookieName;
    this.health = options.health;
    const backends = specs.map((s) => new Backend(s, new BackendPool(s, this.poolOpts)));
    this.table = tableOf(backends, this.ticket);
    this.metrics = new Metrics(backends.map((b) => b.key));
  }

  get backends(): readonly Backend[] {
    return this.table.entries;
  }

  get healthOptions(): HealthOptions {
    return this.health;
  }

  /** The sticky cookie's name while the strategy (which a reload may change) is sticky, else null. */
  get stickyCookie(): string | null {
    return this.strategy === "sticky" ? this.cookieName : null;
  }

  /** Whether the latest pick() wants the sticky cookie (re)set; read right after pick(). */
  pickedSetSticky = false;

  /** The backend for a new attempt, or null when none is healthy (and not excluded). */
  pick(req: PickRequest): Backend | null {
    const t = this.table;
    const r = pick(this.strategy, t, req, Math.random);
    this.pickedSetSticky = r.setSticky;
    return r.index < 0 ? null : t.entries[r.index]!;
  }

  /** A transport result of a real request (passive health). An HTTP 5xx is a success here. */
  recordResult(b: Backend, ok: boolean, reason: string): void {
    const h = b.health;
    // Fast path: an up backend with no failure streak stays as it is.
    if (ok && h.up && h.failures === 0) return;
    this.apply(b, recordResult(h, ok, reason, this.health).changed);
  }

  recordLatency(b: Backend, ms: number): void {
    b.latencyEwmaMs = ewmaMs(b.latencyEwmaMs, ms);
  }

  private apply(b: Backend, changed: "up" | "down" | null): void {
    if (changed === null) return;
    const t = this.table;
    if (t.entries[b.index] === b) {
      t.setHealthy(b.index, changed === "up");
      this.metrics.setHealth(b.index, changed === "up");
    }
    const line = describeTransition(b.key, changed, b.health);
    if (changed === "down") log.warn("health", line);
    else log.info("health", line);
  }

  healthyCount(): number {
    return this.table.healthyCount();
  }

  /** Replaces the backend list; backends that stay keep their pool, health and counters. */
  replace(specs: readonly BackendSpec[], health: HealthOptions, strategy: Strategy = this.strategy): void {
    if (specs.length > BACKENDS_MAX) throw new RangeError(`at most ${BACKENDS_MAX} backends`);
    const old = new Map(this.table.entries.map((b) => [b.key, b]));
    const next = specs.map((s) => {
      const pool = new BackendPool(s, this.poolOpts);
      const kept = old.get(pool.key);
      if (kept && kept.spec.tls === s.tls) {
        old.delete(pool.key);
        kept.spec = s; // a weight change keeps pool, health and counters
        return kept;
      }
      return new Backend(s, pool);
    });
    this.health = health;
    this.strategy = strategy;
    this.table = tableOf(next, this.ticket);
    this.metrics.setBackends(next.map((b) => b.key));
    for (const b of next) this.metrics.setHealth(b.index, b.health.up);
    // Removed backends: requests in flight finish on them; their idle connections go now.
    for (const gone of old.values()) gone.pool.retire();
  }

  /** Active probes: the first round now, then every probeIntervalMs per backend; never two at once. */
  startProbes(): void {
    if (this.probeTimer !== null) return;
    this.probeTick();
    this.probeTimer = setInterval(() => this.probeTick(), PROBE_TICK_MS);
  }

  private probeTick(): void {
    const now = performance.now();
    const { probeIntervalMs, probeTimeoutMs, healthPath } = this.health;
    for (const b of this.table.entries) {
      if (!canStartProbe(b.health, now, probeIntervalMs)) continue;
      probeStarted(b.health, now);
      void probeBackend(b.spec, healthPath, probeTimeoutMs, this.poolOpts.insecure).then((r) => {
        this.apply(b, probeFinished(b.health, r.ok, r.reason, this.health).changed);
      });
    }
  }

  close(): void {
    if (this.probeTimer !== null) clearInterval(this.probeTimer);
    this.probeTimer = null;
    for (const b of this.table.entries) b.pool.closeAll();
  }
}
