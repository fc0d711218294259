// The backend set as one serving process sees it: the shared table (published by the control plane in
// the shared region), this process's connection pools, and the shared health, round-robin and metrics
// state. On every pick it compares the table generation (one Atomics.load) and, when it moved, rebuilds
// its Backend objects from the new table, keeping pools and latency of backends that stay. A request
// keeps the Backend object it started with, so a reload never moves a request in flight.
import type { BackendSpec, Options, Strategy } from "../config/options.ts";
import {
  BackendTable,
  ewmaMs,
  excludeIndex,
  type PickRequest,
  pick,
  stickyCookieValue,
  type TableEntry,
} from "../core/balancer.ts";
import { describeTransition } from "../core/health.ts";
import { RETRY_BUDGET_WORDS, WindowRetryBudget } from "../core/retry.ts";
import { healthVersion, lastState, recordShared, rowIsUp, type Thresholds } from "../shm/health.ts";
import { H_RETRY_BUDGET, H_RR } from "../shm/layout.ts";
import type { Region } from "../shm/region.ts";
import { currentGeneration, readTable, type SharedTable } from "../shm/table.ts";
import { log } from "../telemetry/log.ts";
import { Metrics, type MetricsStore } from "../telemetry/metrics.ts";
import { BackendPool, type PoolOptions } from "../upstream/pool.ts";

export class Backend implements TableEntry {
  readonly key: string;
  readonly stickyId: string;
  /** Index in the current table (updated when a reload builds a new table). */
  index = 0;
  /** Stable row in the shared region (health word, metrics). */
  row = 0;
  /** This process's own count; strategies read the fleet-wide one from the shared metrics. */
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

/**
 * The PoolView strategies read: local entries, with the fleet-wide parts (health, round-robin ticket,
 * in-flight counts) read from the shared region. The healthy bitmap is derived from the rows' health
 * words and cached until the region's health version moves.
 */
class SharedView extends BackendTable<Backend> {
  private seenHealth = -1;

  constructor(
    entries: readonly Backend[],
    private readonly words: Int32Array,
    private readonly metrics: Metrics,
  ) {
    super(entries);
  }

  refreshHealth(): void {
    const v = healthVersion(this.words);
    if (v === this.seenHealth) return;
    this.seenHealth = v;
    const e = this.entries;
    for (let i = 0; i < e.length; i++) this.setHealthy(i, rowIsUp(this.words, e[i]!.row));
  }

  override inFlight(i: number): number {
    return this.metrics.inFlightOfRow(this.entries[i]!.row);
  }

  override rrNext(): number {
    return Atomics.add(this.words, H_RR, 1);
  }
}

export class Fleet {
  readonly metrics: Metrics;
  readonly budget: WindowRetryBudget;
  private readonly words: Int32Array;
  private readonly poolOpts: PoolOptions;
  private readonly cookieName: string;
  private view: SharedView;
  private generation = -1;
  private strategy: Strategy = "round_robin";
  private thresholds: Thresholds = { unhealthyThreshold: 3, healthyThreshold: 2 };

  /** Whether the latest pick() wants the sticky cookie (re)set; read right after pick(). */
  pickedSetSticky = false;

  constructor(options: Options, region: Region, store: MetricsStore) {
    this.words = region.words;
    this.poolOpts = { insecure: options.insecure, trace: options.trace, tlsTrace: options.tlsTrace };
    this.cookieName = options.cookieName;
    this.metrics = new Metrics([], store, false);
    this.metrics.upOfRow = (row) => rowIsUp(this.words, row);
    this.metrics.resetInFlight();
    this.budget = new WindowRetryBudget(
      region.words.subarray(H_RETRY_BUDGET, H_RETRY_BUDGET + RETRY_BUDGET_WORDS),
    );
    this.view = new SharedView([], this.words, this.metrics);
    this.sync();
  }

  /** Adopts a newly published table, if any. Cheap when nothing changed (one Atomics.load). */
  sync(): void {
    if (currentGeneration(this.words) === this.generation) return;
    const t = readTable(this.words);
    if (t === null) return;
    this.adopt(t);
  }

  private adopt(t: SharedTable): void {
    const old = new Map(this.view.entries.map((b) => [b.key, b]));
    const next = t.backends.map((spec, i) => {
      const pool = new BackendPool(spec, this.poolOpts);
      const kept = old.get(pool.key);
      let b: Backend;
      if (kept && kept.spec.tls === spec.tls) {
        old.delete(pool.key);
        kept.spec = spec; // a weight change keeps pool and latency
        b = kept;
      } else b = new Backend(spec, pool);
      b.index = i;
      b.row = t.rows[i]!;
      return b;
    });
    this.metrics.useRows(
      next.map((b) => b.key),
      t.rows,
    );
    this.view = new SharedView(next, this.words, this.metrics);
    this.strategy = t.strategy;
    this.thresholds = { unhealthyThreshold: t.unhealthyThreshold, healthyThreshold: t.healthyThreshold };
    this.generation = t.generation;
    this.metrics.tableInUse(t.generation);
    // Removed backends: requests in flight finish on them; their idle connections go now.
    for (const gone of old.values()) {
      gone.index = -1;
      gone.pool.retire();
    }
  }

  get backends(): readonly Backend[] {
    this.sync();
    return this.view.entries;
  }

  /** The sticky cookie's name while the strategy (which a reload may change) is sticky, else null. */
  get stickyCookie(): string | null {
    this.sync();
    return this.strategy === "sticky" ? this.cookieName : null;
  }

  /** The backend for a new attempt, or null when none is healthy (and not excluded). */
  pick(req: PickRequest): Backend | null {
    this.sync();
    const v = this.view;
    v.refreshHealth();
    const r = pick(this.strategy, v, req, Math.random);
    this.pickedSetSticky = r.setSticky;
    return r.index < 0 ? null : v.entries[r.index]!;
  }

  /** Keeps the next pick of this request off `b` (if `b` is still in the table). */
  exclude(req: PickRequest, b: Backend): void {
    if (b.index >= 0 && this.view.entries[b.index] === b) excludeIndex(req, b.index);
  }

  /** A transport result of a real request (passive health). An HTTP 5xx is a success here. */
  recordResult(b: Backend, ok: boolean, reason: string): void {
    const changed = recordShared(this.words, b.row, ok, reason, this.thresholds);
    if (changed === null) return;
    const line = describeTransition(b.key, changed, lastState());
    if (changed === "down") log.warn("health", line);
    else log.info("health", line);
  }

  recordLatency(b: Backend, ms: number): void {
    b.latencyEwmaMs = ewmaMs(b.latencyEwmaMs, ms);
  }

  /** Whether the backend is marked healthy (fleet-wide state). */
  isUp(b: Backend): boolean {
    return rowIsUp(this.words, b.row);
  }

  healthyCount(): number {
    this.sync();
    this.view.refreshHealth();
    return this.view.healthyCount();
  }

  close(): void {
    for (const b of this.view.entries) b.pool.closeAll();
  }
}
