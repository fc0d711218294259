// How this program starts itself again: as a worker (mp), or as the next instance (binary upgrade).
// Captured at load time, before anyone replaces the binary with `mv` (afterwards the kernel reports the
// old file as "... (deleted)"); the path is what the user ran, so an upgrade runs the new file there.

/** Environment variables between instances and processes of one instance. */
export const ENV_ROLE = "ZZZ_LB_ROLE"; // "worker" in a worker
export const ENV_REGION = "ZZZ_LB_REGION"; // path of the shared region (workers map it)
export const ENV_SLOT = "ZZZ_LB_SLOT"; // the worker's process slot, 1..N
export const ENV_SLOTS = "ZZZ_LB_SLOTS"; // slots in use (N + 1)
export const ENV_PORT = "ZZZ_LB_PORT"; // the port the supervisor resolved (for -p 0)
export const ENV_UPGRADE_FROM = "ZZZ_LB_UPGRADE_FROM"; // the old instance's region (binary upgrade)

/** A compiled binary runs its entry from Bun's embedded filesystem. */
const compiled = (process.argv[1] ?? "").startsWith("/$bunfs/");

/** argv[0..] that runs this program: [binary] when compiled, [bun, script] from source. */
export const SELF: readonly string[] = Object.freeze(
  compiled ? [process.execPath] : [process.execPath, process.argv[1] ?? ""],
);

/** The user's arguments, as given. */
export const ARGS: readonly string[] = Object.freeze(process.argv.slice(2));
