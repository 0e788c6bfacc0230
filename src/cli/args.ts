/**
 * @module
 * Flag parsers every `switchyard` client command shares, so that the same kind of value is written the same
 * way everywhere: one duration syntax (`500ms`, `30s`, `15m`, `2h`, `7d`) for spans (`--for`, `--timeout`,
 * `--cache-ttl`, `--max-p99`) and for times relative to now (`--since 30m`, `--expires 90d`), an ISO-8601 time
 * wherever a time is asked for, and retired flags that say what replaced them.
 */
import { InvalidArgumentError, Option } from 'commander';

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;

/** The duration syntax, for help texts and messages. */
export const DURATION_SYNTAX = 'a duration such as 500ms, 30s, 15m, 2h or 7d';

/**
 * Milliseconds of a duration (`500ms`, `30s`, `1.5h`, `7d`), or null when `v` is not one. A bare number is
 * not a duration: its unit would be a guess.
 *
 * @example durationMs('90s') // 90000
 */
export function durationMs(v: string): number | null {
  const m = DURATION.exec(v.trim());
  return m ? Math.round(Number(m[1]) * UNIT_MS[m[2]!]!) : null;
}

/** A parser for a positive duration flag (`--for 10m`), in milliseconds; `zero` allows `0s`. */
export const durationArg =
  (flag: string, opts: { zero?: boolean } = {}) =>
  (v: string): number => {
    const ms = durationMs(v);
    if (ms === null) {
      const bare = /^\d+(\.\d+)?$/.test(v.trim()) ? ` (a bare number has no unit: ${v.trim()}ms or ${v.trim()}s?)` : '';
      throw new InvalidArgumentError(`${flag} must be ${DURATION_SYNTAX}${bare}`);
    }
    if (ms < 0 || (ms === 0 && !opts.zero) || !Number.isSafeInteger(ms))
      throw new InvalidArgumentError(`${flag} must be ${opts.zero ? 'at least 0' : 'more than 0'}`);
    return ms;
  };

/** An ISO-8601 time, or a duration ago (`30m`, `7d`): a time in the past, as an ISO string. */
export function timeArg(v: string): string {
  const ms = durationMs(v);
  if (ms !== null) return new Date(Date.now() - ms).toISOString();
  if (Number.isNaN(Date.parse(v))) throw new InvalidArgumentError(`must be an ISO-8601 time (2026-11-21T12:00:00Z) or ${DURATION_SYNTAX} ago`);
  return new Date(Date.parse(v)).toISOString();
}

/** An ISO-8601 time, or a duration from now (`90d`): a time in the future such as an expiry, as an ISO string. */
export function futureTimeArg(v: string): string {
  const ms = durationMs(v);
  if (ms !== null) return new Date(Date.now() + ms).toISOString();
  if (Number.isNaN(Date.parse(v))) throw new InvalidArgumentError(`must be an ISO-8601 time (2027-01-31T00:00:00Z) or ${DURATION_SYNTAX} from now`);
  return new Date(Date.parse(v)).toISOString();
}

/** A positive integer flag (`--limit 100`), at most `max`. */
export const positiveIntArg =
  (flag: string, max = Number.MAX_SAFE_INTEGER) =>
  (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`${flag} must be a positive integer`);
    if (n > max) throw new InvalidArgumentError(`${flag} must be at most ${max}`);
    return n;
  };

/**
 * A retired flag: hidden from help, and refused with a message naming its replacement (undici's habit: a
 * retired option is rejected, never silently reinterpreted).
 */
export function retiredOption(flags: string, replacement: string): Option {
  return new Option(flags, `retired: replaced by ${replacement}`).hideHelp().argParser(() => {
    throw new InvalidArgumentError(`was replaced by ${replacement}`);
  });
}

/** The `-o, --output <file>` option every command that writes a file takes (default: standard output). */
export function outputOption(what = 'the output'): Option {
  return new Option('-o, --output <file>', `write ${what} to this file instead of standard output`);
}
