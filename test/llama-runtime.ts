/**
 * Suites that run the local llama backend need the local-LLM runtime (`npm run install:llama`, outside the
 * default install): with `describeNeeding` they are skipped here when it is missing, with the reason, and fail
 * in CI (.ci/run installs it).
 */
import { loadBindings } from '../src/runtimes/llama/bindings.js';

/** Why the runtime cannot load here, or null when it can. */
export async function llamaMissing(): Promise<string | null> {
  try {
    await loadBindings();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

export const LLAMA = 'the local-LLM runtime node-llama-cpp (npm run install:llama)';
