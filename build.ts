#!/usr/bin/env bun
// `bun run build`: one self-contained executable (dist/load_balancer) and a compressed release
// artifact (dist/load_balancer-linux-x64.tar.gz).
import { mkdirSync, rmSync, statSync } from "node:fs";

const OUT_DIR = "dist";
const BINARY = `${OUT_DIR}/load_balancer`;
const ARCHIVE = `${OUT_DIR}/load_balancer-${process.platform}-${process.arch}.tar.gz`;

rmSync(OUT_DIR, { recursive: true, force: true });
mkdirSync(OUT_DIR, { recursive: true });

const result = await Bun.build({
  entrypoints: ["src/main.ts"],
  compile: { outfile: BINARY },
  minify: true,
});
if (!result.success) {
  for (const m of result.logs) console.error(m);
  process.exit(1);
}

const tar = Bun.spawnSync(["tar", "-czf", ARCHIVE, "-C", OUT_DIR, "load_balancer"], { stderr: "inherit" });
if (tar.exitCode !== 0) process.exit(tar.exitCode ?? 1);

const mb = (path: string) => (statSync(path).size / 1024 / 1024).toFixed(1);
console.log(`${BINARY}  ${mb(BINARY)} MB`);
console.log(`${ARCHIVE}  ${mb(ARCHIVE)} MB`);
