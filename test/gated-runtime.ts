/**
 * A controlled runtime for tests: onnxruntime, except that the runs of chosen artifacts wait at a gate the
 * test opens, and record the first element of each row they were given. Timing is then set by the test (hold
 * an instance busy while a queue fills), not measured.
 */
import { onnxRuntime } from '../src/runtimes/onnx/index.js';
import type { LoadedModel, Runtime } from '../src/runtimes/types.js';

export interface Gate {
  readonly runtime: Runtime;
  /** First element (as a number) of each row of input 0, in the order the gated instances were asked to run them. */
  readonly ran: number[];
  /** Rows of each gated run, in the order the runs were asked for (the batches the scheduler formed). */
  readonly batches: number[];
  /** Gated runs now waiting at the gate (instances held busy). */
  readonly waiting: number;
  /** Runs from now on wait until `open()`. */
  close(): void;
  open(): void;
}

/** Gate the runs of every artifact whose path includes one of `shas` (the registry stores artifacts by sha256). */
export function gatedRuntime(shas: readonly string[]): Gate {
  let wait: Promise<void> = Promise.resolve();
  let release: () => void = () => undefined;
  const ran: number[] = [];
  const batches: number[] = [];
  let held = 0;
  const runtime: Runtime = {
    name: 'onnx-gated',
    inspect: (p) => onnxRuntime.inspect(p),
    async load(path, options): Promise<LoadedModel> {
      const inner = await onnxRuntime.load(path, options);
      if (!shas.some((s) => path.includes(s))) return inner;
      return {
        ...inner,
        dispose: () => inner.dispose(),
        instances: inner.instances.map((inst) => {
          let waiting = 0;
          return {
            get inflight() {
              return inst.inflight + waiting;
            },
            async run(inputs) {
              const t = inputs[0]!;
              const per = t.shape[0]! === 0 ? 0 : t.data.length / t.shape[0]!;
              for (let r = 0; r < t.shape[0]!; r++) ran.push(Number((t.data as ArrayLike<number | bigint>)[r * per]));
              batches.push(t.shape[0]!);
              waiting++;
              held++;
              try {
                await wait;
              } finally {
                waiting--;
                held--;
              }
              return inst.run(inputs);
            },
            dispose: () => inst.dispose(),
          };
        }),
      };
    },
  };
  return {
    runtime,
    ran,
    batches,
    get waiting() {
      return held;
    },
    close() {
      wait = new Promise<void>((resolve) => {
        release = resolve;
      });
    },
    open() {
      release();
    },
  };
}

/** Wait (on the event loop, no clock) until `done()` holds. */
export async function until(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((r) => setImmediate(r));
}
