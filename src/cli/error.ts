/** A bad command line. The message is one line: the flag, the value, and what would have been accepted. */
export class CliError extends Error {
  override readonly name = "CliError";
}

const QUOTE_CHARS_MAX = 80;

/** JSON quoting keeps control characters and newlines from breaking the one-line message. */
export function quote(value: string): string {
  return JSON.stringify(value.length > QUOTE_CHARS_MAX ? value.slice(0, QUOTE_CHARS_MAX) + "…" : value);
}
