// Throughput/latency benchmark: wrk against the backend directly, through zzz-lb and through nginx as a
// reverse proxy, interleaved so that machine drift hits every target equally. Never asserted in tests; it
// prints a table (and a markdown copy for the README).
//
//   bun run bench [--runs N] [--duration 5s] [--warmup 1s] [--scenarios a,b] [--targets x,y]
//                 [--backend auto|nginx|bun]

import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { Subprocess } from "bun";

// ---------------------------------------------------------------------------------------------- defaults

const DEFAULT_RUNS = 3;
const DEFAULT_DURATION = "5s";
/** Discarded run per (scenario, target) before the measured ones, so JIT and pool warm-up are not measured. */
const DEFAULT_WARMUP = "1s";
const WRK_THREADS = 2;
/** wrk's own default, spelled out because a request slower than this counts as a socket timeout error. */
const WRK_TIMEOUT = "2s";
/** How long past the requested duration a wrk run may take before it is considered hung and killed. */
const WRK_OVERRUN_MS = 20_000;
const READY_DEADLINE_MS = 15_000;
const READY_POLL_INTERVAL_MS = 50;
const READY_REQUEST_TIMEOUT_MS = 1_000;
/** Between SIGTERM and SIGKILL when stopping a child. */
const STOP_GRACE_MS = 3_000;
/** Spawn attempts per target; a retry only happens when the child died early (typically a port race). */
const START_ATTEMPTS = 3;
const HOST = "127.0.0.1";

const HELLO_BODY = "hello";
const POST_REPLY = "ok";
const BIG_BYTES = 64 * 1024;
const POST_BODY_BYTES = 16 * 1024;
/** Larger than the POST body so nginx keeps it in memory instead of writing a temp file. */
const CLIENT_BODY_BUFFER = "64k";
const NGINX_WORKER_CONNECTIONS = 4096;
/** So that neither wrk's nor the proxy's connections are ever closed by nginx mid-run. */
const NGINX_KEEPALIVE_REQUESTS = 1_000_000;
const NGINX_UPSTREAM_KEEPALIVE = 256;
const BACKEND_NGINX_WORKERS = 1;
const NGINX_PROXY_WORKERS = 1;
const DEFAULT_CLK_TCK = 100;
/** The target every other one is compared against in the ratio column. */
const REFERENCE_TARGET = "nginx-proxy";
const LOG_TAIL_CHARS = 2_000;

const REPO_ROOT = resolve(import.meta.dir, "..");
const BUN = process.execPath;
const BENCH_BACKEND_SCRIPT = join(import.meta.dir, "bench-backend.ts");

/**
 * The zzz-lb command lines under test (everything but the listen/backend arguments, which zzzArgs adds).
 * Edit here when the entry point changes; add a compiled binary or mp mode as another zzzTarget below.
 */
const ZZZ_SP_COMMAND = [BUN, "src/main.ts", "--mode", "sp"];
const zzzArgs = (port: number, backendPort: number): string[] => [
  "-h",
  HOST,
  "-p",
  String(port),
  "-b",
  `${HOST}:${backendPort}`,
  "-l",
  "warn",
];

// ---------------------------------------------------------------------------------------------- scenarios

interface Scenario {
  name: string;
  description: string;
  path: string;
  connections: number;
  /** Name of a wrk Lua script written to the temp dir (see writeLuaScripts). */
  lua?: "post";
}

const SCENARIOS: Scenario[] = [
  { name: "get5-c50", description: "GET / (5 B body), 50 connections", path: "/", connections: 50 },
  { name: "get5-c200", description: "GET / (5 B body), 200 connections", path: "/", connections: 200 },
  {
    name: "get64k-c50",
    description: "GET /big (64 KiB body), 50 connections",
    path: "/big",
    connections: 50,
  },
  {
    name: "post16k-c50",
    description: "POST /post (16 KiB request body), 50 connections",
    path: "/post",
    connections: 50,
    lua: "post",
  },
];

// ---------------------------------------------------------------------------------------------- child processes

/** Everything this script spawned and has not yet reaped; cleanup() stops all of it. */
const children = new Set<Subprocess>();
let stopping = false;
let tempDir = "";

class StoppingError extends Error {}

function spawnChild(cmd: string[], logName: string, cwd = REPO_ROOT): Subprocess {
  if (stopping) throw new StoppingError("stopping");
  const proc = Bun.spawn(cmd, {
    cwd,
    stdin: "ignore",
    stdout: Bun.file(join(tempDir, `${logName}.out`)),
    stderr: Bun.file(join(tempDir, `${logName}.err`)),
  });
  children.add(proc);
  void proc.exited.then(() => children.delete(proc));
  return proc;
}

function logTail(logName: string): string {
  let text = "";
  for (const ext of ["out", "err"]) {
    const file = join(tempDir, `${logName}.${ext}`);
    if (existsSync(file)) text += readFileSync(file, "utf8");
  }
  return text.trim().slice(-LOG_TAIL_CHARS);
}

function hasExited(proc: Subprocess): boolean {
  return proc.exitCode !== null || proc.signalCode !== null;
}

interface ProcStat {
  ppid: number;
  ticks: number; // utime + stime
  start: number; // starttime, to tell a pid apart from a later process that reused it
}

function readStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // comm (field 2) may contain spaces and parentheses, so split after the last ')'. fields[0] is field 3.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return {
    ppid: Number(fields[1]),
    ticks: Number(fields[11]) + Number(fields[12]),
    start: Number(fields[19]),
  };
}

/** pid and all its live descendants (nginx workers, zzz-lb mp workers), found through ppid in /proc. */
function processTree(root: number): Map<number, ProcStat> {
  const byParent = new Map<number, number[]>();
  const stats = new Map<number, ProcStat>();
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const stat = readStat(pid);
    if (!stat) continue;
    stats.set(pid, stat);
    const siblings = byParent.get(stat.ppid);
    if (siblings) siblings.push(pid);
    else byParent.set(stat.ppid, [pid]);
  }
  const tree = new Map<number, ProcStat>();
  const queue = [root];
  for (let pid = queue.pop(); pid !== undefined; pid = queue.pop()) {
    const stat = stats.get(pid);
    if (!stat) continue;
    tree.set(pid, stat);
    queue.push(...(byParent.get(pid) ?? []));
  }
  return tree;
}

function killIfSame(pid: number, start: number, signal: NodeJS.Signals): void {
  if (readStat(pid)?.start !== start) return; // gone, or the pid now belongs to someone else
  try {
    process.kill(pid, signal);
  } catch {
    // exited in between
  }
}

async function stopProcess(proc: Subprocess): Promise<void> {
  // Collect descendants before signalling: once the parent dies they are reparented and can't be found.
  const tree = processTree(proc.pid);
  if (!hasExited(proc)) proc.kill("SIGTERM"); // nginx: fast shutdown, it stops its workers itself
  const timer = Bun.sleep(STOP_GRACE_MS).then(() => false);
  const exitedInTime = await Promise.race([proc.exited.then(() => true), timer]);
  if (!exitedInTime) proc.kill("SIGKILL");
  for (const [pid, stat] of tree) if (pid !== proc.pid) killIfSame(pid, stat.start, "SIGKILL");
  await proc.exited;
  children.delete(proc);
}

let cleanupPromise: Promise<void> | null = null;

function cleanup(): Promise<void> {
  stopping = true;
  cleanupPromise ??= (async () => {
    await Promise.all([...children].map(stopProcess));
    if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  })();
  return cleanupPromise;
}

function installExitHandlers(): void {
  const signals: [NodeJS.Signals, number][] = [
    ["SIGINT", 2],
    ["SIGTERM", 15],
    ["SIGHUP", 1],
  ];
  for (const [signal, number] of signals) {
    process.on(signal, () => {
      console.error(`\n${signal}: stopping children and exiting`);
      void cleanup().finally(() => process.exit(128 + number));
    });
  }
  // Last resort for exits that bypassed cleanup(): synchronously SIGKILL whatever we still have below us.
  process.on("exit", () => {
    for (const [pid, stat] of processTree(process.pid)) {
      if (pid !== process.pid) killIfSame(pid, stat.start, "SIGKILL");
    }
    if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  });
}

// ---------------------------------------------------------------------------------------------- start/ready

function freePort(): number {
  // Bind port 0, read what the kernel chose, release it. Racy, so starters retry when the child dies early.
  const listener = Bun.listen({ hostname: HOST, port: 0, socket: { data() {} } });
  const port = listener.port;
  listener.stop(true);
  return port;
}

class ExitedEarly extends Error {}

async function waitReady(proc: Subprocess, port: number, what: string): Promise<void> {
  const deadline = performance.now() + READY_DEADLINE_MS;
  let lastProblem = "no answer yet";
  while (performance.now() < deadline) {
    if (hasExited(proc)) {
      throw new ExitedEarly(`${what} exited early (code ${proc.exitCode ?? proc.signalCode})`);
    }
    try {
      const res = await fetch(`http://${HOST}:${port}/`, {
        signal: AbortSignal.timeout(READY_REQUEST_TIMEOUT_MS),
        headers: { connection: "close" },
      });
      await res.arrayBuffer();
      if (res.status === 200) return;
      lastProblem = `status ${res.status}`;
    } catch (e) {
      lastProblem = String(e);
    }
    await Bun.sleep(READY_POLL_INTERVAL_MS);
  }
  throw new Error(`${what} not ready on port ${port} after ${READY_DEADLINE_MS} ms (${lastProblem})`);
}

interface Running {
  port: number;
  /** Root of the process tree whose CPU and RSS are measured. */
  pid: number;
  stop(): Promise<void>;
  /** Whether the measured process has died (a crashed proxy is skipped for the remaining runs). */
  exited(): boolean;
}

/** Spawns cmdFor(port) on a fresh free port until it answers GET / with 200. */
async function startServer(name: string, cmdFor: (port: number) => string[]): Promise<Running> {
  for (let attempt = 1; ; attempt++) {
    const port = freePort();
    const logName = `${name}-${attempt}`;
    const proc = spawnChild(cmdFor(port), logName);
    try {
      await waitReady(proc, port, name);
      return { port, pid: proc.pid, stop: () => stopProcess(proc), exited: () => hasExited(proc) };
    } catch (e) {
      await stopProcess(proc);
      if (e instanceof ExitedEarly && attempt < START_ATTEMPTS) continue;
      const tail = logTail(logName);
      throw new Error(`${(e as Error).message}${tail ? `\n--- ${name} output ---\n${tail}` : ""}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------- nginx

function findNginx(): string | null {
  // /usr/sbin is often missing from non-root PATHs.
  return Bun.which("nginx", {
    PATH: `${process.env.PATH ?? ""}:/usr/sbin:/usr/local/sbin:/usr/local/nginx/sbin`,
  });
}

function nginxPrelude(name: string, workers: number): string {
  const d = join(tempDir, name);
  mkdirSync(d, { recursive: true });
  // As root, workers would run as "nobody" and could not read our 0700 temp dir.
  const user = process.getuid?.() === 0 ? "user root;\n" : "";
  return `${user}worker_processes ${workers};
daemon off;
pid ${d}/nginx.pid;
error_log ${d}/error.log warn;
events { worker_connections ${NGINX_WORKER_CONNECTIONS}; }
http {
  access_log off;
  keepalive_requests ${NGINX_KEEPALIVE_REQUESTS};
  client_body_temp_path ${d}/client_body;
  proxy_temp_path ${d}/proxy;
  fastcgi_temp_path ${d}/fastcgi;
  uwsgi_temp_path ${d}/uwsgi;
  scgi_temp_path ${d}/scgi;
`;
}

function startNginx(nginx: string, name: string, confFor: (port: number) => string): Promise<Running> {
  return startServer(name, (port) => {
    const conf = join(tempDir, name, "nginx.conf");
    writeFileSync(conf, confFor(port));
    // -e: without it nginx first tries /var/log/nginx/error.log, which may not be writable.
    return [nginx, "-p", join(tempDir, name), "-e", join(tempDir, name, "startup.log"), "-c", conf];
  });
}

function backendNginxConf(port: number): string {
  const www = join(tempDir, "www");
  // /post: `return 200` alone answers as soon as the headers arrive and merely discards the body
  // afterwards. To behave like an application (read the whole body, then answer), the mirror module is
  // used only because it reads the complete body before the content phase. The content phase is the static
  // handler on a tiny file, which refuses POST with 405, turned into the 200 by error_page.
  return `${nginxPrelude("backend", BACKEND_NGINX_WORKERS)}  server {
    listen ${HOST}:${port};
    root ${www};
    location = / { return 200 "${HELLO_BODY}"; }
    location = /big { try_files /big.bin =404; }
    location = /post {
      client_body_buffer_size ${CLIENT_BODY_BUFFER};
      mirror /_sink;
      mirror_request_body on;
      alias ${www}/post.txt;
      error_page 405 =200 @posted;
    }
    location = /_sink { internal; return 204; }
    location @posted { return 200 "${POST_REPLY}"; }
  }
}
`;
}

function proxyNginxConf(name: string, workers: number, backendPort: number, port: number): string {
  return `${nginxPrelude(name, workers)}  upstream be { server ${HOST}:${backendPort}; keepalive ${NGINX_UPSTREAM_KEEPALIVE}; }
  server {
    listen ${HOST}:${port};
    client_body_buffer_size ${CLIENT_BODY_BUFFER};
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}

// ---------------------------------------------------------------------------------------------- targets

interface Env {
  nginx: string | null;
  backend: Running;
}

interface Target {
  name: string;
  /** Run without --targets (the rest only when named). */
  byDefault?: boolean;
  /** Whether the CPU/RSS of its process tree is the thing under test (false for the backend itself). */
  isProxy: boolean;
  /** Why it can't run here, or null. */
  missing(env: Env): string | null;
  start(env: Env): Promise<Running>;
}

/** command: e.g. [BUN, "src/main.ts", "--mode", "sp"] or ["dist/load_balancer", "--mode", "mp", "-w", "2"]. */
function zzzTarget(name: string, command: string[]): Target {
  // Repo-relative executables are made absolute: a relative command path is not looked up in the child's cwd.
  const [first = "", ...rest] = command;
  const exe = first.includes("/") ? resolve(REPO_ROOT, first) : first;
  const entry = exe === BUN ? rest[0] : exe; // src/main.ts after bun, or the binary itself
  return {
    name,
    isProxy: true,
    missing: () => (entry && !existsSync(resolve(REPO_ROOT, entry)) ? `${entry} not found` : null),
    start: (env) => startServer(name, (port) => [exe, ...rest, ...zzzArgs(port, env.backend.port)]),
  };
}

function nginxProxyTarget(name: string, workers: number): Target {
  return {
    name,
    isProxy: true,
    missing: (env) => (env.nginx ? null : "nginx not installed"),
    start: (env) =>
      startNginx(env.nginx!, name, (port) => proxyNginxConf(name, workers, env.backend.port, port)),
  };
}

const TARGETS: Target[] = [
  {
    name: "direct",
    isProxy: false,
    missing: () => null,
    start: async (env) => ({ ...env.backend, stop: async () => {} }),
  },
  zzzTarget("zzz-sp", ZZZ_SP_COMMAND),
  nginxProxyTarget(REFERENCE_TARGET, NGINX_PROXY_WORKERS),
  // Named with --targets: mp with 2 workers next to nginx with 2 workers; sp with the spec's waf.json.
  { ...zzzTarget("zzz-mp2", [BUN, "src/main.ts", "--mode", "mp", "-w", "2"]), byDefault: false },
  { ...nginxProxyTarget("nginx-proxy-2w", 2), byDefault: false },
  { ...zzzTarget("zzz-sp-waf", [...ZZZ_SP_COMMAND, "--waf-config", "examples/waf.json"]), byDefault: false },
];
// Before/after comparisons: ZZZ_BASELINE=/path/to/another/checkout adds it as target "zzz-base".
const BASELINE = process.env.ZZZ_BASELINE;
if (BASELINE) TARGETS.push(zzzTarget("zzz-base", [BUN, resolve(BASELINE, "src/main.ts"), "--mode", "sp"]));

// ---------------------------------------------------------------------------------------------- wrk

interface WrkResult {
  rps: number;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
}

function errorSummary(r: WrkResult): string {
  const parts: string[] = [];
  if (r.non2xx) parts.push(`non-2xx/3xx ${r.non2xx}`);
  for (const [kind, n] of Object.entries(r.socketErrors)) if (n) parts.push(`socket ${kind} ${n}`);
  return parts.join(", ");
}

const LATENCY_UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

function parseWrk(out: string): WrkResult {
  const num = (re: RegExp): number | null => {
    const m = re.exec(out);
    return m ? Number(m[1]) : null;
  };
  const latency = (pct: string): number | null => {
    const m = new RegExp(`^\\s*${pct}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, "m").exec(out);
    return m?.[1] && m[2] ? Number(m[1]) * (LATENCY_UNIT_MS[m[2]] ?? Number.NaN) : null;
  };
  const rps = num(/Requests\/sec:\s+([\d.]+)/);
  const requests = num(/(\d+) requests in /);
  const p50Ms = latency("50");
  const p99Ms = latency("99");
  if (rps === null || requests === null || p50Ms === null || p99Ms === null) {
    throw new Error(`could not parse wrk output:\n${out}`);
  }
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    rps,
    requests,
    p50Ms,
    p99Ms,
    non2xx: num(/Non-2xx or 3xx responses:\s+(\d+)/) ?? 0,
    socketErrors: {
      connect: Number(sock?.[1] ?? 0),
      read: Number(sock?.[2] ?? 0),
      write: Number(sock?.[3] ?? 0),
      timeout: Number(sock?.[4] ?? 0),
    },
  };
}

function durationMs(d: string): number {
  const m = /^(\d+)([smh]?)$/.exec(d);
  if (!m) throw new UsageError(`bad duration ${JSON.stringify(d)} (expected e.g. 5s, 1m)`);
  const unit = m[2] === "m" ? 60_000 : m[2] === "h" ? 3_600_000 : 1000;
  return Number(m[1]) * unit;
}

async function runWrk(wrk: string, scenario: Scenario, port: number, duration: string): Promise<WrkResult> {
  const args = [
    wrk,
    `-t${WRK_THREADS}`,
    `-c${scenario.connections}`,
    `-d${duration}`,
    "--timeout",
    WRK_TIMEOUT,
    "--latency",
  ];
  if (scenario.lua) args.push("-s", join(tempDir, `${scenario.lua}.lua`));
  args.push(`http://${HOST}:${port}${scenario.path}`);
  if (stopping) throw new StoppingError("stopping");
  const proc = Bun.spawn(args, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  children.add(proc);
  const killer = setTimeout(() => proc.kill("SIGKILL"), durationMs(duration) + WRK_OVERRUN_MS);
  try {
    const [out, err] = await Promise.all([
      new Response(proc.stdout).text(),
      new Response(proc.stderr).text(),
    ]);
    await proc.exited;
    if (stopping) throw new StoppingError("stopping");
    if (proc.exitCode !== 0) {
      throw new Error(`wrk failed (${proc.exitCode ?? proc.signalCode}):\n${out}${err}`);
    }
    return parseWrk(out);
  } finally {
    clearTimeout(killer);
    children.delete(proc);
  }
}

function writeLuaScripts(): void {
  // wrk.format adds the Content-Length header for a non-nil body.
  writeFileSync(
    join(tempDir, "post.lua"),
    `wrk.method = "POST"
wrk.body = string.rep("a", ${POST_BODY_BYTES})
wrk.headers["Content-Type"] = "application/octet-stream"
`,
  );
}

// ---------------------------------------------------------------------------------------------- measuring

let clkTck = DEFAULT_CLK_TCK;
/** Set when /proc/<pid>/clear_refs could not be written, so VmHWM is the peak since the process started. */
let peakRssIsCumulative = false;

function readClkTck(): number {
  const out = Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim();
  const n = Number(out);
  return Number.isInteger(n) && n > 0 ? n : DEFAULT_CLK_TCK;
}

function ticksByPid(root: number): Map<number, number> {
  return new Map([...processTree(root)].map(([pid, s]) => [pid, s.ticks]));
}

/** VmHWM summed over the tree, in KiB. */
function peakRssKiB(root: number): number {
  let total = 0;
  for (const pid of processTree(root).keys()) {
    try {
      const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      total += Number(m?.[1] ?? 0);
    } catch {
      // exited
    }
  }
  return total;
}

/** Resets VmHWM to the current RSS so that each run reports its own peak; false if the kernel refused. */
function resetPeakRss(root: number): boolean {
  let ok = true;
  for (const pid of processTree(root).keys()) {
    try {
      writeFileSync(`/proc/${pid}/clear_refs`, "5");
    } catch {
      ok = false;
    }
  }
  return ok;
}

interface RunResult extends WrkResult {
  cpuUsPerReq: number | null;
  peakRssMiB: number | null;
}

async function measure(
  wrk: string,
  scenario: Scenario,
  target: Target,
  run: Running,
  duration: string,
): Promise<RunResult> {
  if (!target.isProxy) {
    return { ...(await runWrk(wrk, scenario, run.port, duration)), cpuUsPerReq: null, peakRssMiB: null };
  }
  const hwmReset = resetPeakRss(run.pid);
  if (!hwmReset) peakRssIsCumulative = true;
  const before = ticksByPid(run.pid);
  const result = await runWrk(wrk, scenario, run.port, duration);
  const after = ticksByPid(run.pid);
  // A proxy that died during the run took its counters with it; zeros would look like a great result.
  if (run.exited() || !after.has(run.pid)) return { ...result, cpuUsPerReq: null, peakRssMiB: null };
  // Per pid, so workers that appear during the run (mp respawns) count from zero.
  let ticks = 0;
  for (const [pid, t] of after) ticks += t - (before.get(pid) ?? 0);
  const cpuUs = (ticks * 1_000_000) / clkTck;
  return {
    ...result,
    cpuUsPerReq: result.requests > 0 ? cpuUs / result.requests : null,
    peakRssMiB: peakRssKiB(run.pid) / 1024,
  };
}

// ---------------------------------------------------------------------------------------------- output

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const fmtInt = (n: number): string => Math.round(n).toString();
const fmtMs = (n: number): string => (n < 10 ? n.toFixed(2) : n.toFixed(1));
const fmtOpt = (n: number | null, digits: number): string => (n === null ? "-" : n.toFixed(digits));

interface Row {
  target: string;
  rps: string;
  range: string;
  p50: string;
  p99: string;
  cpu: string;
  rss: string;
  ratio: string;
  errors: string[];
}

function summarize(results: Map<string, RunResult[]>, expectedRuns: number): Row[] {
  const ref = results.get(REFERENCE_TARGET);
  const refMedian = ref?.length ? median(ref.map((r) => r.rps)) : null;
  const rows: Row[] = [];
  for (const [target, runs] of results) {
    if (!runs.length) continue;
    const rps = median(runs.map((r) => r.rps));
    const cpu = runs.flatMap((r) => (r.cpuUsPerReq === null ? [] : [r.cpuUsPerReq]));
    const rss = runs.flatMap((r) => (r.peakRssMiB === null ? [] : [r.peakRssMiB]));
    const errors = runs.flatMap((r, i) => {
      const e = errorSummary(r);
      return e ? [`run ${i + 1}: ${e}`] : [];
    });
    if (runs.length < expectedRuns) errors.push(`only ${runs.length} of ${expectedRuns} runs completed`);
    rows.push({
      target,
      rps: fmtInt(rps) + (errors.length ? " !" : ""),
      range: `${fmtInt(Math.min(...runs.map((r) => r.rps)))}-${fmtInt(Math.max(...runs.map((r) => r.rps)))}`,
      p50: fmtMs(median(runs.map((r) => r.p50Ms))),
      p99: fmtMs(median(runs.map((r) => r.p99Ms))),
      cpu: fmtOpt(cpu.length ? median(cpu) : null, 1),
      rss: fmtOpt(rss.length ? Math.max(...rss) : null, 1),
      ratio: refMedian ? (rps / refMedian).toFixed(2) : "-",
      errors,
    });
  }
  return rows;
}

const HEADERS = ["target", "req/s median", "min-max", "p50 ms", "p99 ms", "CPU µs/req", "peak RSS MB"];

function rowCells(r: Row): string[] {
  return [r.target, r.rps, r.range, r.p50, r.p99, r.cpu, r.rss, r.ratio];
}

function printTable(scenario: Scenario, rows: Row[]): void {
  const header = [...HEADERS, `vs ${REFERENCE_TARGET}`];
  const cells = [header, ...rows.map(rowCells)];
  const widths = header.map((_, i) => Math.max(...cells.map((c) => (c[i] ?? "").length)));
  console.log(`\n${scenario.name}: ${scenario.description}`);
  for (const c of cells) {
    // First column left-aligned, numbers right-aligned.
    console.log(c.map((v, i) => (i === 0 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join("  "));
  }
  for (const r of rows) for (const e of r.errors) console.log(`  ! ${r.target} ${e}`);
}

function printMarkdown(all: [Scenario, Row[]][]): void {
  const header = ["scenario", ...HEADERS, `vs ${REFERENCE_TARGET}`];
  console.log(`| ${header.join(" | ")} |`);
  console.log(`|${header.map((_, i) => (i < 2 ? " --- " : " ---: ")).join("|")}|`);
  for (const [scenario, rows] of all) {
    for (const r of rows) console.log(`| ${[scenario.name, ...rowCells(r)].join(" | ")} |`);
  }
}

function commandOutput(cmd: string[]): string {
  try {
    const r = Bun.spawnSync(cmd, { stdin: "ignore" });
    return (r.stdout.toString() + r.stderr.toString()).trim();
  } catch {
    return "";
  }
}

function systemInfo(nginx: string | null, wrk: string): string[] {
  const cpuModel = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown";
  const nproc = commandOutput(["nproc"]) || String(navigator.hardwareConcurrency);
  const nginxVersion = nginx
    ? commandOutput([nginx, "-v"]).replace(/^nginx version:\s*/, "")
    : "not installed";
  // `wrk -v` prints its banner and usage, then exits 1.
  const wrkVersion =
    commandOutput([wrk, "-v"])
      .split("\n")[0]
      ?.replace(/\s*Copyright.*$/, "") ?? "";
  return [
    `date: ${new Date().toISOString()}`,
    `nproc: ${nproc}, CPU: ${cpuModel}`,
    `bun: ${Bun.version}, nginx: ${nginxVersion}, wrk: ${wrkVersion}`,
  ];
}

// ---------------------------------------------------------------------------------------------- main

class UsageError extends Error {}

interface Args {
  runs: number;
  duration: string;
  warmup: string;
  scenarios: Scenario[];
  targets: Target[];
  backend: "auto" | "nginx" | "bun";
}

const USAGE = `usage: bun scripts/bench.ts [--runs N] [--duration 5s] [--warmup 1s] [--scenarios a,b] [--targets x,y]
                           [--backend auto|nginx|bun]
scenarios: ${SCENARIOS.map((s) => s.name).join(", ")}
targets:   ${TARGETS.map((t) => t.name).join(", ")}`;

function pick<T extends { name: string; byDefault?: boolean }>(
  all: T[],
  list: string | undefined,
  what: string,
): T[] {
  if (!list) return all.filter((x) => x.byDefault !== false);
  return list.split(",").map((name) => {
    const found = all.find((x) => x.name === name.trim());
    if (!found) throw new UsageError(`unknown ${what} ${JSON.stringify(name)}`);
    return found;
  });
}

function parseCli(): Args {
  const { values } = parseArgs({
    args: Bun.argv.slice(2),
    options: {
      runs: { type: "string", default: String(DEFAULT_RUNS) },
      duration: { type: "string", default: DEFAULT_DURATION },
      warmup: { type: "string", default: DEFAULT_WARMUP },
      scenarios: { type: "string" },
      targets: { type: "string" },
      backend: { type: "string", default: "auto" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new UsageError(`bad --runs ${values.runs}`);
  durationMs(values.duration);
  if (values.warmup !== "0") durationMs(values.warmup);
  const backend = values.backend;
  if (backend !== "auto" && backend !== "nginx" && backend !== "bun") {
    throw new UsageError(`bad --backend ${backend}`);
  }
  return {
    runs,
    duration: values.duration,
    warmup: values.warmup,
    scenarios: pick(SCENARIOS, values.scenarios, "scenario"),
    targets: pick(TARGETS, values.targets, "target"),
    backend,
  };
}

async function startBackend(args: Args, nginx: string | null): Promise<Running> {
  const www = join(tempDir, "www");
  mkdirSync(www);
  writeFileSync(join(www, "big.bin"), crypto.getRandomValues(new Uint8Array(BIG_BYTES)));
  writeFileSync(join(www, "post.txt"), POST_REPLY);
  if (nginx && args.backend !== "bun") {
    console.log(`backend: nginx, ${BACKEND_NGINX_WORKERS} worker`);
    return startNginx(nginx, "backend", backendNginxConf);
  }
  if (args.backend === "nginx") throw new Error("--backend nginx given but nginx is not installed");
  console.log(
    `backend: Bun.serve (scripts/bench-backend.ts)${nginx ? "" : " because nginx is not installed"}; ` +
      "direct numbers measure Bun, not nginx",
  );
  return startServer("backend", (port) => [BUN, BENCH_BACKEND_SCRIPT, String(port), join(www, "big.bin")]);
}

/** Checks the routes once, so that a broken config or proxy fails loudly instead of benchmarking errors. */
async function checkRoutes(port: number, what: string): Promise<void> {
  const base = `http://${HOST}:${port}`;
  const hello = await (await fetch(`${base}/`)).text();
  const big = await (await fetch(`${base}/big`)).arrayBuffer();
  const post = await fetch(`${base}/post`, { method: "POST", body: new Uint8Array(POST_BODY_BYTES) });
  const posted = await post.text();
  if (hello !== HELLO_BODY || big.byteLength !== BIG_BYTES || post.status !== 200 || posted !== POST_REPLY) {
    throw new Error(
      `${what} self-check failed: GET / ${JSON.stringify(hello)}, GET /big ${big.byteLength} B, ` +
        `POST /post ${post.status} ${JSON.stringify(posted)}`,
    );
  }
}

function progressLine(scenario: Scenario, run: number, runs: number, target: string, r: RunResult): string {
  const errors = errorSummary(r);
  return (
    `  [${scenario.name} ${run}/${runs}] ${target.padEnd(14)} ${fmtInt(r.rps).padStart(7)} req/s` +
    `  p50 ${fmtMs(r.p50Ms)} ms  p99 ${fmtMs(r.p99Ms)} ms` +
    (r.cpuUsPerReq === null ? "" : `  cpu ${r.cpuUsPerReq.toFixed(1)} µs/req`) +
    (r.peakRssMiB === null ? "" : `  rss ${r.peakRssMiB.toFixed(1)} MB`) +
    (errors ? `  ERRORS: ${errors}` : "")
  );
}

async function main(): Promise<void> {
  const args = parseCli();
  installExitHandlers();
  const wrk = Bun.which("wrk");
  if (!wrk) {
    console.log("wrk is not installed; nothing to measure (apt-get install wrk)");
    return;
  }
  const nginx = findNginx();
  const info = systemInfo(nginx, wrk);
  for (const line of info) console.log(line);
  clkTck = readClkTck();
  tempDir = mkdtempSync(join(tmpdir(), "zzz-bench-"));
  writeLuaScripts();

  const backend = await startBackend(args, nginx);
  await checkRoutes(backend.port, "backend");
  const env: Env = { nginx, backend };

  const running = new Map<Target, Running>();
  for (const target of args.targets) {
    const why = target.missing(env);
    if (why) {
      console.log(`skipping ${target.name}: ${why}`);
      continue;
    }
    try {
      const run = await target.start(env);
      try {
        await checkRoutes(run.port, target.name);
      } catch (e) {
        await run.stop();
        throw e;
      }
      running.set(target, run);
      console.log(`started ${target.name} on port ${run.port} (pid ${run.pid})`);
    } catch (e) {
      if (e instanceof StoppingError) throw e;
      console.log(`skipping ${target.name}: failed to start: ${(e as Error).message}`);
    }
  }
  console.log(
    `runs: ${args.runs} x ${args.duration} (warm-up ${args.warmup}), wrk -t${WRK_THREADS} --timeout ${WRK_TIMEOUT}`,
  );

  const summary: [Scenario, Row[]][] = [];
  for (const scenario of args.scenarios) {
    console.log(`\n${scenario.name}: ${scenario.description}`);
    const results = new Map<string, RunResult[]>([...running.keys()].map((t) => [t.name, []]));
    if (args.warmup !== "0") {
      for (const [target, run] of running) {
        if (run.exited()) continue;
        try {
          await runWrk(wrk, scenario, run.port, args.warmup);
        } catch (e) {
          if (e instanceof StoppingError) throw e;
          console.log(`  [${scenario.name} warm-up] ${target.name}: failed: ${(e as Error).message}`);
        }
      }
    }
    // Interleaved: every target once per run index, so slow drift of the machine spreads over all of them.
    for (let i = 1; i <= args.runs; i++) {
      for (const [target, run] of running) {
        if (run.exited()) {
          console.log(`  [${scenario.name} ${i}/${args.runs}] ${target.name}: process has exited, skipped`);
          continue;
        }
        try {
          const r = await measure(wrk, scenario, target, run, args.duration);
          results.get(target.name)?.push(r);
          console.log(progressLine(scenario, i, args.runs, target.name, r));
        } catch (e) {
          if (e instanceof StoppingError) throw e;
          console.log(
            `  [${scenario.name} ${i}/${args.runs}] ${target.name}: run failed: ${(e as Error).message}`,
          );
        }
      }
    }
    summary.push([scenario, summarize(results, args.runs)]);
  }

  console.log("\n==================== results ====================");
  for (const line of info) console.log(line);
  console.log(`backend port ${backend.port}; ${args.runs} runs x ${args.duration} per target and scenario`);
  for (const [scenario, rows] of summary) printTable(scenario, rows);
  console.log(
    `\nreq/s: median over runs (! = a run had errors); p50/p99: median over runs; CPU: proxy process tree ` +
      `utime+stime per completed request, median; RSS: max VmHWM${peakRssIsCumulative ? " since start (could not reset it)" : " per run"}.`,
  );
  console.log("\nmarkdown:\n");
  printMarkdown(summary);
}

try {
  await main();
  await cleanup();
  process.exit(0);
} catch (e) {
  if (e instanceof UsageError) {
    console.error(`${e.message}\n${USAGE}`);
  } else if (!stopping) {
    console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  }
  await cleanup();
  process.exit(e instanceof UsageError ? 2 : 1);
}
