import { describe, expect, test } from "bun:test";
import {
  canStartProbe,
  describeTransition,
  type HealthChange,
  type HealthState,
  newHealthState,
  nextProbeDue,
  probeFinished,
  probeStarted,
  probeStatusOk,
  recordResult,
} from "./health.ts";

const SPEC = { unhealthyThreshold: 3, healthyThreshold: 2 };

/** Feeds results ("F" failure, "S" success) and returns the transitions, one per result. */
function feed(state: HealthState, results: string, thresholds = SPEC): HealthChange[] {
  return [...results].map(
    (r) => recordResult(state, r === "S", r === "S" ? "200" : "connect refused", thresholds).changed,
  );
}

describe("health state machine", () => {
  test("starts up, with nothing counted", () => {
    expect(newHealthState()).toMatchObject({ up: true, failures: 0, successes: 0, probeInFlight: false });
  });

  test("exactly 3 consecutive failures take it down, once", () => {
    const s = newHealthState();
    expect(feed(s, "FF")).toEqual([null, null]);
    expect(s.up).toBe(true);
    expect(feed(s, "F")).toEqual(["down"]);
    expect(s.up).toBe(false);
    expect(feed(s, "FFFF")).toEqual([null, null, null, null]); // no repeated "down" lines
    expect(s.failures).toBe(3); // bounded
  });

  test("a success between failures resets the count", () => {
    const s = newHealthState();
    expect(feed(s, "FFSFF")).toEqual([null, null, null, null, null]);
    expect(s.up).toBe(true);
    expect(feed(s, "F")).toEqual(["down"]);
  });

  test("exactly 2 consecutive successes bring it back; a failure between resets them", () => {
    const s = newHealthState();
    feed(s, "FFF");
    expect(feed(s, "S")).toEqual([null]);
    expect(feed(s, "F")).toEqual([null]);
    expect(s.up).toBe(false);
    expect(feed(s, "S")).toEqual([null]);
    expect(feed(s, "S")).toEqual(["up"]);
    expect(s.up).toBe(true);
    expect(feed(s, "SSS")).toEqual([null, null, null]);
    expect(s.successes).toBe(2); // bounded
  });

  test("after coming back, it takes the full threshold again to go down", () => {
    const s = newHealthState();
    feed(s, "FFFSS");
    expect(feed(s, "FF")).toEqual([null, null]);
    expect(feed(s, "F")).toEqual(["down"]);
  });

  test("thresholds of 1 flip at once; thresholds below 1 act as 1", () => {
    const s = newHealthState();
    const one = { unhealthyThreshold: 1, healthyThreshold: 1 };
    expect(feed(s, "FSF", one)).toEqual(["down", "up", "down"]);
    const zero = { unhealthyThreshold: 0, healthyThreshold: 0 };
    expect(feed(newHealthState(), "S", zero)).toEqual([null]);
    expect(feed(newHealthState(), "FS", zero)).toEqual(["down", "up"]);
  });

  test("the transition line names the backend, the count and the last reason", () => {
    const s = newHealthState();
    recordResult(s, false, "reset", SPEC);
    recordResult(s, false, "timeout", SPEC);
    const { changed } = recordResult(s, false, "connect refused", SPEC);
    expect(changed).toBe("down");
    expect(describeTransition("10.0.0.1:80", "down", s)).toBe(
      "backend 10.0.0.1:80 down: 3 consecutive failures (last: connect refused)",
    );
    recordResult(s, true, "probe 200", SPEC);
    recordResult(s, true, "probe 200", SPEC);
    expect(describeTransition("10.0.0.1:80", "up", s)).toBe(
      "backend 10.0.0.1:80 up: 2 consecutive successes (last: probe 200)",
    );
  });
});

describe("probes", () => {
  test("the first probe is due at once, then every interval from the previous start", () => {
    const s = newHealthState();
    expect(canStartProbe(s, 0, 5000)).toBe(true);
    probeStarted(s, 1000);
    probeFinished(s, true, "200", SPEC);
    expect(nextProbeDue(s.lastProbeStartMs, 5000)).toBe(6000);
    expect(canStartProbe(s, 5999, 5000)).toBe(false);
    expect(canStartProbe(s, 6000, 5000)).toBe(true);
  });

  test("probes never pile up: a slow probe delays the next one", () => {
    const s = newHealthState();
    probeStarted(s, 0);
    expect(canStartProbe(s, 5000, 5000)).toBe(false);
    expect(canStartProbe(s, 60_000, 5000)).toBe(false);
    probeFinished(s, false, "probe timeout", SPEC);
    expect(s.probeInFlight).toBe(false);
    expect(canStartProbe(s, 60_000, 5000)).toBe(true);
  });

  test("probe results drive the same machine as passive results", () => {
    const s = newHealthState();
    recordResult(s, false, "reset", SPEC); // passive
    recordResult(s, false, "reset", SPEC);
    probeStarted(s, 0);
    expect(probeFinished(s, false, "probe status 503", SPEC).changed).toBe("down");
    probeStarted(s, 5000);
    expect(probeFinished(s, true, "probe status 200", SPEC).changed).toBe(null);
    expect(recordResult(s, true, "200", SPEC).changed).toBe("up");
  });

  test("a probe passes on 2xx only", () => {
    expect([199, 200, 204, 299, 300, 404, 500].map(probeStatusOk)).toEqual([
      false,
      true,
      true,
      true,
      false,
      false,
      false,
    ]);
  });
});
