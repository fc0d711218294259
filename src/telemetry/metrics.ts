// Prometheus metrics: counters in a flat table of numeric slots, rendered in text format 0.0.4.
//
// Storage is a MetricsStore of plain numbers at fixed offsets (global slots, then one fixed-size row per
// backend), so a later shared-memory store (summed across workers, updated with Atomics) can replace the
// in-process one without touching the record path or the renderer. Every slot holds an integer (the
// histogram sum is kept in microseconds) because Atomics cannot add floats. The record path does index
// arithmetic and one store.add per counter: no strings, no Maps, no allocation.
//
// Backend rows are keyed by "host:port" and stable across reloads: requestStarted(i) returns the row, and
// the request reports its end against that row, so a reload that reorders or removes backends while the
// request is in flight cannot move its in-flight count onto another backend.
import { BACKENDS_MAX, METRICS_BACKEND_ROWS_MAX, WAF_RULES_MAX } from "../core/limits.ts";

export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Upper bounds (seconds, `le`) of the backend response-time histogram; +Inf is implied. */
export const LATENCY_BUCKETS_S: readonly number[] = Object.freeze([
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
]);

/** Status classes, by index: status 100-599 -> (status / 100) - 1; anything else -> "other". */
export const STATUS_CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"] as const;
/** Transport failure reasons (the ProxyErrorCode names); any other code is counted as "other". */
export const FAILURE_REASONS = [
  "connect_refused",
  "connect_timeout",
  "tls_failed",
  "upstream_reset",
  "bad_response",
  "upstream_timeout",
  "other",
] as const;
export type FailureReason = (typeof FAILURE_REASONS)[number];
/** before_send: the request never reached the backend; idempotent: it may have, but the method is safe. */
export const RETRY_REASONS = ["before_send", "idempotent"] as const;
export type RetryReason = (typeof RETRY_REASONS)[number];

/** Why the WAF refused (or, in shadow mode or for action "log", would have refused) a request. */
export const WAF_REASONS = [
  "rate_limit",
  "burst",
  "uri_too_long",
  "body_too_large",
  "json_too_deep",
  "encoded_body",
  "conn_limit",
  "table_full",
] as const;
export type WafReason = (typeof WAF_REASONS)[number];

/** A backend's row in the table; stays valid across reloads (unlike its index in the backend list). */
export type MetricsRow = number & { readonly __metricsRow: true };

/** Numeric slots. Counters use add; gauges written by one owner (health, reload state) use set. */
export interface MetricsStore {
  readonly slots: number;
  add(slot: number, n: number): void;
  get(slot: number): number;
  set(slot: number, value: number): void;
  /** Zeroes the slot everywhere it is kept (a shared store: in every process's copy). */
  clear(slot: number): void;
  /** A shared store: how many process slots it sums, and one process's value (per-worker series). */
  readonly processes?: number;
  getIn?(process: number, slot: number): number;
}

/** One process's store. Float64 keeps integers exact up to 2^53. */
export class LocalMetricsStore implements MetricsStore {
  private readonly a: Float64Array;
  constructor(readonly slots: number) {
    this.a = new Float64Array(slots);
  }
  add(slot: number, n: number): void {
    this.a[slot]! += n;
  }
  get(slot: number): number {
    return this.a[slot]!;
  }
  set(slot: number, value: number): void {
    this.a[slot] = value;
  }
  clear(slot: number): void {
    this.a[slot] = 0;
  }
}

// --- Layout. Global slots first, then METRICS_BACKEND_ROWS_MAX rows of ROW_SLOTS each.
const N_CLASSES = STATUS_CLASSES.length;
const CLASS_OTHER = N_CLASSES - 1;
const N_FAILURES = FAILURE_REASONS.length;
const N_RETRIES = RETRY_REASONS.length;
const N_BUCKETS = LATENCY_BUCKETS_S.length + 1; // the last one is +Inf

const G_RESPONSES = 0; // N_CLASSES
const G_NO_BACKEND = G_RESPONSES + N_CLASSES;
const G_RELOADS_OK = G_NO_BACKEND + 1;
const G_RELOADS_FAILED = G_RELOADS_OK + 1;
const G_LAST_RELOAD_OK = G_RELOADS_FAILED + 1; // gauge 0/1
const G_LAST_RELOAD_OK_MS = G_LAST_RELOAD_OK + 1; // gauge, epoch ms; 0 = no reload yet
const G_TABLE_GENERATION = G_LAST_RELOAD_OK_MS + 1; // gauge per process: the backend table it uses
const N_WAF_REASONS = WAF_REASONS.length;
const G_WAF_ALLOWED = G_TABLE_GENERATION + 1;
const G_WAF_BLOCKED = G_WAF_ALLOWED + 1; // N_WAF_REASONS
const G_WAF_LOGGED = G_WAF_BLOCKED + N_WAF_REASONS; // N_WAF_REASONS
const G_WAF_RULES = G_WAF_LOGGED + N_WAF_REASONS; // WAF_RULES_MAX x [blocked, logged]
const GLOBAL_SLOTS = G_WAF_RULES + 2 * WAF_RULES_MAX;

const R_RESPONSES = 0; // N_CLASSES
const R_IN_FLIGHT = R_RESPONSES + N_CLASSES; // gauge, by add(+1/-1)
const R_UP = R_IN_FLIGHT + 1; // gauge 0/1, by set
const R_ABORTS = R_UP + 1;
const R_FAILURES = R_ABORTS + 1; // N_FAILURES
const R_RETRIES = R_FAILURES + N_FAILURES; // N_RETRIES
const R_SUM_US = R_RETRIES + N_RETRIES;
const R_BUCKETS = R_SUM_US + 1; // N_BUCKETS, not cumulative (one add per observation)
const ROW_SLOTS = R_BUCKETS + N_BUCKETS;

/** Slots a store needs for this layout. */
export const METRICS_SLOTS = GLOBAL_SLOTS + METRICS_BACKEND_ROWS_MAX * ROW_SLOTS;

const BUCKET_LE = Float64Array.from(LATENCY_BUCKETS_S);
const US_PER_S = 1e6;

const ROW_FREE = 0;
const ROW_ACTIVE = 1;
const ROW_RETIRED = 2; // removed by a reload; kept until a new backend needs the room

function statusClass(status: number): number {
  return status >= 100 && status < 600 ? ((status / 100) | 0) - 1 : CLASS_OTHER;
}

function failureIndex(code: string): number {
  switch (code) {
    case "connect_refused":
      return 0;
    case "connect_timeout":
      return 1;
    case "tls_failed":
      return 2;
    case "upstream_reset":
      return 3;
    case "bad_response":
      return 4;
    case "upstream_timeout":
      return 5;
    default:
      return 6;
  }
}

/** The `backend` label value for a host and port: IPv6 literals in brackets, like a URL authority. */
export function backendLabel(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Label value escaping of text format 0.0.4: backslash, double quote and newline. */
export function escapeLabelValue(s: string): string {
  return s.replace(/[\\"\n]/g, (c) => (c === "\\" ? "\\\\" : c === '"' ? '\\"' : "\\n"));
}

function fmt(v: number): string {
  if (v === Number.POSITIVE_INFINITY) return "+Inf";
  if (v === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(v); // NaN -> "NaN"; exponents like 1e-7 parse as Go floats
}

export class Metrics {
  readonly store: MetricsStore;
  private count = 0;
  /** Current backend index -> row. */
  private readonly rowOf = new Int32Array(BACKENDS_MAX);
  private readonly rowState = new Uint8Array(METRICS_BACKEND_ROWS_MAX);
  /** Order in which rows were retired, to reuse the oldest first. */
  private readonly retiredSeq = new Float64Array(METRICS_BACKEND_ROWS_MAX);
  private seq = 0;
  private readonly rowKey: (string | null)[] = new Array(METRICS_BACKEND_ROWS_MAX).fill(null);
  /** `backend="..."`, escaped once per row. */
  private readonly rowLabel: string[] = new Array(METRICS_BACKEND_ROWS_MAX).fill("");

  /**
   * Health of a row for the gauges, when it is kept elsewhere (the shared region's health words);
   * null = the R_UP slots written by setHealth.
   */
  upOfRow: ((row: number) => boolean) | null = null;

  /**
   * `configOwner`: this instance reports the config reload gauges (one per fleet: in a shared store
   * the supervisor's, since gauges from every process are summed).
   */
  constructor(
    keys: readonly string[],
    store: MetricsStore = new LocalMetricsStore(METRICS_SLOTS),
    configOwner = true,
  ) {
    if (store.slots < METRICS_SLOTS)
      throw new RangeError(`metrics store has ${store.slots} slots, needs ${METRICS_SLOTS}`);
    this.store = store;
    // The configuration in use at start loaded fine (as Prometheus reports for its own config).
    if (configOwner) store.set(G_LAST_RELOAD_OK, 1);
    this.setBackends(keys);
  }

  /**
   * Installs a backend list whose rows were chosen elsewhere (by the supervisor's setBackends, read
   * from the shared table): same effect on recording and rendering, no allocation decisions here.
   */
  useRows(keys: readonly string[], rows: readonly number[]): void {
    if (keys.length > BACKENDS_MAX) throw new RangeError(`${keys.length} backends; at most ${BACKENDS_MAX}`);
    for (let i = 0; i < keys.length; i++) {
      const r = rows[i]!;
      if (!(r >= 0 && r < METRICS_BACKEND_ROWS_MAX)) throw new RangeError(`row ${r} out of range`);
      if (this.rowKey[r] !== keys[i]) {
        this.rowKey[r] = keys[i]!;
        this.rowLabel[r] = `backend="${escapeLabelValue(keys[i]!)}"`;
      }
      this.rowState[r] = ROW_ACTIVE;
      this.rowOf[i] = r;
    }
    this.count = keys.length;
  }

  /** Requests in flight to a row (all processes, for a shared store): least_conn and p2c read it. */
  inFlightOfRow(row: number): number {
    return this.store.get(GLOBAL_SLOTS + row * ROW_SLOTS + R_IN_FLIGHT);
  }

  /** This process's requests that were in flight when it died are gone: its own gauges go back to 0. */
  resetInFlight(): void {
    for (let r = 0; r < METRICS_BACKEND_ROWS_MAX; r++)
      this.store.set(GLOBAL_SLOTS + r * ROW_SLOTS + R_IN_FLIGHT, 0);
  }

  /** Number of backends in the current list. */
  get backendCount(): number {
    return this.count;
  }

  /**
   * Installs a new backend list (`host:port` keys, unique, at most BACKENDS_MAX). A backend that stays
   * keeps its counters whatever its new index. A removed backend's series leave the output at once; its row
   * is retired rather than freed, so requests still in flight to it end on it, and it is reused (zeroed)
   * only when a new backend needs the room, oldest idle first. A backend that comes back before its row
   * is reused continues its counters (Prometheus sees a gap, then the same series). New backends start
   * with up = 1 until setHealth says otherwise.
   */
  setBackends(keys: readonly string[]): void {
    if (keys.length > BACKENDS_MAX) throw new RangeError(`${keys.length} backends; at most ${BACKENDS_MAX}`);
    const wanted = new Set(keys);
    if (wanted.size !== keys.length) throw new RangeError("duplicate backend keys");
    const rowByKey = new Map<string, number>();
    for (let r = 0; r < METRICS_BACKEND_ROWS_MAX; r++) {
      const key = this.rowKey[r];
      if (key === null || key === undefined) continue;
      if (this.rowState[r] === ROW_ACTIVE && !wanted.has(key)) {
        this.rowState[r] = ROW_RETIRED;
        this.retiredSeq[r] = this.seq++;
      }
      rowByKey.set(key, r);
    }
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      let r = rowByKey.get(key);
      if (r === undefined) {
        r = this.freeRow();
        const old = this.rowKey[r];
        if (old !== null && old !== undefined) rowByKey.delete(old);
        for (let s = 0; s < ROW_SLOTS; s++) this.store.clear(this.base(r) + s);
        this.rowKey[r] = key;
        this.rowLabel[r] = `backend="${escapeLabelValue(key)}"`;
        this.store.set(this.base(r) + R_UP, 1);
      } else if (this.rowState[r] === ROW_RETIRED) {
        this.store.set(this.base(r) + R_UP, 1);
      }
      this.rowState[r] = ROW_ACTIVE;
      this.rowOf[i] = r;
    }
    this.count = keys.length;
  }

  /** A free row, else the oldest retired row with nothing in flight, else the oldest retired row. */
  private freeRow(): number {
    let idle = -1;
    let any = -1;
    for (let r = 0; r < METRICS_BACKEND_ROWS_MAX; r++) {
      const st = this.rowState[r];
      if (st === ROW_FREE) return r;
      if (st !== ROW_RETIRED) continue;
      if (any < 0 || this.retiredSeq[r]! < this.retiredSeq[any]!) any = r;
      if (this.store.get(this.base(r) + R_IN_FLIGHT) === 0) {
        if (idle < 0 || this.retiredSeq[r]! < this.retiredSeq[idle]!) idle = r;
      }
    }
    // At most BACKENDS_MAX rows are active, so with 2x rows there is always a retired one here.
    return idle >= 0 ? idle : any;
  }

  private isUp(r: number): boolean {
    return this.upOfRow !== null ? this.upOfRow(r) : this.store.get(this.base(r) + R_UP) !== 0;
  }

  private base(r: number): number {
    return GLOBAL_SLOTS + r * ROW_SLOTS;
  }

  /** The stable row of the backend now at index i. */
  row(i: number): MetricsRow {
    if (!(i >= 0 && i < this.count))
      throw new RangeError(`backend index ${i} out of range 0-${this.count - 1}`);
    return this.rowOf[i]! as MetricsRow;
  }

  // --- Record path. Each request to a backend: requestStarted, then exactly one of requestFinished,
  // requestFailed or requestAborted with the row it returned.

  /** A request is sent to the backend at index i; returns its row for the calls that end it. */
  requestStarted(i: number): MetricsRow {
    const r = this.row(i);
    this.store.add(GLOBAL_SLOTS + r * ROW_SLOTS + R_IN_FLIGHT, 1);
    return r;
  }

  /**
   * A request is sent to the backend with this row (a backend's row stays valid after a reload removed
   * it, unlike its index): the form for callers that hold a backend across reloads.
   */
  requestStartedRow(r: number): MetricsRow {
    if (!(r >= 0 && r < METRICS_BACKEND_ROWS_MAX)) throw new RangeError(`row ${r} out of range`);
    this.store.add(GLOBAL_SLOTS + r * ROW_SLOTS + R_IN_FLIGHT, 1);
    return r as MetricsRow;
  }

  /** The backend answered with `status` after `seconds` (the caller's choice of end point, consistently). */
  requestFinished(row: MetricsRow, status: number, seconds: number): void {
    const b = GLOBAL_SLOTS + row * ROW_SLOTS;
    const st = this.store;
    st.add(b + R_IN_FLIGHT, -1);
    st.add(b + R_RESPONSES + statusClass(status), 1);
    // biome-ignore lint/complexity/useMathMinMax: Math.max would let NaN through; NaN and negative clock steps count as 0
    const s = seconds > 0 ? seconds : 0;
    let k = 0;
    while (k < N_BUCKETS - 1 && s > BUCKET_LE[k]!) k++;
    st.add(b + R_BUCKETS + k, 1);
    st.add(b + R_SUM_US, Math.round(s * US_PER_S));
  }

  /** The exchange failed in transport; `code` is a ProxyErrorCode (unknown codes count as "other"). */
  requestFailed(row: MetricsRow, code: string): void {
    const b = GLOBAL_SLOTS + row * ROW_SLOTS;
    this.store.add(b + R_IN_FLIGHT, -1);
    this.store.add(b + R_FAILURES + failureIndex(code), 1);
  }

  /** The client went away first: ends the request without blaming the backend. */
  requestAborted(row: MetricsRow): void {
    const b = GLOBAL_SLOTS + row * ROW_SLOTS;
    this.store.add(b + R_IN_FLIGHT, -1);
    this.store.add(b + R_ABORTS, 1);
  }

  /** A failed attempt on `row` is being retried (on this or another backend). */
  retry(row: MetricsRow, reason: RetryReason): void {
    this.store.add(GLOBAL_SLOTS + row * ROW_SLOTS + R_RETRIES + (reason === "idempotent" ? 1 : 0), 1);
  }

  /** Health of the backend now at index i. */
  setHealth(i: number, up: boolean): void {
    this.store.set(GLOBAL_SLOTS + this.row(i) * ROW_SLOTS + R_UP, up ? 1 : 0);
  }

  /** A client request was answered with `status` (call once per request, or noBackend instead). */
  clientRequest(status: number): void {
    this.store.add(G_RESPONSES + statusClass(status), 1);
  }

  /** A client request was answered 503 because no backend was available; counts as a 5xx request too. */
  noBackend(): void {
    this.store.add(G_RESPONSES + 4, 1);
    this.store.add(G_NO_BACKEND, 1);
  }

  /** Rule names of the WAF config in use, by index (labels of lb_waf_rule_decisions_total); [] = no WAF. */
  wafRules: readonly string[] = [];

  /** A request passed the WAF with nothing to report. */
  wafAllowed(): void {
    this.store.add(G_WAF_ALLOWED, 1);
  }

  /**
   * A WAF finding: `blocked` = the request was refused; otherwise it was let through and logged
   * (shadow mode, or a rule with action "log"). `rule` = rate-limit rule index, or -1.
   */
  wafFinding(reason: WafReason, blocked: boolean, rule: number): void {
    this.store.add((blocked ? G_WAF_BLOCKED : G_WAF_LOGGED) + WAF_REASONS.indexOf(reason), 1);
    if (rule >= 0 && rule < WAF_RULES_MAX) this.store.add(G_WAF_RULES + 2 * rule + (blocked ? 0 : 1), 1);
  }

  /** Clears rule `index`'s counters everywhere (a reload gave the index to another rule). */
  wafClearRule(index: number): void {
    this.store.clear(G_WAF_RULES + 2 * index);
    this.store.clear(G_WAF_RULES + 2 * index + 1);
  }

  /** Fleet-wide WAF totals for the stats line. */
  wafTotals(): { allowed: number; blocked: number; logged: number; byReason: Record<WafReason, number> } {
    const st = this.store;
    const byReason = {} as Record<WafReason, number>;
    let blocked = 0;
    let logged = 0;
    for (let k = 0; k < N_WAF_REASONS; k++) {
      const b = st.get(G_WAF_BLOCKED + k);
      const l = st.get(G_WAF_LOGGED + k);
      blocked += b;
      logged += l;
      byReason[WAF_REASONS[k]!] = b + l;
    }
    return { allowed: st.get(G_WAF_ALLOWED), blocked, logged, byReason };
  }

  /** This process now routes with backend table `generation` (shown per worker, to see a reload land). */
  tableInUse(generation: number): void {
    this.store.set(G_TABLE_GENERATION, generation);
  }

  /** A configuration reload was attempted at nowMs (epoch ms). */
  reload(ok: boolean, nowMs: number): void {
    this.store.add(ok ? G_RELOADS_OK : G_RELOADS_FAILED, 1);
    this.store.set(G_LAST_RELOAD_OK, ok ? 1 : 0);
    if (ok) this.store.set(G_LAST_RELOAD_OK_MS, nowMs);
  }

  // --- Exposition.

  render(): string {
    const st = this.store;
    const n = this.count;
    let out = "";
    const family = (name: string, type: string, help: string) => {
      out += `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`;
    };

    let requests = 0;
    for (let c = 0; c < N_CLASSES; c++) requests += st.get(G_RESPONSES + c);
    family("lb_requests_total", "counter", "Client requests answered, whatever the outcome.");
    out += `lb_requests_total ${fmt(requests)}\n`;

    family("lb_responses_total", "counter", "Client requests answered, by status class.");
    for (let c = 0; c < N_CLASSES; c++) {
      const v = st.get(G_RESPONSES + c);
      if (c === CLASS_OTHER && v === 0) continue;
      out += `lb_responses_total{class="${STATUS_CLASSES[c]}"} ${fmt(v)}\n`;
    }

    family(
      "lb_no_backend_total",
      "counter",
      "Client requests answered 503 because no backend was available.",
    );
    out += `lb_no_backend_total ${fmt(st.get(G_NO_BACKEND))}\n`;

    let healthy = 0;
    for (let i = 0; i < n; i++) if (this.isUp(this.rowOf[i]!)) healthy++;
    family("lb_backends_healthy", "gauge", "Backends currently marked healthy.");
    out += `lb_backends_healthy ${healthy}\n`;
    family("lb_backends_unhealthy", "gauge", "Backends currently marked unhealthy.");
    out += `lb_backends_unhealthy ${n - healthy}\n`;

    if (n > 0) {
      family("lb_backend_up", "gauge", "Whether the backend is marked healthy (1) or not (0).");
      for (let i = 0; i < n; i++) {
        const r = this.rowOf[i]!;
        out += `lb_backend_up{${this.rowLabel[r]}} ${this.isUp(r) ? 1 : 0}\n`;
      }

      family(
        "lb_backend_responses_total",
        "counter",
        "Responses received from the backend, by status class.",
      );
      for (let i = 0; i < n; i++) {
        const r = this.rowOf[i]!;
        for (let c = 0; c < N_CLASSES; c++) {
          const v = st.get(this.base(r) + R_RESPONSES + c);
          if (c === CLASS_OTHER && v === 0) continue;
          out += `lb_backend_responses_total{${this.rowLabel[r]},class="${STATUS_CLASSES[c]}"} ${fmt(v)}\n`;
        }
      }

      family("lb_backend_in_flight", "gauge", "Requests sent to the backend and not yet ended.");
      for (let i = 0; i < n; i++) {
        const r = this.rowOf[i]!;
        out += `lb_backend_in_flight{${this.rowLabel[r]}} ${fmt(st.get(this.base(r) + R_IN_FLIGHT))}\n`;
      }

      family("lb_backend_response_seconds", "histogram", "Backend response time in seconds.");
      for (let i = 0; i < n; i++) {
        const r = this.rowOf[i]!;
        const b = this.base(r);
        const label = this.rowLabel[r];
        let cum = 0;
        for (let k = 0; k < N_BUCKETS; k++) {
          cum += st.get(b + R_BUCKETS + k);
          const le = k < N_BUCKETS - 1 ? fmt(BUCKET_LE[k]!) : "+Inf";
          out += `lb_backend_response_seconds_bucket{${label},le="${le}"} ${fmt(cum)}\n`;
        }
        out += `lb_backend_response_seconds_sum{${label}} ${fmt(st.get(b + R_SUM_US) / US_PER_S)}\n`;
        out += `lb_backend_response_seconds_count{${label}} ${fmt(cum)}\n`;
      }

      family("lb_backend_failures_total", "counter", "Transport failures talking to the backend, by reason.");
      for (let i = 0; i < n; i++) {
        const r = this.rowOf[i]!;
        for (let f = 0; f < N_FAILURES; f++) {
          const v = st.get(this.base(r) + R_FAILURES + f);
          out += `lb_backend_failures_total{${this.rowLabel[r]},reason="${FAILURE_REASONS[f]}"} ${fmt(v)}\n`;
        }
      }

      family(
        "lb_backend_client_aborts_total",
        "counter",
        "Requests to the backend ended because the client left.",
      );
      for (let i = 0; i < n; i++) {
        const r = this.rowOf[i]!;
        out += `lb_backend_client_aborts_total{${this.rowLabel[r]}} ${fmt(st.get(this.base(r) + R_ABORTS))}\n`;
      }

      family(
        "lb_backend_retries_total",
        "counter",
        "Failed attempts on the backend that were retried, by reason.",
      );
      for (let i = 0; i < n; i++) {
        const r = this.rowOf[i]!;
        for (let k = 0; k < N_RETRIES; k++) {
          const v = st.get(this.base(r) + R_RETRIES + k);
          out += `lb_backend_retries_total{${this.rowLabel[r]},reason="${RETRY_REASONS[k]}"} ${fmt(v)}\n`;
        }
      }
    }

    family("lb_config_reloads_total", "counter", "Configuration reloads, by result.");
    out += `lb_config_reloads_total{result="success"} ${fmt(st.get(G_RELOADS_OK))}\n`;
    out += `lb_config_reloads_total{result="failure"} ${fmt(st.get(G_RELOADS_FAILED))}\n`;
    family("lb_config_last_reload_successful", "gauge", "Whether the last configuration reload succeeded.");
    out += `lb_config_last_reload_successful ${fmt(st.get(G_LAST_RELOAD_OK))}\n`;
    family(
      "lb_config_last_reload_success_timestamp_seconds",
      "gauge",
      "Time of the last successful configuration reload (Unix seconds; 0 = none yet).",
    );
    out += `lb_config_last_reload_success_timestamp_seconds ${fmt(st.get(G_LAST_RELOAD_OK_MS) / 1000)}\n`;

    if (this.wafRules.length > 0 || st.get(G_WAF_ALLOWED) > 0) {
      family("lb_waf_decisions_total", "counter", "WAF decisions, by action and reason.");
      out += `lb_waf_decisions_total{action="allowed",reason="none"} ${fmt(st.get(G_WAF_ALLOWED))}\n`;
      for (const [action, base] of [
        ["blocked", G_WAF_BLOCKED],
        ["logged", G_WAF_LOGGED],
      ] as const) {
        for (let k = 0; k < N_WAF_REASONS; k++) {
          out += `lb_waf_decisions_total{action="${action}",reason="${WAF_REASONS[k]}"} ${fmt(st.get(base + k))}\n`;
        }
      }
      if (this.wafRules.length > 0) {
        family(
          "lb_waf_rule_decisions_total",
          "counter",
          "Requests over a rate-limit rule, by rule and action.",
        );
        for (let i = 0; i < this.wafRules.length; i++) {
          const rule = `rule="${escapeLabelValue(this.wafRules[i]!)}"`;
          out += `lb_waf_rule_decisions_total{${rule},action="blocked"} ${fmt(st.get(G_WAF_RULES + 2 * i))}\n`;
          out += `lb_waf_rule_decisions_total{${rule},action="logged"} ${fmt(st.get(G_WAF_RULES + 2 * i + 1))}\n`;
        }
      }
    }

    // Per worker (process slot 1..N of a shared store; slot 0 is the supervisor, which serves nothing).
    const procs = st.processes ?? 0;
    if (procs > 1 && st.getIn !== undefined) {
      family(
        "lb_config_generation",
        "gauge",
        "Generation of the latest backend table the supervisor published.",
      );
      out += `lb_config_generation ${fmt(st.getIn(0, G_TABLE_GENERATION))}\n`;
      family("lb_worker_requests_total", "counter", "Client requests answered by each worker process.");
      for (let p = 1; p < procs; p++) {
        let v = 0;
        for (let c = 0; c < N_CLASSES; c++) v += st.getIn(p, G_RESPONSES + c);
        out += `lb_worker_requests_total{worker="${p}"} ${fmt(v)}\n`;
      }
      family(
        "lb_worker_config_generation",
        "gauge",
        "Backend table generation each worker routes with (all equal once a reload has reached every worker).",
      );
      for (let p = 1; p < procs; p++)
        out += `lb_worker_config_generation{worker="${p}"} ${fmt(st.getIn(p, G_TABLE_GENERATION))}\n`;
    }
    return out;
  }
}
