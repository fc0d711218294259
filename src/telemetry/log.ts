// The one logger. Lines look like the Zig original's: `info(proxy): message`.
export type Level = "err" | "warn" | "info" | "debug";
const RANK: Record<Level, number> = { err: 0, warn: 1, info: 2, debug: 3 };
export const LEVELS = Object.keys(RANK) as Level[];

let threshold = RANK.info;
let sink: (line: string) => void = (line) => process.stderr.write(line + "\n");

export function setLogLevel(level: Level): void {
  threshold = RANK[level];
}
/** Tests capture lines here. */
export function setLogSink(fn: (line: string) => void): void {
  sink = fn;
}
export function enabled(level: Level): boolean {
  return RANK[level] <= threshold;
}
function emit(level: Level, scope: string, msg: string): void {
  if (RANK[level] <= threshold) sink(`${level}(${scope}): ${msg}`);
}
export const log = {
  err: (scope: string, msg: string) => emit("err", scope, msg),
  warn: (scope: string, msg: string) => emit("warn", scope, msg),
  info: (scope: string, msg: string) => emit("info", scope, msg),
  debug: (scope: string, msg: string) => emit("debug", scope, msg),
};
