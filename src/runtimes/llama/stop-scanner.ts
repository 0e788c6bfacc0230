/**
 * @module
 * Finding stop sequences (and the model's function-call prefix) in streamed text without ever emitting them:
 * text that could still become the start of one is held back until it cannot.
 *
 * @example
 * ```ts
 * const s = new StopScanner(['END']);
 * s.push('abcE'); // 'abc' ('E' is held)
 * s.push('ND!');  // '' and s.matched === 'END'
 * ```
 */
export class StopScanner {
  readonly #stops: readonly string[];
  #held = '';
  /** The sequence found, once one is (generation ends there). */
  matched: string | null = null;

  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
  }

  get stopped(): boolean {
    return this.matched !== null;
  }

  /** Text that is safe to emit now ('' while held back); sets `matched` when a sequence appeared. */
  push(text: string): string {
    if (this.#stops.length === 0) return text;
    const buf = this.#held + text;
    let cut = -1;
    let found: string | null = null;
    for (const s of this.#stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) {
        cut = i;
        found = s;
      }
    }
    if (found !== null) {
      this.matched = found;
      this.#held = '';
      return buf.slice(0, cut);
    }
    let keep = 0;
    for (const s of this.#stops) {
      for (let n = Math.min(s.length - 1, buf.length); n > keep; n--) {
        if (buf.endsWith(s.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    this.#held = buf.slice(buf.length - keep);
    return buf.slice(0, buf.length - keep);
  }

  /** What is still held at the end of generation (no sequence followed). */
  flush(): string {
    const h = this.#held;
    this.#held = '';
    return h;
  }
}
