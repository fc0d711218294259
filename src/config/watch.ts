// Watching the backends file for hot reload.
//
// fs.watch on the file itself goes silent after the first atomic rename (editors, `mv tmp file`): the
// watch follows the old inode. So the DIRECTORY is watched and events are filtered by name, including
// "..data", the symlink a Kubernetes ConfigMap volume swaps on update (backends.json -> ..data/backends.json).
// A stat poll backs it up: inotify watches can be lost, network filesystems send nothing, and a file that
// is a symlink into another directory changes without an event in ours.
import { type FSWatcher, type Stats, statSync, watch } from "node:fs";
import { stat } from "node:fs/promises";
import { basename, dirname } from "node:path";
import { CONFIG_DEBOUNCE_MAX_MS, CONFIG_DEBOUNCE_MS, CONFIG_POLL_MS } from "../core/limits.ts";
import { log } from "../telemetry/log.ts";
import { type BackendsFile, ConfigError, parseBackendsFile, readBackendsText } from "./backends-file.ts";

export interface FileWatch {
  /** Stops the directory watch, the poll and any pending debounce; no callback runs afterwards. */
  close(): void;
  /** Runs the change handler now (SIGHUP). */
  trigger(): void;
}

export interface WatchOptions {
  /** Quiet time after the last event before onChange (default CONFIG_DEBOUNCE_MS). */
  readonly debounceMs?: number;
  /** Safety-net stat interval (default CONFIG_POLL_MS). */
  readonly pollMs?: number;
}

/** The name Kubernetes gives the symlink it swaps atomically when a ConfigMap volume changes. */
const K8S_DATA_LINK = "..data";

/** Identity and content stamp of the file as stat sees it (through symlinks); "missing" when absent. */
function signature(st: Stats | null): string {
  return st === null ? "missing" : `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}

function statNow(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}

async function statLater(path: string): Promise<Stats | null> {
  try {
    return await stat(path);
  } catch {
    return null;
  }
}

/**
 * Calls `onChange` (debounced) when `path` may have changed: written in place, replaced by rename,
 * deleted or created, or swapped under a Kubernetes ConfigMap. Never throws from its callbacks; a file
 * that is briefly missing is reported like any change (the reader decides what that means).
 */
export function watchFile(path: string, onChange: () => void, opts: WatchOptions = {}): FileWatch {
  const debounceMs = opts.debounceMs ?? CONFIG_DEBOUNCE_MS;
  const debounceMaxMs = Math.max(debounceMs, CONFIG_DEBOUNCE_MAX_MS);
  const pollMs = opts.pollMs ?? CONFIG_POLL_MS;
  const dir = dirname(path);
  const name = basename(path);

  let closed = false;
  let watcher: FSWatcher | null = null;
  /** The directory's inode when the watch was set up: another one means the directory was replaced. */
  let watchedDir: string | null = null;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let burstStartMs = 0;
  let lastSig = signature(statNow(path));
  /** Bumped whenever onChange runs, so a poll stat that started earlier is not taken as news. */
  let generation = 0;
  let polling = false;

  const run = () => {
    if (closed) return;
    if (timer !== null) clearTimeout(timer);
    timer = null;
    generation++;
    // Taken before the handler reads the file, so any later write shows up as a new signature.
    lastSig = signature(statNow(path));
    try {
      onChange();
    } catch (e) {
      log.err("config", `change handler for ${path} failed: ${(e as Error).message}`);
    }
  };

  const schedule = () => {
    if (closed) return;
    const nowMs = performance.now();
    if (timer === null) burstStartMs = nowMs;
    else clearTimeout(timer);
    // Trailing debounce, but a burst that never pauses still gets a reload every debounceMaxMs.
    timer = setTimeout(run, Math.max(0, Math.min(debounceMs, burstStartMs + debounceMaxMs - nowMs)));
  };

  const unwatch = () => {
    const w = watcher;
    watcher = null;
    watchedDir = null;
    try {
      w?.close();
    } catch {
      // Already closed by the runtime after an error.
    }
  };

  const arm = () => {
    if (closed || watcher !== null) return;
    const dirSt = statNow(dir);
    if (dirSt === null) return; // The poll tries again when the directory is back.
    // Set even if watch() fails below, so a failing watch (inotify limit) is retried only when the
    // directory changes, not logged on every poll.
    watchedDir = `${dirSt.dev}:${dirSt.ino}`;
    try {
      const w = watch(dir, { persistent: true }, (_event, filename) => {
        // null: the platform did not say which entry changed.
        if (filename === null || filename === name || filename === K8S_DATA_LINK) schedule();
      });
      w.on("error", (e) => {
        log.warn(
          "config",
          `watching ${dir} failed (${e.message}); polling every ${pollMs} ms until it is back`,
        );
        if (watcher === w) unwatch();
      });
      watcher = w;
    } catch (e) {
      log.warn("config", `cannot watch ${dir} (${(e as Error).message}); polling every ${pollMs} ms`);
    }
  };

  const poll = async () => {
    if (closed || polling) return;
    polling = true;
    const gen = generation;
    try {
      const [st, dirSt] = await Promise.all([statLater(path), statLater(dir)]);
      if (closed) return;
      // A replaced directory (a release symlink switched, a volume remounted) leaves the old watch on
      // the old inode: watch the new one, and look at the file since events may have been missed.
      const dirId = dirSt === null ? null : `${dirSt.dev}:${dirSt.ino}`;
      if (dirId !== watchedDir) {
        unwatch();
        arm();
        schedule();
      }
      const sig = signature(st);
      if (gen === generation && sig !== lastSig) {
        lastSig = sig;
        schedule();
      }
    } finally {
      polling = false;
    }
  };

  arm();
  const interval = setInterval(() => void poll(), pollMs);

  return {
    close() {
      closed = true;
      if (timer !== null) clearTimeout(timer);
      timer = null;
      clearInterval(interval);
      unwatch();
    },
    trigger: run,
  };
}

/**
 * watchFile + read + validate. `onValid` gets each new valid config that differs from the last good
 * one; `onInvalid` gets why a changed file is unusable (the caller logs it and keeps the last good
 * config). The same bad content is reported once, not on every event. Starts with a check of the file:
 * with `initial` (the config the caller loaded at startup) that only catches an edit made since then;
 * without it, the first callback reports the file as it is now. trigger() (SIGHUP) re-reads and reports
 * even when nothing changed, so a signal always gets an answer in the log.
 */
export function watchBackendsFile(
  path: string,
  onValid: (f: BackendsFile) => void,
  onInvalid: (err: Error) => void,
  opts: WatchOptions & { readonly initial?: BackendsFile } = {},
): FileWatch {
  return watchConfigFile(path, parseBackendsFile, onValid, onInvalid, opts);
}

/** watchBackendsFile for any config file: `parse` validates the text (throws ConfigError). */
export function watchConfigFile<T>(
  path: string,
  parse: (text: string, path: string) => T,
  onValid: (f: T) => void,
  onInvalid: (err: Error) => void,
  opts: WatchOptions & { readonly initial?: T } = {},
): FileWatch {
  let goodKey = opts.initial === undefined ? null : JSON.stringify(opts.initial);
  /** The last text read (or "\0" + error): unchanged content after another event is ignored. */
  let seen: string | null = null;
  let lastInvalid = false;
  let closed = false;
  let busy = false;
  let again = false;
  let forced = false;

  const report = <T>(fn: (v: T) => void, v: T) => {
    try {
      fn(v);
    } catch (e) {
      log.err("config", `reload handler for ${path} failed: ${(e as Error).message}`);
    }
  };

  const once = async (force: boolean) => {
    let text: string;
    try {
      text = await readBackendsText(path);
    } catch (e) {
      if (closed) return;
      const err = e instanceof Error ? e : new ConfigError(path, "", String(e));
      const stamp = "\0" + err.message;
      if (force || stamp !== seen) {
        seen = stamp;
        lastInvalid = true;
        report(onInvalid, err);
      }
      return;
    }
    if (closed) return;
    if (!force && text === seen) {
      log.debug("config", `${path} changed on disk but not in content; nothing to do`);
      return;
    }
    seen = text;
    let file: T;
    try {
      file = parse(text, path);
    } catch (e) {
      lastInvalid = true;
      report(onInvalid, e instanceof Error ? e : new Error(String(e)));
      return;
    }
    const key = JSON.stringify(file);
    const wasInvalid = lastInvalid;
    lastInvalid = false;
    if (!force && key === goodKey) {
      // Whitespace or key order only; after an error the operator still wants to hear it is fine now.
      if (wasInvalid) log.info("config", `${path} is valid again and the same as the running config`);
      else log.debug("config", `${path} changed but means the same as the running config; nothing to do`);
      return;
    }
    goodKey = key;
    report(onValid, file);
  };

  // One read at a time, so an older read can never finish last and win; events meanwhile coalesce.
  const check = async () => {
    if (closed) return;
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      do {
        again = false;
        const force = forced;
        forced = false;
        await once(force);
      } while (again && !closed);
    } finally {
      busy = false;
    }
  };

  const w = watchFile(path, () => void check(), opts);
  void check();
  return {
    close() {
      closed = true;
      w.close();
    },
    trigger() {
      forced = true;
      void check();
    },
  };
}
