import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { logLines, WAIT_DEADLINE_MS, waitFor } from "../../test/helpers.ts";
import { setLogLevel } from "../telemetry/log.ts";
import { type BackendsFile, parseBackendsFile } from "./backends-file.ts";
import { type FileWatch, watchBackendsFile, watchFile } from "./watch.ts";

/** Long enough that only fs.watch events can be what a test observes. */
const NO_POLL_MS = 600_000;

let dir = "";
let file = "";
const open: FileWatch[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "zzz-watch-"));
  file = join(dir, "backends.json");
});
afterEach(() => {
  setLogLevel("info");
  for (const w of open.splice(0)) w.close();
  rmSync(dir, { recursive: true, force: true });
});
const keep = <T extends FileWatch>(w: T): T => {
  open.push(w);
  return w;
};

/** Replaces `path` the way editors and `mv` do: write a temporary file beside it, rename it over. */
function replace(path: string, text: string): void {
  const tmp = `${path}.tmp-${Math.random().toString(36).slice(2)}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** A watchFile whose callback records the file's content at the time of each call. */
function recordingWatch(path: string, opts: { debounceMs?: number; pollMs?: number }) {
  const seen: string[] = [];
  const w = keep(
    watchFile(
      path,
      () => {
        let text: string;
        try {
          text = readFileSync(path, "utf8");
        } catch {
          text = "<missing>";
        }
        seen.push(text);
      },
      opts,
    ),
  );
  return { w, seen };
}

const json = (...ports: number[]) =>
  JSON.stringify({ backends: ports.map((port) => ({ host: "127.0.0.1", port })) });

describe("watchFile", () => {
  // Absence of a second call is proven without sleeping: a later marker write must be the very next
  // call, and events are delivered in order.
  for (const pollMs of [NO_POLL_MS, 20]) {
    test(`several quick in-place writes -> one call (poll ${pollMs === NO_POLL_MS ? "off" : "on"})`, async () => {
      writeFileSync(file, "0");
      const { seen } = recordingWatch(file, { debounceMs: 150, pollMs });
      // Paced input (not a wait for a result): writes 10 ms apart, well inside the quiet time.
      for (let i = 1; i <= 5; i++) {
        writeFileSync(file, String(i));
        await Bun.sleep(10);
      }
      await waitFor("the first call", () => seen.length >= 1);
      writeFileSync(file, "marker");
      await waitFor("the marker", () => seen.includes("marker"));
      expect(seen).toEqual(["5", "marker"]);
    });
  }

  test("replace by rename is seen, and again on a second rename (where a watch on the file goes silent)", async () => {
    writeFileSync(file, "v1");
    const { seen } = recordingWatch(file, { debounceMs: 20, pollMs: NO_POLL_MS });
    replace(file, "v2");
    await waitFor("v2", () => seen.includes("v2"));
    replace(file, "v3");
    await waitFor("v3", () => seen.includes("v3"));
    replace(file, "v4");
    await waitFor("v4", () => seen.includes("v4"));
  });

  test("Kubernetes ConfigMap: an atomic swap of the ..data symlink is seen", async () => {
    const v1 = join(dir, "..2026_01_01_00_00_00.000000001");
    mkdirSync(v1);
    writeFileSync(join(v1, "backends.json"), "k1");
    symlinkSync("..2026_01_01_00_00_00.000000001", join(dir, "..data"));
    symlinkSync("..data/backends.json", file);
    const { seen } = recordingWatch(file, { debounceMs: 20, pollMs: NO_POLL_MS });

    // What the kubelet does: new timestamped dir, a temporary link to it, rename over ..data, remove the old.
    const swap = (name: string, text: string) => {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, "backends.json"), text);
      symlinkSync(name, join(dir, "..data_tmp"));
      renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
    };
    swap("..2026_01_01_00_00_01.000000002", "k2");
    rmSync(v1, { recursive: true });
    await waitFor("k2", () => seen.includes("k2"));
    swap("..2026_01_01_00_00_02.000000003", "k3");
    await waitFor("k3", () => seen.includes("k3"));
  });

  test("deleted, then created again", async () => {
    writeFileSync(file, "a");
    const { seen } = recordingWatch(file, { debounceMs: 20, pollMs: NO_POLL_MS });
    unlinkSync(file);
    await waitFor("the deletion", () => seen.includes("<missing>"));
    writeFileSync(file, "b");
    await waitFor("the new file", () => seen.includes("b"));
  });

  test("the poll catches what no event in the directory shows (a symlink into another directory)", async () => {
    const other = join(dir, "elsewhere");
    mkdirSync(other);
    writeFileSync(join(other, "real.json"), "r1");
    const linkDir = join(dir, "conf");
    mkdirSync(linkDir);
    const link = join(linkDir, "backends.json");
    symlinkSync(join(other, "real.json"), link);
    const { seen } = recordingWatch(link, { debounceMs: 10, pollMs: 30 });
    writeFileSync(join(other, "real.json"), "r2-longer");
    await waitFor("r2", () => seen.includes("r2-longer"));
  });

  test("a replaced directory (release symlink switched) is followed, and watched again", async () => {
    for (const r of ["rel1", "rel2"]) {
      mkdirSync(join(dir, r));
      writeFileSync(join(dir, r, "backends.json"), r);
    }
    symlinkSync("rel1", join(dir, "current"));
    const path = join(dir, "current", "backends.json");
    const pollMs = 500;
    const { seen } = recordingWatch(path, { debounceMs: 10, pollMs });
    symlinkSync("rel2", join(dir, "current.tmp"));
    renameSync(join(dir, "current.tmp"), join(dir, "current"));
    await waitFor("the switch (found by the poll)", () => seen.includes("rel2"));
    // Just after a poll tick: seen within half an interval only if the new directory is watched.
    writeFileSync(join(dir, "rel2", "backends.json"), "rel2-edited");
    await waitFor("an edit in the new directory", () => seen.includes("rel2-edited"), pollMs / 2);
  });

  test("other files in the directory are ignored", async () => {
    writeFileSync(file, "a");
    const { seen } = recordingWatch(file, { debounceMs: 10, pollMs: NO_POLL_MS });
    writeFileSync(join(dir, "other.json"), "x");
    replace(join(dir, "backends.json.bak"), "y");
    writeFileSync(file, "marker");
    await waitFor("the marker", () => seen.includes("marker"));
    expect(seen).toEqual(["marker"]);
  });

  test("trigger() calls at once, and the pending debounce is not run twice", async () => {
    writeFileSync(file, "a");
    const { w, seen } = recordingWatch(file, { debounceMs: 30, pollMs: NO_POLL_MS });
    w.trigger();
    expect(seen).toEqual(["a"]);
    writeFileSync(file, "marker");
    await waitFor("the marker", () => seen.includes("marker"));
    expect(seen).toEqual(["a", "marker"]);
  });

  test("a throwing handler is logged, and the watch goes on", async () => {
    writeFileSync(file, "a");
    let calls = 0;
    const w = keep(
      watchFile(
        file,
        () => {
          calls++;
          throw new Error("boom");
        },
        { debounceMs: 10, pollMs: NO_POLL_MS },
      ),
    );
    w.trigger();
    expect(logLines.some((l) => l.startsWith("err(config):") && l.includes("boom"))).toBe(true);
    writeFileSync(file, "b");
    await waitFor("a second call", () => calls >= 2);
  });

  test("close(): no call afterwards, from events, a pending debounce or the poll", async () => {
    writeFileSync(file, "a");
    const closed = recordingWatch(file, { debounceMs: 10, pollMs: 10 });
    // The control reacts much later than the closed watch would: once it has, the closed one had time.
    const control = recordingWatch(file, { debounceMs: 300, pollMs: NO_POLL_MS });
    writeFileSync(file, "b");
    closed.w.close();
    writeFileSync(file, "c");
    await waitFor("the control", () => control.seen.includes("c"));
    expect(closed.seen).toEqual([]);
    closed.w.trigger();
    expect(closed.seen).toEqual([]);
  });

  test("a missing directory does not throw; the poll picks the file up when it appears", async () => {
    const later = join(dir, "later");
    const { seen } = recordingWatch(join(later, "backends.json"), { debounceMs: 10, pollMs: 20 });
    mkdirSync(later);
    writeFileSync(join(later, "backends.json"), "here");
    await waitFor("the file", () => seen.includes("here"));
  });
});

describe("watchBackendsFile", () => {
  function watching(initial?: BackendsFile, opts: { pollMs?: number; debounceMs?: number } = {}) {
    const valid: BackendsFile[] = [];
    const invalid: Error[] = [];
    const w = keep(
      watchBackendsFile(
        file,
        (f) => valid.push(f),
        (e) => invalid.push(e),
        {
          debounceMs: opts.debounceMs ?? 20,
          pollMs: opts.pollMs ?? NO_POLL_MS,
          ...(initial ? { initial } : {}),
        },
      ),
    );
    return { w, valid, invalid };
  }
  /**
   * Waits until the start-up check has finished (reads are serialized, so a forced re-read reports after
   * it), then forgets that report. Without this, a test's first edit could be read by the start-up check.
   */
  async function settled(t: ReturnType<typeof watching>) {
    const n = t.valid.length + t.invalid.length;
    t.w.trigger();
    await waitFor("the start-up check", () => t.valid.length + t.invalid.length > n);
    t.valid.length = 0;
    t.invalid.length = 0;
  }
  /** Turns debug logging on (afterEach turns it off) and returns a check for a line logged since. */
  const debugFrom = () => {
    setLogLevel("debug");
    const from = logLines.length;
    return (text: string) => logLines.slice(from).some((l) => l.includes(text));
  };
  const ports = (f: BackendsFile | undefined) => f?.backends.map((b) => b.port);

  test("with initial: silent until the file changes; then the new config", async () => {
    writeFileSync(file, json(1));
    const t = watching(parseBackendsFile(json(1), file));
    await settled(t);
    const { valid, invalid } = t;
    replace(file, json(1, 2));
    await waitFor("the reload", () => valid.length >= 1);
    expect(valid.map(ports)).toEqual([[1, 2]]);
    expect(invalid).toEqual([]);
  });

  test("without initial: the first callback reports the file as it is", async () => {
    writeFileSync(file, json(7));
    const { valid } = watching();
    await waitFor("the first load", () => valid.length >= 1);
    expect(ports(valid[0])).toEqual([7]);
  });

  test("an edit between the caller's startup read and the watch start is not missed", async () => {
    const initial = parseBackendsFile(json(1), file);
    writeFileSync(file, json(1, 3));
    const { valid } = watching(initial);
    await waitFor("the catch-up", () => valid.length >= 1);
    expect(ports(valid[0])).toEqual([1, 3]);
  });

  test("invalid JSON -> onInvalid with line and column; then a valid file -> onValid", async () => {
    writeFileSync(file, json(1));
    const t = watching(parseBackendsFile(json(1), file));
    await settled(t);
    const { valid, invalid } = t;
    replace(file, '{\n  "backends": [\n    {"host": "h", "port": 80},\n  ]\n}');
    await waitFor("the error", () => invalid.length >= 1);
    expect(invalid[0]!.message).toBe(
      `${file}: line 4, column 3: invalid JSON: expected a value, found ']' (a trailing comma is not allowed)`,
    );
    expect(valid).toEqual([]);
    replace(file, json(2));
    await waitFor("the fix", () => valid.length >= 1);
    expect(ports(valid[0])).toEqual([2]);
    expect(invalid).toHaveLength(1);
  });

  test("schema errors name the JSON path", async () => {
    writeFileSync(file, json(1));
    const t = watching(parseBackendsFile(json(1), file));
    await settled(t);
    const { invalid } = t;
    replace(file, '{"backends": [{"host": "h", "port": "80"}]}');
    await waitFor("the error", () => invalid.length >= 1);
    expect(invalid[0]!.message).toBe(`${file}: backends[0].port: expected an integer 1-65535, got "80"`);
  });

  test("the same bad content is reported once; other bad content again", async () => {
    writeFileSync(file, json(1));
    const t = watching(parseBackendsFile(json(1), file), { pollMs: 20 });
    await settled(t);
    const logged = debugFrom();
    replace(file, "{");
    await waitFor("the error", () => t.invalid.length >= 1);
    // Same bytes again, new inode and mtime: the poll and the watch both see a change.
    replace(file, "{");
    utimesSync(file, new Date(), new Date(Date.now() + 5_000));
    await waitFor("the re-read", () => logged(`${file} changed on disk but not in content`));
    expect(t.invalid).toHaveLength(1);
    replace(file, "[");
    await waitFor("the second error", () => t.invalid.length >= 2);
    expect(t.invalid.map((e) => e.message)).toEqual([
      `${file}: line 1, column 2: invalid JSON: expected a key in double quotes, found the end of the file`,
      `${file}: line 1, column 2: invalid JSON: expected a value, found the end of the file`,
    ]);
  });

  test("same config, other whitespace: no reload; after an error, one log line that all is well", async () => {
    writeFileSync(file, json(1));
    const t = watching(parseBackendsFile(json(1), file));
    await settled(t);
    const logged = debugFrom();
    replace(file, `\n\n${json(1)}\n`);
    await waitFor("the re-read", () => logged(`${file} changed but means the same as the running config`));
    expect(t.valid).toEqual([]);
    replace(file, "nope");
    await waitFor("the error", () => t.invalid.length >= 1);
    replace(file, json(1));
    await waitFor("the all-clear", () =>
      logged(`info(config): ${file} is valid again and the same as the running config`),
    );
    expect(t.valid).toEqual([]);
    replace(file, json(5));
    await waitFor("a real change", () => t.valid.length >= 1);
    expect(t.valid.map(ports)).toEqual([[5]]);
  });

  test("deleted: reported once as missing; recreated: reloaded", async () => {
    writeFileSync(file, json(1));
    const t = watching(parseBackendsFile(json(1), file), { pollMs: 20 });
    await settled(t);
    const { valid, invalid } = t;
    unlinkSync(file);
    await waitFor("the missing report", () => invalid.length >= 1);
    expect(invalid[0]!.message).toBe(`${file}: does not exist`);
    writeFileSync(file, json(9));
    await waitFor("the reload", () => valid.length >= 1);
    expect(ports(valid[0])).toEqual([9]);
    expect(invalid).toHaveLength(1);
  });

  test("Kubernetes ConfigMap update reloads", async () => {
    mkdirSync(join(dir, "..v1"));
    writeFileSync(join(dir, "..v1", "backends.json"), json(1));
    symlinkSync("..v1", join(dir, "..data"));
    symlinkSync("..data/backends.json", file);
    const t = watching(parseBackendsFile(json(1), file));
    await settled(t);
    const { valid } = t;
    mkdirSync(join(dir, "..v2"));
    writeFileSync(join(dir, "..v2", "backends.json"), json(1, 2, 3));
    symlinkSync("..v2", join(dir, "..data_tmp"));
    renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
    rmSync(join(dir, "..v1"), { recursive: true });
    await waitFor("the reload", () => valid.length >= 1);
    expect(ports(valid[0])).toEqual([1, 2, 3]);
  });

  test("trigger() (SIGHUP) reports even an unchanged file, valid or not", async () => {
    writeFileSync(file, json(1));
    const { w, valid, invalid } = watching(parseBackendsFile(json(1), file));
    w.trigger();
    await waitFor("the forced reload", () => valid.length >= 1);
    expect(ports(valid[0])).toEqual([1]);
    replace(file, "{");
    await waitFor("the error", () => invalid.length >= 1);
    w.trigger();
    await waitFor("the error again", () => invalid.length >= 2);
  });

  test("close(): nothing after it", async () => {
    writeFileSync(file, json(1));
    const a = watching(parseBackendsFile(json(1), file), { pollMs: 10, debounceMs: 10 });
    // The control reacts much later than the closed watch would: once it has, the closed one had time.
    const control = watching(parseBackendsFile(json(1), file), { debounceMs: 300 });
    a.w.close();
    a.w.trigger();
    replace(file, json(2));
    await waitFor("the control", () => control.valid.length >= 1);
    expect(a.valid).toEqual([]);
    expect(a.invalid).toEqual([]);
  });

  test("a process that closes its watch exits by itself (no interval, timer or watch left)", async () => {
    writeFileSync(file, json(1));
    const watchTs = join(import.meta.dir, "watch.ts");
    const script = `
      import { watchBackendsFile } from ${JSON.stringify(watchTs)};
      const w = watchBackendsFile(${JSON.stringify(file)}, (f) => {
        console.log("loaded", f.backends.length);
        w.close();
      }, (e) => { console.log("invalid", e.message); w.close(); }, { pollMs: 10, debounceMs: 10 });
    `;
    const child = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
    const deadline = setTimeout(() => child.kill(), WAIT_DEADLINE_MS);
    const code = await child.exited;
    clearTimeout(deadline);
    const out = await new Response(child.stdout).text();
    expect(child.signalCode).toBeNull();
    expect(code).toBe(0);
    expect(out).toBe("loaded 1\n");
  });
});
