// The control plane, run once per instance (by the mp supervisor, or inside the sp process): loads and
// watches the backends config, publishes each valid version into the shared region, runs the active
// health probes (once for all workers) and owns the config-reload metrics. Workers never talk to it:
// they read what it publishes.
import { readFileSync, statSync } from "node:fs";
import {
  type BackendsFile,
  ConfigError,
  describeReload,
  keyOf,
  parseBackendsFile,
} from "../config/backends-file.ts";
import type { BackendSpec, HealthOptions, Options, Strategy } from "../config/options.ts";
import { type FileWatch, watchBackendsFile } from "../config/watch.ts";
import {
  canStartProbe,
  describeTransition,
  type HealthState,
  newHealthState,
  probeStarted,
} from "../core/health.ts";
import { CONFIG_BYTES_MAX } from "../core/limits.ts";
import { lastState, recordShared, resetRow, rowIsUp, rowWord, setRowWord } from "../shm/health.ts";
import { H_RR, SUPERVISOR_SLOT } from "../shm/layout.ts";
import { SharedMetricsStore } from "../shm/metrics-store.ts";
import type { Region } from "../shm/region.ts";
import { publishTable, readTable } from "../shm/table.ts";
import { log } from "../telemetry/log.ts";
import { Metrics } from "../telemetry/metrics.ts";
import { probeBackend } from "../upstream/probe.ts";

/** How often the probe loop looks for due probes; probes themselves run every probeIntervalMs. */
const PROBE_TICK_MS = 100;

/** Backends and settings from -b flags, or from the -c file (which then owns the list). */
function initialConfig(options: Options): BackendsFile {
  const path = options.configFile;
  if (path === null) return { backends: options.backends, health: {} };
  if (statSync(path).size > CONFIG_BYTES_MAX) {
    throw new ConfigError(path, "", `larger than ${CONFIG_BYTES_MAX} bytes`);
  }
  return parseBackendsFile(readFileSync(path, "utf8"), path);
}

/** File key of each health option, for the override warning. */
const HEALTH_FLAG: Record<keyof HealthOptions, string> = {
  healthPath: "--health-path",
  probeIntervalMs: "--probe-interval-ms",
  probeTimeoutMs: "--probe-timeout-ms",
  unhealthyThreshold: "--unhealthy-threshold",
  healthyThreshold: "--healthy-threshold",
};

interface Settings {
  readonly health: HealthOptions;
  readonly strategy: Strategy;
}

/**
 * Effective settings: a flag given on the command line wins over the file, the file wins over the
 * built-in default. Throws ConfigError when the merged probe timeout exceeds the interval.
 */
function settingsOf(
  options: Options,
  file: BackendsFile,
  flagsGiven: ReadonlySet<string>,
  source: string,
): Settings {
  const health = { ...options.health };
  for (const key of Object.keys(HEALTH_FLAG) as (keyof HealthOptions)[]) {
    const fromFile = file.health[key];
    if (fromFile === undefined) continue;
    if (flagsGiven.has(HEALTH_FLAG[key])) {
      log.warn("config", `${HEALTH_FLAG[key]} on the command line overrides ${key} from ${source}`);
    } else (health as Record<string, unknown>)[key] = fromFile;
  }
  if (health.probeTimeoutMs > health.probeIntervalMs) {
    throw new ConfigError(
      source,
      "",
      `probe timeout ${health.probeTimeoutMs} ms is longer than the probe interval ${health.probeIntervalMs} ms`,
    );
  }
  let strategy = options.strategy;
  if (file.strategy !== undefined) {
    if (flagsGiven.has("--strategy"))
      log.warn("config", `--strategy on the command line overrides ${source}`);
    else strategy = file.strategy;
  }
  return { health: health as HealthOptions, strategy };
}

/** A configured backend as the control plane tracks it: its row, and its probe schedule. */
interface Probed {
  readonly spec: BackendSpec;
  readonly key: string;
  readonly row: number;
  readonly probe: HealthState;
}

export interface ControlOptions {
  /** Long names of the flags given on the command line: they win over the -c file's settings. */
  readonly flagsGiven?: ReadonlySet<string>;
  /** Active health probes (default on). In-process tests that count backend requests turn them off. */
  readonly activeProbes?: boolean;
  /** Number of process slots whose metrics are summed (supervisor + workers). */
  readonly slotsInUse: number;
}

export class Control {
  readonly metrics: Metrics;
  private readonly words: Int32Array;
  private current: BackendsFile;
  private settings: Settings;
  private list: Probed[] = [];
  private watch: FileWatch | null = null;
  private probeTimer: ReturnType<typeof setInterval> | null = null;

  /** Throws ConfigError for a bad config file or settings (exit 2 at start). */
  constructor(
    private readonly options: Options,
    region: Region,
    private readonly start: ControlOptions,
  ) {
    this.words = region.words;
    const source = options.configFile ?? "flags";
    this.current = initialConfig(options);
    this.settings = settingsOf(options, this.current, this.flagsGiven, source);
    this.metrics = new Metrics([], new SharedMetricsStore(region, SUPERVISOR_SLOT, start.slotsInUse), true);
    this.metrics.upOfRow = (row) => rowIsUp(this.words, row);
    this.publish(this.current.backends, this.settings);
  }

  private get flagsGiven(): ReadonlySet<string> {
    return this.start.flagsGiven ?? new Set<string>();
  }

  get backends(): readonly BackendSpec[] {
    return this.list.map((p) => p.spec);
  }

  /** Writes a backend list into the region: rows are kept per host:port, new rows start up. */
  private publish(specs: readonly BackendSpec[], settings: Settings): void {
    const before = new Set(this.list.map((p) => p.key));
    const keys = specs.map((s) => keyOf(s));
    this.metrics.setBackends(keys);
    const probes = new Map(this.list.map((p) => [p.key, p.probe]));
    this.list = specs.map((spec, i) => {
      const row = this.metrics.row(i);
      if (!before.has(keys[i]!)) resetRow(this.words, row);
      return { spec, key: keys[i]!, row, probe: probes.get(keys[i]!) ?? newHealthState() };
    });
    const generation = publishTable(this.words, {
      strategy: settings.strategy,
      unhealthyThreshold: settings.health.unhealthyThreshold,
      healthyThreshold: settings.health.healthyThreshold,
      backends: specs,
      rows: this.list.map((p) => p.row),
    });
    this.metrics.tableInUse(generation);
    this.settings = settings;
  }

  /**
   * Binary upgrade: the backends this instance shares with the old one keep the old one's health, and
   * the round-robin ticket continues. `old` is the previous instance's region (same layout version).
   */
  inherit(old: Region): void {
    const t = readTable(old.words);
    if (t === null) return;
    const oldRow = new Map(t.backends.map((b, i) => [keyOf(b), t.rows[i]!]));
    let kept = 0;
    for (const p of this.list) {
      const r = oldRow.get(p.key);
      if (r === undefined) continue;
      setRowWord(this.words, p.row, rowWord(old.words, r));
      kept++;
    }
    Atomics.store(this.words, H_RR, Atomics.load(old.words, H_RR));
    log.info("upgrade", `took over health state of ${kept} backend(s) from ${old.path}`);
  }

  /** Starts watching the -c file (if any) and probing. */
  run(): void {
    if (this.start.activeProbes !== false) this.startProbes();
    const file = this.options.configFile;
    if (file === null) return;
    this.watch = watchBackendsFile(
      file,
      (next) => {
        let settings: Settings;
        try {
          settings = settingsOf(this.options, next, this.flagsGiven, file);
        } catch (err) {
          this.metrics.reload(false, Date.now());
          log.err("config", `${(err as Error).message} (keeping the last good config)`);
          return;
        }
        this.publish(next.backends, settings);
        this.metrics.reload(true, Date.now());
        log.info("config", describeReload(file, this.current, next));
        this.current = next;
      },
      (err) => {
        this.metrics.reload(false, Date.now());
        log.err("config", `${err.message} (keeping the last good config)`);
      },
      { initial: this.current },
    );
  }

  /** Re-reads the config file now (SIGHUP); a no-op without -c. */
  reload(): void {
    this.watch?.trigger();
  }

  private startProbes(): void {
    this.probeTick();
    this.probeTimer = setInterval(() => this.probeTick(), PROBE_TICK_MS);
  }

  /** Active probes: the first round now, then every probeIntervalMs per backend; never two at once. */
  private probeTick(): void {
    const now = performance.now();
    const { probeIntervalMs, probeTimeoutMs, healthPath } = this.settings.health;
    for (const p of this.list) {
      if (!canStartProbe(p.probe, now, probeIntervalMs)) continue;
      probeStarted(p.probe, now);
      void probeBackend(p.spec, healthPath, probeTimeoutMs, this.options.insecure).then((r) => {
        p.probe.probeInFlight = false;
        // Removed (or its row given to another backend) while the probe ran: the result is stale.
        if (!this.list.some((q) => q.key === p.key && q.row === p.row)) return;
        const changed = recordShared(this.words, p.row, r.ok, r.reason, this.settings.health);
        if (changed === null) return;
        const line = describeTransition(p.key, changed, lastState());
        if (changed === "down") log.warn("health", line);
        else log.info("health", line);
      });
    }
  }

  close(): void {
    this.watch?.close();
    this.watch = null;
    if (this.probeTimer !== null) clearInterval(this.probeTimer);
    this.probeTimer = null;
  }
}
