// Metrics in the shared region: one slot of METRICS_SLOTS float64 per process. A process adds only to
// its own slot (single writer: plain stores, no Atomics, and Atomics cannot add floats anyway), and a
// read sums every process's slot, so any worker's /metrics shows fleet-wide totals. A respawned worker
// takes over its predecessor's slot: counters continue (they never go backwards), and its in-flight
// gauges are reset at start (those requests died with the old process).
import type { MetricsStore } from "../telemetry/metrics.ts";
import { METRICS_SLOTS } from "../telemetry/metrics.ts";
import { METRICS_OFFSET, METRICS_SLOT_BYTES, PROC_SLOTS_MAX } from "./layout.ts";
import type { Region } from "./region.ts";

export class SharedMetricsStore implements MetricsStore {
  readonly slots = METRICS_SLOTS;
  private readonly own: Float64Array;
  private readonly all: Float64Array[];

  /** `slot`: this process's slot; `slotsInUse`: how many slots (from 0) hold data worth summing. */
  constructor(region: Region, slot: number, slotsInUse: number) {
    if (!(slot >= 0 && slot < slotsInUse && slotsInUse <= PROC_SLOTS_MAX))
      throw new RangeError(`metrics slot ${slot} of ${slotsInUse} (at most ${PROC_SLOTS_MAX})`);
    const view = (k: number) =>
      new Float64Array(
        region.bytes.buffer,
        region.bytes.byteOffset + METRICS_OFFSET + k * METRICS_SLOT_BYTES,
        METRICS_SLOTS,
      );
    this.all = Array.from({ length: slotsInUse }, (_, k) => view(k));
    this.own = this.all[slot]!;
  }

  add(slot: number, n: number): void {
    this.own[slot]! += n;
  }

  get(slot: number): number {
    let v = 0;
    for (let k = 0; k < this.all.length; k++) v += this.all[k]![slot]!;
    return v;
  }

  set(slot: number, value: number): void {
    this.own[slot] = value;
  }

  get processes(): number {
    return this.all.length;
  }

  getIn(process: number, slot: number): number {
    return this.all[process]![slot]!;
  }

  clear(slot: number): void {
    for (let k = 0; k < this.all.length; k++) this.all[k]![slot] = 0;
  }
}
