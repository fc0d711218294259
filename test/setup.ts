// Preloaded by bunfig.toml for every test file. Integration tests start real servers and processes;
// on a busy 2-core machine Bun's 5 s default per test is too tight. (bunfig's [test] timeout key is
// not read by Bun 1.4.5; setDefaultTimeout in a preload is.)
import { setDefaultTimeout } from "bun:test";

/** Upper bound for one test; tests wait for conditions with their own shorter deadlines. */
const TEST_TIMEOUT_MS = 30_000;
setDefaultTimeout(TEST_TIMEOUT_MS);
