#!/usr/bin/env bun
// Entry point: parse flags, then run as a single process (multi-process mode arrives later).
import { CliError, notYetUsed, parseArgs } from "./cli/parse.ts";
import { ConfigError } from "./config/backends-file.ts";
import { startProxy } from "./proxy/server.ts";
import { log, setLogLevel } from "./telemetry/log.ts";

/** Exit status for bad flags or config, as in the CLI reference. */
const EXIT_USAGE = 2;

function main(argv: string[]): void {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs(argv);
  } catch (err) {
    if (err instanceof CliError) {
      process.stderr.write(`err(cli): ${err.message}\n(see load_balancer --help)\n`);
      process.exit(EXIT_USAGE);
    }
    throw err;
  }
  if (parsed.kind !== "run") {
    process.stdout.write(parsed.text + "\n");
    return;
  }
  const missing = notYetUsed(parsed);
  if (missing.length > 0) {
    for (const m of missing) process.stderr.write(`err(cli): ${m}\n`);
    process.exit(EXIT_USAGE);
  }
  const options = parsed.options;
  setLogLevel(options.logLevel);
  if (options.configFile !== null && options.backends.length > 0) {
    // One source of truth for the backend list: the file is hot-reloaded, flags are not.
    process.stderr.write(
      "err(cli): use either -b (fixed backends) or -c FILE (hot-reloaded backends), not both\n",
    );
    process.exit(EXIT_USAGE);
  }
  if (options.backends.length === 0 && options.configFile === null) {
    process.stderr.write(
      "err(cli): no backends: give at least one -b HOST:PORT (or run `npm run demo` to try it with demo backends)\n",
    );
    process.exit(EXIT_USAGE);
  }
  if (options.insecure)
    log.warn("tls", "--insecure: backend TLS certificates are NOT verified (never in production)");

  let running: ReturnType<typeof startProxy>;
  try {
    running = startProxy(options, { flagsGiven: parsed.explicit });
  } catch (err: unknown) {
    // A bad config file is a usage error (exit 2), like a bad flag; anything else (port taken) is 1.
    if (err instanceof ConfigError) {
      log.err("config", err.message);
      process.exit(EXIT_USAGE);
    }
    log.err("main", `cannot start on ${options.host}:${options.port}: ${String(err)}`);
    process.exit(1);
  }
  const shutdown = (signal: string) => {
    log.info("main", `${signal}: draining (up to ${options.drainTimeoutMs} ms)`);
    void running.stop().then(() => {
      log.info("main", "stopped");
      process.exit(0);
    });
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGHUP", () => {
    log.info(
      "main",
      options.configFile ? `SIGHUP: reloading ${options.configFile}` : "SIGHUP: no -c file to reload",
    );
    running.reload();
  });
  process.on("SIGINT", () => shutdown("SIGINT"));

  // Announced only once the signal handlers are in place: a SIGHUP sent as soon as this line shows
  // would otherwise hit the default action and kill the process.
  const backends = running.pools.map((p) => `${p.key}${p.spec.tls ? " (tls)" : ""}`).join(", ");
  log.info(
    "main",
    `listening on http://${options.host}:${running.server.port} (sp, pid ${process.pid}) -> ${backends}`,
  );
}

main(process.argv.slice(2));
