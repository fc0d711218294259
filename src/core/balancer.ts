// Backend selection. Pure: the caller owns the counter state and the backend list.
// (Strategies beyond round robin, and health, arrive with the backend-pool issue.)

export interface RoundRobinState {
  next: number;
}

/** Index of the backend for the next request, or -1 when there is none. */
export function pickRoundRobin(state: RoundRobinState, count: number): number {
  if (count === 0) return -1;
  const i = state.next % count;
  state.next = (i + 1) % count;
  return i;
}
