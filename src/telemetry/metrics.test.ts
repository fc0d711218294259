import { describe, expect, test } from "bun:test";
import { BACKENDS_MAX } from "../core/limits.ts";
import {
  backendLabel,
  escapeLabelValue,
  LATENCY_BUCKETS_S,
  LocalMetricsStore,
  METRICS_CONTENT_TYPE,
  METRICS_SLOTS,
  Metrics,
  type MetricsStore,
} from "./metrics.ts";

// --- A small, strict parser for text format 0.0.4, independent of the renderer.

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const FLOAT = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN)$/;

function parseLabels(s: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let p = 0;
  while (p < s.length) {
    const eq = s.indexOf("=", p);
    if (eq < 0) throw new Error(`no = in labels: ${line}`);
    const name = s.slice(p, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`bad label name ${JSON.stringify(name)}: ${line}`);
    if (name in labels) throw new Error(`repeated label ${name}: ${line}`);
    if (s[eq + 1] !== '"') throw new Error(`label value not quoted: ${line}`);
    let v = "";
    let q = eq + 2;
    for (;;) {
      const c = s[q];
      if (c === undefined) throw new Error(`unterminated label value: ${line}`);
      if (c === '"') break;
      if (c === "\n") throw new Error(`raw newline in label value: ${line}`);
      if (c === "\\") {
        const e = s[q + 1];
        if (e === "\\") v += "\\";
        else if (e === '"') v += '"';
        else if (e === "n") v += "\n";
        else throw new Error(`bad escape \\${e}: ${line}`);
        q += 2;
        continue;
      }
      v += c;
      q++;
    }
    labels[name] = v;
    p = q + 1;
    if (p < s.length) {
      if (s[p] !== ",") throw new Error(`expected , between labels: ${line}`);
      p++;
    }
  }
  return labels;
}

/** Every line is a HELP, a TYPE or `name{labels} value`; families contiguous; samples follow their TYPE. */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  if (!text.endsWith("\n")) throw new Error("exposition does not end with a newline");
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const closed = new Set<string>();
  let current = "";
  const seen = new Set<string>();
  for (const line of text.slice(0, -1).split("\n")) {
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (meta) {
      const [, kind, name, rest] = meta as unknown as [string, string, string, string];
      if (!NAME.test(name)) throw new Error(`bad metric name: ${line}`);
      if (name !== current) {
        if (closed.has(name)) throw new Error(`family ${name} is not contiguous`);
        if (current) closed.add(current);
        current = name;
      }
      if (kind === "HELP") {
        if (helps.has(name)) throw new Error(`second HELP for ${name}`);
        helps.add(name);
      } else {
        if (types.has(name)) throw new Error(`second TYPE for ${name}`);
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(rest)) {
          throw new Error(`bad type: ${line}`);
        }
        types.set(name, rest);
      }
      continue;
    }
    const m = /^([^{ ]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const [, name, labelText, valueText] = m as unknown as [string, string, string | undefined, string];
    if (!NAME.test(name)) throw new Error(`bad metric name: ${line}`);
    if (!FLOAT.test(valueText)) throw new Error(`bad value: ${line}`);
    const type = types.get(current);
    const ok =
      name === current ||
      (type === "histogram" && [`${current}_bucket`, `${current}_sum`, `${current}_count`].includes(name));
    if (!ok || type === undefined) throw new Error(`sample ${name} outside its family (${current}): ${line}`);
    const labels = labelText === undefined ? {} : parseLabels(labelText, line);
    const id = name + JSON.stringify(Object.entries(labels).sort());
    if (seen.has(id)) throw new Error(`duplicate series: ${line}`);
    seen.add(id);
    const value = valueText === "+Inf" ? Infinity : valueText === "-Inf" ? -Infinity : Number(valueText);
    samples.push({ name, labels, value });
  }
  return { samples, types };
}

function matching(samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
}
function sum(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return matching(samples, name, labels).reduce((a, s) => a + s.value, 0);
}
/** The one sample with exactly these labels. */
function one(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter(
    (s) =>
      s.name === name &&
      Object.keys(s.labels).length === Object.keys(labels).length &&
      Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (found.length !== 1) throw new Error(`${found.length} samples for ${name} ${JSON.stringify(labels)}`);
  return found[0]!.value;
}
function parse(m: Metrics): Sample[] {
  return parseExposition(m.render()).samples;
}

/** Deterministic pseudo-random numbers (xorshift32), so failures reproduce. */
function rng(seed: number): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

test("content type is the 0.0.4 text format", () => {
  expect(METRICS_CONTENT_TYPE).toBe("text/plain; version=0.0.4; charset=utf-8");
});

test("golden render of a small example", () => {
  const m = new Metrics(["a:1"]);
  m.clientRequest(200);
  m.clientRequest(404);
  m.noBackend();
  const r = m.requestStarted(0);
  m.requestFinished(r, 200, 0.003);
  m.requestStarted(0);
  m.requestFinished(r, 502, 0.2);
  m.requestStarted(0);
  m.requestFailed(r, "connect_refused");
  m.retry(r, "before_send");
  m.requestStarted(0); // still in flight
  m.setHealth(0, false);
  m.reload(true, 1_700_000_001_250);
  m.reload(false, 1_700_000_002_000);
  const le = (v: string, n: number) => `lb_backend_response_seconds_bucket{backend="a:1",le="${v}"} ${n}`;
  const fail = (reason: string, n: number) =>
    `lb_backend_failures_total{backend="a:1",reason="${reason}"} ${n}`;
  const expected = [
    "# HELP lb_requests_total Client requests answered, whatever the outcome.",
    "# TYPE lb_requests_total counter",
    "lb_requests_total 3",
    "# HELP lb_responses_total Client requests answered, by status class.",
    "# TYPE lb_responses_total counter",
    'lb_responses_total{class="1xx"} 0',
    'lb_responses_total{class="2xx"} 1',
    'lb_responses_total{class="3xx"} 0',
    'lb_responses_total{class="4xx"} 1',
    'lb_responses_total{class="5xx"} 1',
    "# HELP lb_no_backend_total Client requests answered 503 because no backend was available.",
    "# TYPE lb_no_backend_total counter",
    "lb_no_backend_total 1",
    "# HELP lb_backends_healthy Backends currently marked healthy.",
    "# TYPE lb_backends_healthy gauge",
    "lb_backends_healthy 0",
    "# HELP lb_backends_unhealthy Backends currently marked unhealthy.",
    "# TYPE lb_backends_unhealthy gauge",
    "lb_backends_unhealthy 1",
    "# HELP lb_backend_up Whether the backend is marked healthy (1) or not (0).",
    "# TYPE lb_backend_up gauge",
    'lb_backend_up{backend="a:1"} 0',
    "# HELP lb_backend_responses_total Responses received from the backend, by status class.",
    "# TYPE lb_backend_responses_total counter",
    'lb_backend_responses_total{backend="a:1",class="1xx"} 0',
    'lb_backend_responses_total{backend="a:1",class="2xx"} 1',
    'lb_backend_responses_total{backend="a:1",class="3xx"} 0',
    'lb_backend_responses_total{backend="a:1",class="4xx"} 0',
    'lb_backend_responses_total{backend="a:1",class="5xx"} 1',
    "# HELP lb_backend_in_flight Requests sent to the backend and not yet ended.",
    "# TYPE lb_backend_in_flight gauge",
    'lb_backend_in_flight{backend="a:1"} 1',
    "# HELP lb_backend_response_seconds Backend response time in seconds.",
    "# TYPE lb_backend_response_seconds histogram",
    le("0.005", 1),
    le("0.01", 1),
    le("0.025", 1),
    le("0.05", 1),
    le("0.1", 1),
    le("0.25", 2),
    le("0.5", 2),
    le("1", 2),
    le("2.5", 2),
    le("5", 2),
    le("10", 2),
    le("+Inf", 2),
    'lb_backend_response_seconds_sum{backend="a:1"} 0.203',
    'lb_backend_response_seconds_count{backend="a:1"} 2',
    "# HELP lb_backend_failures_total Transport failures talking to the backend, by reason.",
    "# TYPE lb_backend_failures_total counter",
    fail("connect_refused", 1),
    fail("connect_timeout", 0),
    fail("tls_failed", 0),
    fail("upstream_reset", 0),
    fail("bad_response", 0),
    fail("upstream_timeout", 0),
    fail("other", 0),
    "# HELP lb_backend_client_aborts_total Requests to the backend ended because the client left.",
    "# TYPE lb_backend_client_aborts_total counter",
    'lb_backend_client_aborts_total{backend="a:1"} 0',
    "# HELP lb_backend_retries_total Failed attempts on the backend that were retried, by reason.",
    "# TYPE lb_backend_retries_total counter",
    'lb_backend_retries_total{backend="a:1",reason="before_send"} 1',
    'lb_backend_retries_total{backend="a:1",reason="idempotent"} 0',
    "# HELP lb_config_reloads_total Configuration reloads, by result.",
    "# TYPE lb_config_reloads_total counter",
    'lb_config_reloads_total{result="success"} 1',
    'lb_config_reloads_total{result="failure"} 1',
    "# HELP lb_config_last_reload_successful Whether the last configuration reload succeeded.",
    "# TYPE lb_config_last_reload_successful gauge",
    "lb_config_last_reload_successful 0",
    "# HELP lb_config_last_reload_success_timestamp_seconds Time of the last successful configuration reload (Unix seconds; 0 = none yet).",
    "# TYPE lb_config_last_reload_success_timestamp_seconds gauge",
    "lb_config_last_reload_success_timestamp_seconds 1700000001.25",
  ];
  expect(m.render()).toBe(expected.join("\n") + "\n");
});

test("with no backends the per-backend families are left out and the rest still parses", () => {
  const m = new Metrics([]);
  m.noBackend();
  const { samples, types } = parseExposition(m.render());
  expect(types.has("lb_backend_up")).toBe(false);
  expect(one(samples, "lb_requests_total")).toBe(1);
  expect(one(samples, "lb_backends_healthy")).toBe(0);
  expect(one(samples, "lb_backends_unhealthy")).toBe(0);
  expect(one(samples, "lb_config_last_reload_successful")).toBe(1);
  expect(one(samples, "lb_config_last_reload_success_timestamp_seconds")).toBe(0);
});

describe("exact counts", () => {
  test("after N requests every total equals N and nothing is left in flight", () => {
    const keys = ["10.0.0.1:80", "10.0.0.2:80", "[::1]:8443"];
    const m = new Metrics(keys);
    const rand = rng(7);
    const N = 10_000;
    const started = [0, 0, 0];
    const finished = [0, 0, 0];
    const failed = [0, 0, 0];
    const aborted = [0, 0, 0];
    let secondsTotal = 0;
    let noBackend = 0;
    for (let n = 0; n < N; n++) {
      if (rand() < 0.05) {
        m.noBackend();
        noBackend++;
        continue;
      }
      const i = Math.floor(rand() * keys.length);
      const row = m.requestStarted(i);
      started[i]!++;
      const roll = rand();
      if (roll < 0.8) {
        const status = 100 + Math.floor(rand() * 500);
        const seconds = Math.round(rand() * 12 * 1e6) / 1e6; // whole microseconds, some past 10 s
        secondsTotal += seconds;
        m.requestFinished(row, status, seconds);
        m.clientRequest(status);
        finished[i]!++;
      } else if (roll < 0.95) {
        m.requestFailed(row, roll < 0.9 ? "connect_refused" : "upstream_timeout");
        m.retry(row, "before_send");
        m.clientRequest(502);
        failed[i]!++;
      } else {
        m.requestAborted(row);
        m.clientRequest(499);
        aborted[i]!++;
      }
    }
    const s = parse(m);
    expect(one(s, "lb_requests_total")).toBe(N);
    expect(sum(s, "lb_responses_total")).toBe(N);
    expect(one(s, "lb_no_backend_total")).toBe(noBackend);
    expect(noBackend).toBeGreaterThan(0);
    for (let i = 0; i < keys.length; i++) {
      const backend = keys[i]!;
      expect(one(s, "lb_backend_in_flight", { backend })).toBe(0);
      expect(sum(s, "lb_backend_responses_total", { backend })).toBe(finished[i]!);
      expect(sum(s, "lb_backend_failures_total", { backend })).toBe(failed[i]!);
      expect(one(s, "lb_backend_client_aborts_total", { backend })).toBe(aborted[i]!);
      expect(sum(s, "lb_backend_retries_total", { backend })).toBe(failed[i]!);
      expect(finished[i]! + failed[i]! + aborted[i]!).toBe(started[i]!);
      expect(one(s, "lb_backend_response_seconds_count", { backend })).toBe(finished[i]!);
      expect(one(s, "lb_backend_response_seconds_bucket", { backend, le: "+Inf" })).toBe(finished[i]!);
    }
    expect(sum(s, "lb_backend_response_seconds_count")).toBe(
      N - noBackend - sum(s, "lb_backend_failures_total") - sum(s, "lb_backend_client_aborts_total"),
    );
    // Whole microseconds in, so the sum is exact up to float rounding of the total.
    expect(sum(s, "lb_backend_response_seconds_sum")).toBeCloseTo(secondsTotal, 3);
  });

  test("histogram buckets are cumulative, le bounds inclusive, +Inf equals _count", () => {
    const m = new Metrics(["h:1"]);
    const observations = [0, 0.005, 0.0050001, 0.1, 0.3, 1, 10, 10.5, 99, Number.NaN, -1];
    for (const seconds of observations) m.requestFinished(m.requestStarted(0), 200, seconds);
    const s = parse(m);
    const buckets = matching(s, "lb_backend_response_seconds_bucket", { backend: "h:1" });
    expect(buckets.map((b) => b.labels.le)).toEqual([...LATENCY_BUCKETS_S.map(String), "+Inf"]);
    for (let k = 1; k < buckets.length; k++)
      expect(buckets[k]!.value).toBeGreaterThanOrEqual(buckets[k - 1]!.value);
    // Cumulative count per le, computed from the observations directly (NaN and -1 count as 0 s).
    for (const b of buckets) {
      const le = b.labels.le === "+Inf" ? Infinity : Number(b.labels.le);
      const expected = observations.filter((x) => (Number.isNaN(x) ? 0 : Math.max(x, 0)) <= le).length;
      expect(`${b.labels.le}:${b.value}`).toBe(`${b.labels.le}:${expected}`);
    }
    expect(one(s, "lb_backend_response_seconds_bucket", { backend: "h:1", le: "0.005" })).toBe(4);
    expect(one(s, "lb_backend_response_seconds_count", { backend: "h:1" })).toBe(observations.length);
    expect(one(s, "lb_backend_response_seconds_sum", { backend: "h:1" })).toBeCloseTo(
      0.005 + 0.0050001 + 0.1 + 0.3 + 1 + 10 + 10.5 + 99,
      6,
    );
  });
});

test("status classes: 1xx-5xx by hundreds, anything else as 'other' (shown only when non-zero)", () => {
  const m = new Metrics(["s:1"]);
  expect(parse(m).some((x) => x.labels.class === "other")).toBe(false);
  for (const status of [100, 199, 200, 299, 301, 404, 499, 500, 599]) {
    m.clientRequest(status);
    m.requestFinished(m.requestStarted(0), status, 0.001);
  }
  m.clientRequest(600);
  m.clientRequest(99);
  m.requestFinished(m.requestStarted(0), 999, 0.001);
  const s = parse(m);
  const classes = { "1xx": 2, "2xx": 2, "3xx": 1, "4xx": 2, "5xx": 2 };
  for (const [c, n] of Object.entries(classes)) {
    expect(one(s, "lb_responses_total", { class: c })).toBe(n);
    expect(one(s, "lb_backend_responses_total", { backend: "s:1", class: c })).toBe(n);
  }
  expect(one(s, "lb_responses_total", { class: "other" })).toBe(2);
  expect(one(s, "lb_backend_responses_total", { backend: "s:1", class: "other" })).toBe(1);
  expect(one(s, "lb_requests_total")).toBe(11);
});

test("failure codes are a bounded set; unknown ones count as other; aborts are not failures", () => {
  const m = new Metrics(["f:1"]);
  const codes = [
    "connect_refused",
    "connect_timeout",
    "tls_failed",
    "upstream_reset",
    "bad_response",
    "upstream_timeout",
  ];
  for (const code of codes) m.requestFailed(m.requestStarted(0), code);
  m.requestFailed(m.requestStarted(0), "no_such_code");
  m.requestFailed(m.requestStarted(0), "");
  m.requestAborted(m.requestStarted(0));
  const r = m.row(0);
  m.retry(r, "idempotent");
  m.retry(r, "idempotent");
  const s = parse(m);
  for (const reason of codes) expect(one(s, "lb_backend_failures_total", { backend: "f:1", reason })).toBe(1);
  expect(one(s, "lb_backend_failures_total", { backend: "f:1", reason: "other" })).toBe(2);
  expect(matching(s, "lb_backend_failures_total")).toHaveLength(codes.length + 1);
  expect(one(s, "lb_backend_client_aborts_total", { backend: "f:1" })).toBe(1);
  expect(one(s, "lb_backend_in_flight", { backend: "f:1" })).toBe(0);
  expect(one(s, "lb_backend_retries_total", { backend: "f:1", reason: "idempotent" })).toBe(2);
  expect(one(s, "lb_backend_retries_total", { backend: "f:1", reason: "before_send" })).toBe(0);
});

test("health gauges follow setHealth; new backends start up", () => {
  const m = new Metrics(["a:1", "b:1", "c:1"]);
  let s = parse(m);
  expect(one(s, "lb_backends_healthy")).toBe(3);
  expect(one(s, "lb_backends_unhealthy")).toBe(0);
  m.setHealth(1, false);
  m.setHealth(2, false);
  m.setHealth(2, true);
  s = parse(m);
  expect(one(s, "lb_backends_healthy")).toBe(2);
  expect(one(s, "lb_backends_unhealthy")).toBe(1);
  expect(one(s, "lb_backend_up", { backend: "b:1" })).toBe(0);
  expect(one(s, "lb_backend_up", { backend: "c:1" })).toBe(1);
});

test("reload counters and last-reload gauges", () => {
  const m = new Metrics(["a:1"]);
  m.reload(true, 1_000);
  m.reload(true, 2_500);
  let s = parse(m);
  expect(one(s, "lb_config_reloads_total", { result: "success" })).toBe(2);
  expect(one(s, "lb_config_reloads_total", { result: "failure" })).toBe(0);
  expect(one(s, "lb_config_last_reload_successful")).toBe(1);
  expect(one(s, "lb_config_last_reload_success_timestamp_seconds")).toBe(2.5);
  m.reload(false, 9_000);
  s = parse(m);
  expect(one(s, "lb_config_reloads_total", { result: "failure" })).toBe(1);
  expect(one(s, "lb_config_last_reload_successful")).toBe(0);
  expect(one(s, "lb_config_last_reload_success_timestamp_seconds")).toBe(2.5);
});

describe("label values", () => {
  test("backslash, double quote and newline are escaped, and parse back to the original", () => {
    expect(escapeLabelValue('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
    const key = 'we"ird\\host\nname:80';
    const m = new Metrics([key]);
    m.requestFinished(m.requestStarted(0), 200, 0.01);
    const text = m.render();
    expect(text).toContain('lb_backend_up{backend="we\\"ird\\\\host\\nname:80"} 1\n');
    const s = parseExposition(text).samples;
    expect(one(s, "lb_backend_response_seconds_count", { backend: key })).toBe(1);
  });

  test("backendLabel brackets IPv6 literals", () => {
    expect(backendLabel("10.0.0.1", 80)).toBe("10.0.0.1:80");
    expect(backendLabel("api.example.com", 443)).toBe("api.example.com:443");
    expect(backendLabel("::1", 8080)).toBe("[::1]:8080");
  });
});

describe("setBackends", () => {
  function record(m: Metrics, i: number, n: number): void {
    for (let k = 0; k < n; k++) m.requestFinished(m.requestStarted(i), 200, 0.01);
  }

  test("backends that stay keep their counters at their new index; removed ones leave the output", () => {
    const m = new Metrics(["a:1", "b:1", "c:1"]);
    record(m, 0, 1);
    record(m, 1, 2);
    record(m, 2, 3);
    m.setHealth(2, false);
    m.setBackends(["c:1", "a:1", "d:1"]);
    const s = parse(m);
    expect(one(s, "lb_backend_responses_total", { backend: "a:1", class: "2xx" })).toBe(1);
    expect(one(s, "lb_backend_responses_total", { backend: "c:1", class: "2xx" })).toBe(3);
    expect(one(s, "lb_backend_responses_total", { backend: "d:1", class: "2xx" })).toBe(0);
    expect(one(s, "lb_backend_up", { backend: "c:1" })).toBe(0);
    expect(one(s, "lb_backend_up", { backend: "d:1" })).toBe(1);
    expect(s.filter((x) => x.labels.backend === "b:1")).toEqual([]);
    expect(one(s, "lb_backends_healthy")).toBe(2);
    expect(one(s, "lb_backends_unhealthy")).toBe(1);
    // Index 0 is now c:1.
    record(m, 0, 1);
    expect(one(parse(m), "lb_backend_responses_total", { backend: "c:1", class: "2xx" })).toBe(4);
    // Order of the output follows the new list.
    const ups = matching(parse(m), "lb_backend_up").map((x) => x.labels.backend);
    expect(ups).toEqual(["c:1", "a:1", "d:1"]);
  });

  test("a request in flight across a reload ends on its own backend", () => {
    const m = new Metrics(["a:1", "b:1"]);
    const onB = m.requestStarted(1);
    const onA = m.requestStarted(0);
    m.setBackends(["b:1"]); // a:1 removed, b:1 moves to index 0
    m.setBackends(["x:1", "b:1"]); // x:1 must not take a:1's row while a request is on it
    m.requestFinished(onB, 200, 0.01);
    m.requestFinished(onA, 200, 0.01);
    const s = parse(m);
    expect(one(s, "lb_backend_in_flight", { backend: "b:1" })).toBe(0);
    expect(one(s, "lb_backend_in_flight", { backend: "x:1" })).toBe(0);
    expect(one(s, "lb_backend_responses_total", { backend: "b:1", class: "2xx" })).toBe(1);
    expect(one(s, "lb_backend_responses_total", { backend: "x:1", class: "2xx" })).toBe(0);
    // a:1 comes back before its row was reused: its counters continue.
    m.setBackends(["a:1"]);
    expect(one(parse(m), "lb_backend_responses_total", { backend: "a:1", class: "2xx" })).toBe(1);
  });

  test("many reloads of fresh backends: rows are reused, new backends start at zero", () => {
    const m = new Metrics(["long:1"]);
    const stuck = m.requestStarted(0); // stays in flight through every reload below
    for (let round = 0; round < 6; round++) {
      const keys = Array.from({ length: BACKENDS_MAX }, (_, i) => `r${round}-${i}:80`);
      m.setBackends(keys);
      const s = parse(m);
      expect(sum(s, "lb_backend_responses_total")).toBe(0);
      expect(sum(s, "lb_backend_in_flight")).toBe(0);
      expect(matching(s, "lb_backend_up")).toHaveLength(BACKENDS_MAX);
      for (let i = 0; i < BACKENDS_MAX; i++) record(m, i, 1);
    }
    m.requestFinished(stuck, 200, 0.01);
    const s = parse(m);
    expect(sum(s, "lb_backend_in_flight")).toBe(0);
    expect(sum(s, "lb_backend_responses_total")).toBe(BACKENDS_MAX);
  });

  test("bounds and misuse are errors", () => {
    const keys = Array.from({ length: BACKENDS_MAX + 1 }, (_, i) => `h:${i + 1}`);
    expect(() => new Metrics(keys)).toThrow(`${BACKENDS_MAX + 1} backends; at most ${BACKENDS_MAX}`);
    expect(() => new Metrics(["a:1", "a:1"])).toThrow("duplicate backend keys");
    const m = new Metrics(["a:1"]);
    expect(() => m.requestStarted(1)).toThrow("backend index 1 out of range 0-0");
    expect(() => m.setHealth(-1, true)).toThrow(RangeError);
    expect(() => new Metrics([], new LocalMetricsStore(10))).toThrow(`needs ${METRICS_SLOTS}`);
  });
});

test("the renderer reads through the store: two instances over one store see the summed counts", () => {
  // The shape of the shared-memory store to come: each worker records into the same slots.
  let adds = 0;
  const inner = new LocalMetricsStore(METRICS_SLOTS);
  const shared: MetricsStore = {
    slots: inner.slots,
    add: (slot, n) => {
      adds++;
      inner.add(slot, n);
    },
    get: (slot) => inner.get(slot),
    set: (slot, v) => inner.set(slot, v),
    clear: (slot) => inner.clear(slot),
  };
  const keys = ["a:1", "b:1"];
  const w1 = new Metrics(keys, shared);
  const w2 = new Metrics(keys, shared);
  for (let n = 0; n < 30; n++) {
    const w = n % 3 === 0 ? w1 : w2;
    w.requestFinished(w.requestStarted(n % 2), 200, 0.01);
    w.clientRequest(200);
  }
  expect(adds).toBe(30 * 6); // in-flight +1 and -1, class, bucket, sum, then the client request
  const s = parse(w1);
  expect(one(s, "lb_requests_total")).toBe(30);
  expect(sum(s, "lb_backend_responses_total")).toBe(30);
  expect(one(s, "lb_backend_response_seconds_count", { backend: "b:1" })).toBe(15);
  expect(w2.render()).toBe(w1.render());
});
