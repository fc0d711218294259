// Backend health: one state machine per backend, fed by passive results (real requests) and active
// probe results alike. Pure: the caller passes results and the clock in, applies the returned
// transition to the health bitmap, and logs it (one line per transition, see describeTransition).
//
// What counts as a failure is the caller's call, and it must be a transport failure only: connect
// refused or timed out, reset, timeout waiting for the response, malformed response. An HTTP 5xx
// is a working backend answering; it is a success here (a probe applies its own status rule,
// probeStatusOk).

/**
 * Health of one backend. Plain fields so a shared-memory version can implement the interface with
 * accessors over its words. Counters are bounded by the thresholds (they stop counting there).
 */
export interface HealthState {
  up: boolean;
  /** Consecutive failures; any success resets it. */
  failures: number;
  /** Consecutive successes; any failure resets it. */
  successes: number;
  /** Reason given with the latest result, for the transition log line. */
  lastReason: string;
  /** An active probe for this backend is running: no second one starts (probes never pile up). */
  probeInFlight: boolean;
  /** When the latest probe started; -Infinity before the first, so the first is due at once. */
  lastProbeStartMs: number;
}

/** HealthOptions from the config fits this shape. */
export interface HealthThresholds {
  /** Consecutive failures that take an up backend down (spec default 3). */
  readonly unhealthyThreshold: number;
  /** Consecutive successes that bring a down backend back (spec default 2). */
  readonly healthyThreshold: number;
}

export type HealthChange = "up" | "down" | null;

export interface HealthResult {
  readonly changed: HealthChange;
}

// Results are shared frozen objects: recordResult runs for every proxied request.
const UNCHANGED: HealthResult = Object.freeze({ changed: null });
const WENT_UP: HealthResult = Object.freeze({ changed: "up" });
const WENT_DOWN: HealthResult = Object.freeze({ changed: "down" });

/**
 * A backend starts UP: traffic flows before the first probe, and a dead backend is found by its
 * first unhealthy_threshold failures (passive or probe).
 */
export function newHealthState(): HealthState {
  return {
    up: true,
    failures: 0,
    successes: 0,
    lastReason: "",
    probeInFlight: false,
    lastProbeStartMs: Number.NEGATIVE_INFINITY,
  };
}

/**
 * Records one result. Returns the transition it caused, if any: "down" once unhealthyThreshold
 * failures in a row reach an up backend, "up" once healthyThreshold successes in a row reach a
 * down one. A threshold below 1 acts as 1.
 */
export function recordResult(
  state: HealthState,
  ok: boolean,
  reason: string,
  thresholds: HealthThresholds,
): HealthResult {
  state.lastReason = reason;
  if (ok) {
    const need = Math.max(1, thresholds.healthyThreshold);
    state.failures = 0;
    if (state.successes < need) state.successes++;
    if (!state.up && state.successes >= need) {
      state.up = true;
      return WENT_UP;
    }
    return UNCHANGED;
  }
  const need = Math.max(1, thresholds.unhealthyThreshold);
  state.successes = 0;
  if (state.failures < need) state.failures++;
  if (state.up && state.failures >= need) {
    state.up = false;
    return WENT_DOWN;
  }
  return UNCHANGED;
}

/** The log line for a transition, e.g. `backend 10.0.0.1:80 down: 3 consecutive failures (last: connect refused)`. */
export function describeTransition(backend: string, change: "up" | "down", state: HealthState): string {
  const n = change === "down" ? state.failures : state.successes;
  const what = change === "down" ? "failure" : "success";
  const plural = n === 1 ? what : change === "down" ? "failures" : "successes";
  const last = state.lastReason === "" ? "" : ` (last: ${state.lastReason})`;
  return `backend ${backend} ${change}: ${n} consecutive ${plural}${last}`;
}

/** When the next probe of a backend is due, counted from the start of the previous one. */
export function nextProbeDue(lastStartMs: number, intervalMs: number): number {
  return lastStartMs + intervalMs;
}

/**
 * Whether a probe may start now: it is due, and the previous probe of this backend has finished (a
 * probe slower than the interval delays the next one instead of stacking a second on top).
 */
export function canStartProbe(state: HealthState, nowMs: number, intervalMs: number): boolean {
  return !state.probeInFlight && nowMs >= nextProbeDue(state.lastProbeStartMs, intervalMs);
}

export function probeStarted(state: HealthState, nowMs: number): void {
  state.probeInFlight = true;
  state.lastProbeStartMs = nowMs;
}

/** A probe finished (ok, failed, or timed out after probe_timeout_ms): records it like any result. */
export function probeFinished(
  state: HealthState,
  ok: boolean,
  reason: string,
  thresholds: HealthThresholds,
): HealthResult {
  state.probeInFlight = false;
  return recordResult(state, ok, reason, thresholds);
}

/** A probe's HTTP status passes when it is 2xx (config reference: health_path "expects 2xx"). */
export function probeStatusOk(status: number): boolean {
  return status >= 200 && status <= 299;
}
