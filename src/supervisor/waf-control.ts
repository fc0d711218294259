// The WAF's control plane (mp supervisor, or inside the sp process): loads --waf-config, publishes its
// validated text into the shared region for the workers, reloads it through the same watcher as the
// backends file (an invalid file keeps the rules in force), and logs the fleet-wide stats line.
import { readFileSync, statSync } from "node:fs";
import { ConfigError } from "../config/backends-file.ts";
import { parseWafFile, type WafConfig } from "../config/waf-file.ts";
import { type FileWatch, watchConfigFile } from "../config/watch.ts";
import { CONFIG_BYTES_MAX } from "../core/limits.ts";
import type { Region } from "../shm/region.ts";
import { clearWafTable, publishWafText } from "../shm/waf.ts";
import { log } from "../telemetry/log.ts";
import type { Metrics } from "../telemetry/metrics.ts";

/** The spec's stats line period. */
export const WAF_STATS_INTERVAL_MS = 10_000;

interface Loaded {
  readonly text: string;
  readonly config: WafConfig;
}

function parse(text: string, path: string): Loaded {
  return { text, config: parseWafFile(text, path) };
}

function describe(c: WafConfig, shadowFlag: boolean): string {
  if (!c.enabled) return "disabled (enabled: false)";
  const parts = [`${c.rateLimits.length} rate-limit rule${c.rateLimits.length === 1 ? "" : "s"}`];
  if (c.burstDetectionEnabled) parts.push(`burst detection x${c.burstThreshold}/${c.burstWindowSec} s`);
  if (c.slowloris) parts.push(`max ${c.slowloris.maxConnsPerIp} in flight per client`);
  if (c.requestLimits) parts.push("request limits");
  if (c.shadowMode || shadowFlag) parts.push("SHADOW MODE (nothing is blocked)");
  return parts.join(", ");
}

export class WafControl {
  private current: Loaded;
  private watch: FileWatch | null = null;
  private statsTimer: ReturnType<typeof setInterval> | null = null;
  private lastTotal = -1;

  /** Throws ConfigError for a bad file (exit 2 at start). */
  constructor(
    private readonly path: string,
    private readonly region: Region,
    private readonly metrics: Metrics,
    private readonly shadowFlag: boolean,
  ) {
    if (statSync(path).size > CONFIG_BYTES_MAX)
      throw new ConfigError(path, "", `larger than ${CONFIG_BYTES_MAX} bytes`);
    this.current = parse(readFileSync(path, "utf8"), path);
    publishWafText(region, this.current.text);
    this.metrics.wafRules = this.current.config.rateLimits.map((r) => r.name);
    log.info("waf", `${path}: ${describe(this.current.config, shadowFlag)}`);
  }

  run(): void {
    this.watch = watchConfigFile(
      this.path,
      parse,
      (next) => this.apply(next),
      (err) => log.err("waf", `${err.message} (keeping the rules in force)`),
      { initial: this.current },
    );
    this.statsTimer = setInterval(() => this.stats(), WAF_STATS_INTERVAL_MS);
  }

  reload(): void {
    this.watch?.trigger();
  }

  private apply(next: Loaded): void {
    const before = this.current.config;
    const after = next.config;
    // Per-rule counters are kept by index: an index now naming another rule starts from zero.
    after.rateLimits.forEach((r, i) => {
      if (before.rateLimits[i]?.name !== r.name) this.metrics.wafClearRule(i);
    });
    if (after.tableSlots !== before.tableSlots) {
      clearWafTable(this.region);
      log.warn("waf", `table_slots changed to ${after.tableSlots}: rate-limit and burst state starts over`);
    }
    publishWafText(this.region, next.text);
    this.metrics.wafRules = after.rateLimits.map((r) => r.name);
    this.current = next;
    log.info("waf", `reloaded ${this.path}: ${describe(after, this.shadowFlag)}`);
  }

  /** The spec's line, fleet-wide, when anything was decided since the last one. */
  private stats(): void {
    const t = this.metrics.wafTotals();
    const total = t.allowed + t.blocked + t.logged;
    if (total === this.lastTotal) return;
    this.lastTotal = total;
    const rate = total === 0 ? 0 : Math.round((100 * t.blocked) / total);
    const r = t.byReason;
    log.info(
      "waf_stats",
      `WAF Stats: total=${total} allowed=${t.allowed} blocked=${t.blocked} logged=${t.logged} block_rate=${rate}%` +
        ` | by_reason: rate_limit=${r.rate_limit} burst=${r.burst} slowloris=${r.conn_limit} uri=${r.uri_too_long}` +
        ` body=${r.body_too_large} json=${r.json_too_deep} encoded=${r.encoded_body} table_full=${r.table_full}`,
    );
  }

  close(): void {
    this.watch?.close();
    this.watch = null;
    if (this.statsTimer !== null) clearInterval(this.statsTimer);
    this.statsTimer = null;
  }
}
