// The WAF as a serving process runs it: admit() decides each request before anything is forwarded,
// over the config the supervisor published in the shared region and the shared tables, so limits hold
// for all workers together. Order (spec "WAF Request Flow"): connection cap -> request limits (URI,
// declared body size) -> rate limits (rule order) -> burst detection. Body checks that need the body
// (a chunked body's size, JSON depth) happen while the handler reads it (checkBody / bodyRefused).
//
// The verdict object is the request context for later stages (the tracing issue reads decision,
// reason, rule and client IP from it).
import { ConfigError } from "../config/backends-file.ts";
import { parseWafFile, type WafConfig } from "../config/waf-file.ts";
import { WAF_BODY_BUFFER_BYTES_MAX } from "../core/limits.ts";
import {
  BURST_KEY_RULE,
  type BurstRule,
  burstAdmit,
  burstRule,
  newBurstDecision,
} from "../core/waf/burst.ts";
import { type Cidr, formatIp, IP_WORDS, inAnyCidr, resolveClientInto } from "../core/waf/client.ts";
import { compileRules, normalisePath, type RuleMatcher } from "../core/waf/path.ts";
import { type GcraRule, gcraRule, newGcraDecision, take } from "../core/waf/ratelimit.ts";
import { compileRequestLimits, type RequestLimits } from "../core/waf/request-limits.ts";
import { hashKey, SlotTable, secondsOf, TABLE_FULL } from "../core/waf/table.ts";
import type { Region } from "../shm/region.ts";
import { readWafText, wafConnWords, wafGeneration, wafSeed, wafTableWords } from "../shm/waf.ts";
import { log } from "../telemetry/log.ts";
import type { Metrics, WafReason } from "../telemetry/metrics.ts";

/** Key space of the connection cap's entries: one per (client, process), CONN_KEY_BASE - slot. */
const CONN_KEY_BASE = -1000;
/** An entry with requests in flight is never reclaimed; this far ahead stands for "not before it is 0". */
const CONN_HOLD_SEC = 86_400;
/** State words of a connection-cap entry. */
const CONN_COUNT = 0;
const CONN_OWNER = 1;
const NO_XFF: readonly string[] = Object.freeze([]);
const NO_CIDRS: readonly Cidr[] = Object.freeze([]);

/**
 * Peers whose parsed address, text and table keys are kept (parsing and hashing cost ~300 ns per
 * request, a Map lookup ~20 ns). Cleared when full: a cache, not a record of clients.
 */
const PEER_CACHE_MAX = 4096;

/** A client's address and its keys in the shared tables, worked out once. */
interface ClientKeys {
  readonly words: Uint32Array;
  text: string;
  burstHi: number;
  burstLo: number;
  /** Connection-cap keys, [hi, lo] per process slot. */
  readonly conn: Int32Array;
}

export type WafDecision = "allow" | "block" | "log_only";

/** What the WAF decided for one request (also the request context for tracing). */
export interface WafVerdict {
  decision: WafDecision;
  /** The (first) finding, or null when there was none. */
  reason: WafReason | null;
  /** Name of the rate-limit rule of the finding, or null. */
  rule: string | null;
  clientIp: string;
  /** Status to answer when blocked (429, 413, 414, 400); 0 otherwise. */
  status: number;
  retryAfterS: number;
  /** Body limits to enforce while reading: Infinity / 0 = none. */
  bodyBytesMax: number;
  jsonDepthMax: number;
  /** Connection-cap entry this request holds (release() gives it back), or -1. */
  connSlot: number;
}

interface Compiled {
  readonly config: WafConfig;
  readonly shadow: boolean;
  readonly matcher: RuleMatcher;
  readonly rules: readonly GcraRule[];
  /** Per rule: the key salt, a hash of what defines the bucket, so a reload that keeps a rule keeps its buckets. */
  readonly ruleSalts: Int32Array;
  readonly limits: RequestLimits | null;
  readonly burst: BurstRule | null;
  readonly table: SlotTable;
  readonly failOpen: boolean;
  readonly connMax: number;
}

/** Hash of a rule's identity (name, match and limits): its buckets carry over a reload only if this is equal. */
function ruleSalt(r: WafConfig["rateLimits"][number]): number {
  const s = `${r.name}\0${r.path}\0${r.method ?? ""}\0${r.requests}\0${r.periodSec}\0${r.burst}`;
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  // Keep clear of the burst and connection key spaces (small negatives).
  return (h & 0x3fffffff) | 0x40000000;
}

function freshVerdict(): WafVerdict {
  return {
    decision: "allow",
    reason: null,
    rule: null,
    clientIp: "",
    status: 0,
    retryAfterS: 0,
    bodyBytesMax: Number.POSITIVE_INFINITY,
    jsonDepthMax: 0,
    connSlot: -1,
  };
}

export class Waf {
  private generation = 0;
  private c: Compiled | null = null;
  private readonly conns: SlotTable;
  private readonly seed: number;
  private readonly key = new Int32Array(2);
  private readonly peers = new Map<string, ClientKeys>();
  /** For clients named by X-Forwarded-For: not cached (the header is the client's to vary). */
  private readonly forwarded: ClientKeys;
  private readonly gcra = newGcraDecision();
  private readonly burstOut = newBurstDecision();

  constructor(
    private readonly region: Region,
    private readonly slot: number,
    private readonly slotsInUse: number,
    private readonly metrics: Metrics,
    private readonly shadowFlag: boolean,
  ) {
    this.conns = new SlotTable(wafConnWords(region));
    this.seed = wafSeed(region);
    this.forwarded = this.newKeys();
    this.releaseDeadEntries();
  }

  /** This slot's previous process died with requests in flight: those counts are not held any more. */
  private releaseDeadEntries(): void {
    const t = this.conns;
    for (let s = 0; s < t.slotCount; s++) {
      if (t.load(s, CONN_OWNER) === this.slot && t.load(s, CONN_COUNT) !== 0) {
        t.store(s, CONN_COUNT, 0);
        t.setFreeAt(s, 0);
      }
    }
  }

  private newKeys(): ClientKeys {
    return {
      words: new Uint32Array(IP_WORDS),
      text: "",
      burstHi: 0,
      burstLo: 0,
      conn: new Int32Array(2 * this.slotsInUse),
    };
  }

  /** Fills in text and keys from k.words. */
  private keysOf(k: ClientKeys): ClientKeys {
    k.text = formatIp(k.words);
    hashKey(k.words, BURST_KEY_RULE, this.seed, this.key);
    k.burstHi = this.key[0]!;
    k.burstLo = this.key[1]!;
    for (let p = 1; p < this.slotsInUse; p++) {
      hashKey(k.words, CONN_KEY_BASE - p, this.seed, this.key);
      k.conn[2 * p] = this.key[0]!;
      k.conn[2 * p + 1] = this.key[1]!;
    }
    return k;
  }

  /**
   * The client: the peer, or (only when the peer is a trusted proxy) whom X-Forwarded-For names.
   * null for a peer that is not an IP (a unix socket): it gets request limits only.
   */
  private client(peer: string, xff: string | undefined, trusted: readonly Cidr[]): ClientKeys | null {
    let k = this.peers.get(peer);
    if (k === undefined) {
      const fresh = this.newKeys();
      if (!resolveClientInto(peer, NO_XFF, NO_CIDRS, fresh.words)) return null;
      k = this.keysOf(fresh);
      if (this.peers.size >= PEER_CACHE_MAX) this.peers.clear();
      this.peers.set(peer, k);
    }
    if (xff === undefined || trusted.length === 0 || !inAnyCidr(trusted, k.words)) return k;
    const f = this.forwarded;
    resolveClientInto(peer, [xff], trusted, f.words);
    return this.keysOf(f);
  }

  /** Adopts a newly published config, if any (one Atomics.load when nothing changed). */
  private sync(): Compiled | null {
    const gen = wafGeneration(this.region);
    if (gen === this.generation) return this.c;
    this.generation = gen;
    const pub = readWafText(this.region);
    if (pub === null || pub.text === "") {
      this.c = null;
      this.metrics.wafRules = [];
      return null;
    }
    let config: WafConfig;
    try {
      config = parseWafFile(pub.text, "waf config");
    } catch (err) {
      // The supervisor validated this text; a failure here is a bug. Keep the previous rules.
      log.err(
        "waf",
        `cannot use the published WAF config: ${err instanceof ConfigError ? err.message : String(err)}`,
      );
      return this.c;
    }
    this.c = config.enabled
      ? compile(config, this.shadowFlag, wafTableWords(this.region, config.tableSlots))
      : null;
    this.metrics.wafRules = this.c === null ? [] : config.rateLimits.map((r) => r.name);
    return this.c;
  }

  /** True when a WAF config is in force (cheap). */
  get active(): boolean {
    return this.sync() !== null;
  }

  /**
   * Decides a request. `peer`: the socket's address; `xff`: the X-Forwarded-For value (Bun joins
   * repeated lines in order) or undefined; `target`: the request-target (path and query);
   * `contentLength`: declared length, 0 for none, null for chunked.
   */
  admit(
    method: string,
    target: string,
    peer: string,
    xff: string | undefined,
    contentLength: number | null,
    contentType: string | null,
    contentEncoding: string | null,
  ): WafVerdict | null {
    const c = this.sync();
    if (c === null) return null;
    const v = freshVerdict();
    const cfg = c.config;
    const who = this.client(peer, xff, cfg.trustedProxies);
    v.clientIp = who === null ? peer : who.text;
    const now = Date.now();

    // 1. Connection cap (concurrent requests per client; see README "Slow clients").
    if (c.connMax > 0 && who !== null) {
      const over = this.acquireConn(v, who, c.connMax, now);
      if (over && this.finding(c, v, "conn_limit", -1, 429, 1, method, target)) return v;
    }
    // 2. Request limits.
    const q = target.indexOf("?");
    const path = normalisePath(q < 0 ? target : target.slice(0, q));
    if (c.limits !== null) {
      const r = c.limits.check({ uriBytes: target.length, normalisedPath: path, contentLength, contentType });
      switch (r.kind) {
        case "uri_too_long":
          if (this.finding(c, v, "uri_too_long", -1, 414, 0, method, target)) return v;
          break;
        case "body_too_large":
          if (this.finding(c, v, "body_too_large", -1, 413, 0, method, target)) return v;
          break;
        case "needs_json_scan":
          // A compressed body cannot be scanned, and a backend that inflates it would parse what we
          // never saw: refused (415) rather than let through.
          if (contentEncoding !== null && contentEncoding.toLowerCase() !== "identity") {
            if (this.finding(c, v, "encoded_body", -1, 415, 0, method, target)) return v;
            break;
          }
          v.bodyBytesMax = Math.min(r.bodyBytesMax, WAF_BODY_BUFFER_BYTES_MAX);
          v.jsonDepthMax = r.jsonDepthMax;
          break;
        case "ok":
          // A chunked body under a size limit is buffered to be checked: never more than the cap.
          v.bodyBytesMax =
            contentLength === null ? Math.min(r.bodyBytesMax, WAF_BODY_BUFFER_BYTES_MAX) : r.bodyBytesMax;
          break;
      }
    }
    // 3. Rate limits, in rule order; the first refusal decides.
    if (who !== null) {
      const ip = who.words;
      const m = c.matcher;
      const failOpen = c.failOpen;
      for (let i = m.first(path, method); i >= 0; i = m.next(path, method, i)) {
        const rule = cfg.rateLimits[i]!;
        hashKey(ip, c.ruleSalts[i]!, this.seed, this.key);
        const d = take(c.table, this.key[0]!, this.key[1]!, now, c.rules[i]!, failOpen, this.gcra);
        if (d.tableFull) {
          if (!failOpen) {
            if (this.finding(c, v, "table_full", i, 429, 1, method, target)) return v;
          } else this.letThroughUntracked(v, i);
          continue;
        }
        if (!d.allowed) {
          const retryS = Math.max(1, Math.ceil(d.retryAfterMs / 1000));
          const blocks = rule.action === "block";
          if (this.finding(c, v, "rate_limit", i, blocks ? 429 : 0, retryS, method, target)) return v;
        } else if (cfg.logging.logNearLimit && d.usedFraction >= cfg.logging.nearLimitThreshold) {
          log.info(
            "waf",
            `near limit: rule=${rule.name} client=${v.clientIp} used=${Math.round(d.usedFraction * 100)}% ${method} ${target}`,
          );
        }
      }
      // 4. Burst detection.
      if (c.burst !== null) {
        const b = burstAdmit(c.table, who.burstHi, who.burstLo, now, c.burst, failOpen, this.burstOut);
        if (b.tableFull && failOpen) this.letThroughUntracked(v, -1);
        if (b.blocked) {
          const windowMs = c.burst.windowMs;
          const retryS = Math.max(1, Math.ceil((windowMs - (now % windowMs)) / 1000));
          const reason = b.tableFull ? "table_full" : "burst";
          if (this.finding(c, v, reason, -1, 429, retryS, method, target)) return v;
        }
      }
    }
    return v;
  }

  /** The request goes on to a backend (after any body check): counted, and logged if log_allowed. */
  passed(v: WafVerdict, method: string, target: string): void {
    if (v.decision !== "allow") return; // log_only findings were counted when found
    this.metrics.wafAllowed();
    if (this.c?.config.logging.logAllowed)
      log.info("waf", `allowed client=${v.clientIp} ${method} ${target}`);
  }

  /**
   * fail_open and no table slot for this client: the request goes on untracked. Counted once per
   * request as a logged table_full finding (so an overflowing table shows in metrics and the stats
   * line); logged at debug only, since under an address-spraying attack it is every request.
   */
  private letThroughUntracked(v: WafVerdict, rule: number): void {
    if (v.reason === "table_full") return;
    if (v.reason === null) {
      v.reason = "table_full";
      v.rule = rule >= 0 ? (this.c?.config.rateLimits[rule]?.name ?? null) : null;
    }
    if (v.decision === "allow") v.decision = "log_only";
    this.metrics.wafFinding("table_full", false, rule);
    log.debug("waf", `shared table full: client=${v.clientIp} let through untracked (table_full: fail_open)`);
  }

  /**
   * Records a finding. Returns true when the request is refused now (status > 0, not shadow); else it
   * goes on as log_only (shadow mode, or a rule with action "log").
   */
  private finding(
    c: Compiled,
    v: WafVerdict,
    reason: WafReason,
    rule: number,
    status: number,
    retryAfterS: number,
    method: string,
    target: string,
  ): boolean {
    const blocks = status > 0 && !c.shadow;
    if (v.reason === null) {
      v.reason = reason;
      v.rule = rule >= 0 ? c.config.rateLimits[rule]!.name : null;
    }
    this.metrics.wafFinding(reason, blocks, rule);
    const ruleText = rule >= 0 ? ` rule=${c.config.rateLimits[rule]!.name}` : "";
    if (blocks) {
      v.decision = "block";
      v.status = status;
      v.retryAfterS = retryAfterS;
      if (c.config.logging.logBlocked)
        log.warn("waf", `blocked ${status} ${reason}${ruleText} client=${v.clientIp} ${method} ${target}`);
      return true;
    }
    v.decision = "log_only";
    if (c.config.logging.logBlocked)
      log.info("waf", `log_only ${reason}${ruleText} client=${v.clientIp} ${method} ${target}`);
    return false;
  }

  /** A body check failed while reading (chunked size, JSON depth). Returns true when it is refused. */
  bodyRefused(
    v: WafVerdict,
    reason: "body_too_large" | "json_too_deep",
    method: string,
    target: string,
  ): boolean {
    const c = this.c;
    if (c === null) return false;
    return this.finding(c, v, reason, -1, reason === "body_too_large" ? 413 : 400, 0, method, target);
  }

  /** Counts the request against its client's cap; true when that makes it over the cap. */
  private acquireConn(v: WafVerdict, who: ClientKeys, max: number, nowMs: number): boolean {
    const t = this.conns;
    const keys = who.conn;
    const own = t.findOrInsert(keys[2 * this.slot]!, keys[2 * this.slot + 1]!, nowMs, 0, this.slot);
    if (own === TABLE_FULL) return false; // not tracked: fail open (counted by no one; rare: 16k clients)
    // Count first, then check the total: two workers admitting at once can both refuse, never both pass.
    t.store(own, CONN_COUNT, t.load(own, CONN_COUNT) + 1); // this process is the entry's only writer
    t.setFreeAt(own, (secondsOf(nowMs) + CONN_HOLD_SEC) | 0);
    v.connSlot = own;
    let total = 0;
    for (let p = 1; p < this.slotsInUse; p++) {
      if (p === this.slot) {
        total += t.load(own, CONN_COUNT);
        continue;
      }
      const s = t.find(keys[2 * p]!, keys[2 * p + 1]!);
      if (s !== TABLE_FULL) total += t.load(s, CONN_COUNT);
    }
    return total > max;
  }

  /** The request ended (answered, failed or aborted): its connection-cap count goes back. */
  release(v: WafVerdict): void {
    const s = v.connSlot;
    if (s < 0) return;
    v.connSlot = -1;
    const t = this.conns;
    const n = t.load(s, CONN_COUNT) - 1;
    t.store(s, CONN_COUNT, Math.max(n, 0));
    if (n <= 0) t.setFreeAt(s, secondsOf(Date.now()));
  }
}

function compile(config: WafConfig, shadowFlag: boolean, tableWords: Int32Array): Compiled {
  return {
    config,
    shadow: shadowFlag || config.shadowMode,
    matcher: compileRules(config.rateLimits),
    rules: config.rateLimits.map((r) => gcraRule(r.requests, r.periodSec, r.burst)),
    ruleSalts: Int32Array.from(config.rateLimits.map(ruleSalt)),
    limits: config.requestLimits === undefined ? null : compileRequestLimits(config.requestLimits),
    burst: config.burstDetectionEnabled ? burstRule(config.burstWindowSec, config.burstThreshold) : null,
    table: new SlotTable(tableWords),
    failOpen: config.tableFull === "fail_open",
    connMax: config.slowloris?.maxConnsPerIp ?? 0,
  };
}

/** The answer to a refused request: small JSON naming the reason (and rule), Retry-After on 429. */
export function wafResponse(v: WafVerdict): Response {
  const body = JSON.stringify({
    error: v.reason,
    ...(v.rule === null ? {} : { rule: v.rule }),
    ...(v.status === 429 ? { retry_after_s: v.retryAfterS } : {}),
  });
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (v.status === 429) headers["retry-after"] = String(v.retryAfterS);
  // The request body was not read: closing is the only way to not parse it as the next request.
  else headers.connection = "close";
  return new Response(body + "\n", { status: v.status, headers });
}
