// Backend selection strategies. Pure: no I/O, no clock, no Math.random. Everything a pick reads or
// advances sits behind PoolView, so the multi-process build can back the same code with the shared
// memory table (health words, in-flight counters, round-robin counter) instead of LocalPool.
//
// `pick` runs on every request: it allocates nothing (results come from a table of frozen objects, sets are
// bitmasks, no closures) and is O(number of backends).
import { BACKENDS_MAX } from "./limits.ts";

/** Same union as Strategy in src/config/options.ts (core may not import config). */
export type Strategy = "round_robin" | "weighted" | "random" | "sticky" | "least_conn" | "p2c";

/**
 * What a pick reads, and the strategy state it advances.
 *
 * Backend sets (healthy, excluded) are 64-bit bitmaps held as two 32-bit words: bit i of `lo` is
 * backend i (0-31), bit i-32 of `hi` is backend i (32-63). Why not the alternatives:
 * - BigInt: every `&`, `|`, `~` allocates a heap BigInt; several times slower per pick.
 * - one boolean per backend: n reads per pick and no single snapshot, while two words are read
 *   once, and shared memory can flip a bit with Atomics.or / Atomics.and on an Int32Array (the
 *   64-bit Atomics need BigInt64Array, which brings the BigInt cost back).
 */
export interface PoolView {
  /** Number of backends, at most BACKENDS_MAX. */
  count(): number;
  /** Configured weight (weighted only); backends with weight < 1 are never picked by `weighted`. */
  weight(i: number): number;
  healthyLo(): number;
  healthyHi(): number;
  /** Requests now in flight to backend i (all workers, when shared). */
  inFlight(i: number): number;
  /** Recent response-time average; 0 = no sample yet. */
  latencyEwmaMs(i: number): number;
  /** stickyCookieValue of backend i, computed once when the backend list is loaded. */
  stickyId(i: number): string;
  /** The backend whose stickyId is `id`, or -1 (a lookup table built with the list, not a scan). */
  stickyIndex(id: string): number;
  /** Returns the round-robin ticket and advances it (shared memory: Atomics.add, which wraps). */
  rrNext(): number;
  /**
   * One full cycle of smooth weighted round robin over the candidate set (lo, hi): backend indexes in
   * pick order, length = the sum of the candidates' weights. The same for every caller (it depends only
   * on weights and the set), so workers that share rrNext() share one sequence; see smoothWrrCycle.
   * Views cache it per set.
   */
  wrrCycle(lo: number, hi: number): Uint8Array;
}

/**
 * Per-request input, allocated once per client request and reused across its retries: the caller
 * adds each backend it tried to the exclude set (excludeIndex) so a retry goes elsewhere.
 */
export interface PickRequest {
  /** The client's sticky cookie value, or null when it sent none. */
  stickyId: string | null;
  excludeLo: number;
  excludeHi: number;
}

export interface PickResult {
  /** Backend index, or -1 when no healthy, non-excluded backend exists (-> 503, or stop retrying). */
  readonly index: number;
  /** sticky only: the caller sets the cookie to stickyId(index) in the response. */
  readonly setSticky: boolean;
}

// Every possible result, built once: returning one of these keeps pick allocation-free.
const KEEP: readonly PickResult[] = resultTable(false);
const MOVE: readonly PickResult[] = resultTable(true);
const NONE: PickResult = KEEP[0]!;

function resultTable(setSticky: boolean): readonly PickResult[] {
  const table: PickResult[] = [];
  for (let i = -1; i < BACKENDS_MAX; i++) table.push(Object.freeze({ index: i, setSticky }));
  return table; // not frozen: reads from a frozen array take a slow path in JSC (2x the cost of a pick)
}

/** Weight of a new sample in latencyEwmaMs: about the last 10 responses matter. */
export const LATENCY_EWMA_ALPHA = 0.2;

/** Next latency average after one response; the first sample is taken as is. */
export function ewmaMs(prevMs: number, sampleMs: number): number {
  if (prevMs <= 0) return sampleMs;
  return prevMs + LATENCY_EWMA_ALPHA * (sampleMs - prevMs);
}

export function newPickRequest(stickyId: string | null = null): PickRequest {
  return { stickyId, excludeLo: 0, excludeHi: 0 };
}

/** Keep the next pick of this request off backend i. */
export function excludeIndex(req: PickRequest, i: number): void {
  if (i < 32) req.excludeLo |= 1 << i;
  else req.excludeHi |= 1 << (i - 32);
}

/** Bit test on a two-word set (health or exclude). */
export function maskHas(lo: number, hi: number, i: number): boolean {
  return ((i < 32 ? lo >>> i : hi >>> (i - 32)) & 1) === 1;
}

/** A mutable 64-bit backend set as two words (the healthy set of a PoolView). */
export class BackendMask {
  lo = 0;
  hi = 0;
  set(i: number, on: boolean): void {
    if (i < 32) this.lo = on ? this.lo | (1 << i) : this.lo & ~(1 << i);
    else this.hi = on ? this.hi | (1 << (i - 32)) : this.hi & ~(1 << (i - 32));
  }
  has(i: number): boolean {
    return maskHas(this.lo, this.hi, i);
  }
  /** The first n backends. */
  fill(n: number): void {
    this.lo = n >= 32 ? -1 : (1 << n) - 1;
    this.hi = n <= 32 ? 0 : n >= 64 ? -1 : (1 << (n - 32)) - 1;
  }
}

function popcount32(x: number): number {
  let v = x - ((x >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

/** Position of the k-th (0-based) set bit of x; x must have more than k bits set. */
function nthBit32(x: number, k: number): number {
  let v = x;
  for (let j = 0; j < k; j++) v &= v - 1; // clear the lowest set bit k times
  return 31 - Math.clz32(v & -v);
}

/** Index of the k-th (0-based) member of the set (lo, hi); it must have more than k members. */
function nthMember(lo: number, hi: number, k: number): number {
  const inLo = popcount32(lo);
  return k < inLo ? nthBit32(lo, k) : 32 + nthBit32(hi, k - inLo);
}

/** A uniform integer in [0, n) from rand() in [0, 1). */
function below(rand: () => number, n: number): number {
  const k = Math.floor(rand() * n);
  if (k >= n) return n - 1;
  if (k >= 0) return k;
  return 0; // negative or NaN from a broken rand
}

/**
 * Round robin over the candidates: the ticket picks the k-th candidate (not "the next healthy
 * after slot t", which would hand a down backend's share to its neighbour and double its load).
 */
function roundRobin(view: PoolView, lo: number, hi: number, n: number): number {
  return nthMember(lo, hi, (view.rrNext() >>> 0) % n);
}

/**
 * nginx's smooth weighted round robin (ngx_http_upstream_get_peer) over the candidates, run for one
 * whole cycle: after sum(weights) picks every current_weight is back at 0, so the sequence repeats
 * exactly. Precomputing it turns the per-pick state (n current weights, updated together) into one
 * shared counter: pick = cycle[ticket mod length], which workers in separate processes can advance
 * with a single Atomics.add and no lock. Weights 5,1,1 give a,a,b,a,c,a,a.
 * Cost: O(length x count) once per candidate set (at most 64 x WEIGHT_MAX picks of 64 backends).
 */
export function smoothWrrCycle(
  weight: (i: number) => number,
  lo: number,
  hi: number,
  count: number,
): Uint8Array {
  const w = new Float64Array(count);
  let total = 0;
  for (let i = 0; i < count; i++) {
    const wi = weight(i);
    if (maskHas(lo, hi, i) && wi >= 1) {
      w[i] = Math.floor(wi);
      total += w[i]!;
    }
  }
  const cycle = new Uint8Array(total);
  const current = new Float64Array(count);
  for (let k = 0; k < total; k++) {
    let best = -1;
    for (let i = 0; i < count; i++) {
      if (w[i] === 0) continue;
      current[i]! += w[i]!;
      if (best < 0 || current[i]! > current[best]!) best = i;
    }
    current[best]! -= total;
    cycle[k] = best;
  }
  return cycle;
}

/** Cycles kept per view: the healthy set, and a few retry sets (healthy minus the backend that failed). */
export const WRR_CYCLES_CACHED = 4;

/** A small most-recent cache of smoothWrrCycle results for one table (weights fixed for its life). */
export class WrrCycleCache {
  private readonly los = new Int32Array(WRR_CYCLES_CACHED);
  private readonly his = new Int32Array(WRR_CYCLES_CACHED);
  private readonly cycles: (Uint8Array | null)[] = new Array(WRR_CYCLES_CACHED).fill(null);
  private next = 0;

  get(view: PoolView, lo: number, hi: number): Uint8Array {
    for (let k = 0; k < WRR_CYCLES_CACHED; k++) {
      const c = this.cycles[k];
      if (c !== null && c !== undefined && this.los[k] === lo && this.his[k] === hi) return c;
    }
    const c = smoothWrrCycle((i) => view.weight(i), lo, hi, view.count());
    const k = this.next;
    this.next = (k + 1) % WRR_CYCLES_CACHED;
    this.los[k] = lo;
    this.his[k] = hi;
    this.cycles[k] = c;
    return c;
  }
}

function weighted(view: PoolView, lo: number, hi: number): number {
  const cycle = view.wrrCycle(lo, hi);
  if (cycle.length === 0) return -1;
  return cycle[(view.rrNext() >>> 0) % cycle.length]!;
}

/**
 * Fewest in flight; a tie is broken round robin so equal backends share the load. Two passes instead
 * of a list of the tied: nothing to allocate or keep. With shared counters a count may change
 * between the passes; then the first minimum found wins.
 */
function leastConn(view: PoolView, lo: number, hi: number, count: number): number {
  let min = Number.POSITIVE_INFINITY;
  let first = -1;
  let ties = 0;
  for (let i = 0; i < count; i++) {
    if (!maskHas(lo, hi, i)) continue;
    const load = view.inFlight(i);
    if (load < min) {
      min = load;
      first = i;
      ties = 1;
    } else if (load === min) ties++;
  }
  if (ties <= 1) return first;
  let k = (view.rrNext() >>> 0) % ties;
  for (let i = first; i < count; i++) {
    if (!maskHas(lo, hi, i) || view.inFlight(i) !== min) continue;
    if (k === 0) return i;
    k--;
  }
  return first;
}

/** Power of two random choices: the less loaded of two distinct random candidates. */
function p2c(view: PoolView, lo: number, hi: number, n: number, rand: () => number): number {
  if (n === 1) return nthMember(lo, hi, 0);
  const ka = below(rand, n);
  let kb = below(rand, n - 1);
  if (kb >= ka) kb++; // distinct from ka, still uniform
  const a = nthMember(lo, hi, ka);
  const b = nthMember(lo, hi, kb);
  const loadA = view.inFlight(a);
  const loadB = view.inFlight(b);
  if (loadA !== loadB) return loadA < loadB ? a : b;
  return view.latencyEwmaMs(b) < view.latencyEwmaMs(a) ? b : a;
}

/**
 * Picks a backend for one attempt of a request. Only healthy backends not in the request's exclude
 * set are candidates; none -> index -1. `rand` returns [0, 1) (random and p2c only).
 */
export function pick(strategy: Strategy, view: PoolView, req: PickRequest, rand: () => number): PickResult {
  const count = Math.min(view.count(), BACKENDS_MAX);
  // Candidates: healthy, not excluded, index < count.
  const lo = view.healthyLo() & ~req.excludeLo & (count >= 32 ? -1 : (1 << count) - 1);
  const hi =
    view.healthyHi() & ~req.excludeHi & (count <= 32 ? 0 : count >= 64 ? -1 : (1 << (count - 32)) - 1);
  const n = popcount32(lo) + popcount32(hi);
  if (n === 0) return NONE;
  switch (strategy) {
    case "round_robin":
      return KEEP[roundRobin(view, lo, hi, n) + 1]!;
    case "weighted":
      return KEEP[weighted(view, lo, hi) + 1]!;
    case "random":
      return KEEP[nthMember(lo, hi, below(rand, n)) + 1]!;
    case "least_conn":
      return KEEP[leastConn(view, lo, hi, count) + 1]!;
    case "p2c":
      return KEEP[p2c(view, lo, hi, n, rand) + 1]!;
    case "sticky": {
      const i = req.stickyId === null ? -1 : view.stickyIndex(req.stickyId);
      // Its backend down, excluded or gone: move the client, and say so.
      if (i >= 0 && i < count && maskHas(lo, hi, i)) return KEEP[i + 1]!;
      return MOVE[roundRobin(view, lo, hi, n) + 1]!;
    }
  }
}

/**
 * The sticky cookie value for a backend: 64-bit FNV-1a of "host:port" (IPv6 hosts in brackets) as
 * 16 hex digits. It is an identifier, not a secret: it does not show the address, but anyone can
 * hash candidate addresses and compare. Stable across restarts and workers, so a client keeps its
 * backend when the backend list is reloaded with the same entry.
 */
export function stickyCookieValue(hostPort: string): string {
  const prime = 0x100000001b3n;
  const mask = 0xffffffffffffffffn;
  let h = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(hostPort)) h = ((h ^ BigInt(byte)) * prime) & mask;
  return h.toString(16).padStart(16, "0");
}

/** "host:port", with IPv6 hosts bracketed: the input of stickyCookieValue. */
export function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The fields of a configured backend that selection needs (BackendSpec fits). */
export interface BackendInfo {
  readonly host: string;
  readonly port: number;
  readonly weight: number;
}

/**
 * What a BackendTable reads from each backend. The in-flight and latency figures live on the entry, so
 * a caller that rebuilds the table (a config reload) keeps them for backends that stay.
 */
export interface TableEntry {
  readonly weight: number;
  /** stickyCookieValue of the backend, computed once. */
  readonly stickyId: string;
  inFlight: number;
  latencyEwmaMs: number;
}

/**
 * The in-process PoolView: one immutable list of entries plus the strategy state that goes with it
 * (health bitmap, smooth-WRR cycles; the round-robin ticket may be shared across rebuilt tables).
 */
export class BackendTable<E extends TableEntry> implements PoolView {
  private readonly healthy = new BackendMask();
  private readonly wrr = new WrrCycleCache();
  private readonly byStickyId = new Map<string, number>();

  constructor(
    readonly entries: readonly E[],
    private readonly ticket: { n: number } = { n: 0 },
    isUp: (entry: E) => boolean = () => true,
  ) {
    if (entries.length > BACKENDS_MAX) {
      throw new RangeError(`${entries.length} backends: at most ${BACKENDS_MAX} are supported`);
    }
    // The same host:port listed twice: the cookie names the first.
    entries.forEach((e, i) => {
      if (!this.byStickyId.has(e.stickyId)) this.byStickyId.set(e.stickyId, i);
      this.healthy.set(i, isUp(e));
    });
  }

  count(): number {
    return this.entries.length;
  }
  weight(i: number): number {
    return this.entries[i]!.weight;
  }
  healthyLo(): number {
    return this.healthy.lo;
  }
  healthyHi(): number {
    return this.healthy.hi;
  }
  inFlight(i: number): number {
    return this.entries[i]!.inFlight;
  }
  latencyEwmaMs(i: number): number {
    return this.entries[i]!.latencyEwmaMs;
  }
  stickyId(i: number): string {
    return this.entries[i]!.stickyId;
  }
  stickyIndex(id: string): number {
    return this.byStickyId.get(id) ?? -1;
  }
  rrNext(): number {
    const t = this.ticket.n;
    this.ticket.n = (t + 1) >>> 0;
    return t;
  }
  wrrCycle(lo: number, hi: number): Uint8Array {
    return this.wrr.get(this, lo, hi);
  }
  /** Apply a health transition (from recordResult) to the bitmap that pick reads. */
  setHealthy(i: number, up: boolean): void {
    this.healthy.set(i, up);
  }
  isHealthy(i: number): boolean {
    return this.healthy.has(i);
  }
  healthyCount(): number {
    let n = 0;
    for (let i = 0; i < this.entries.length; i++) if (this.healthy.has(i)) n++;
    return n;
  }
}

/** A BackendTable over plain entries (tests, and anything that needs no reload): all start healthy. */
export class LocalPool extends BackendTable<TableEntry> {
  constructor(backends: readonly BackendInfo[]) {
    super(
      backends.map((b) => ({
        weight: b.weight,
        stickyId: stickyCookieValue(hostPort(b.host, b.port)),
        inFlight: 0,
        latencyEwmaMs: 0,
      })),
    );
  }
  /** A request to backend i started. */
  begin(i: number): void {
    this.entries[i]!.inFlight++;
  }
  /** A request to backend i finished; latencyMs < 0 = no sample (it failed before a response). */
  end(i: number, latencyMs: number): void {
    const e = this.entries[i]!;
    if (e.inFlight > 0) e.inFlight--;
    if (latencyMs >= 0) e.latencyEwmaMs = ewmaMs(e.latencyEwmaMs, latencyMs);
  }
}
