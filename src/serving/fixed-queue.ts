/**
 * @module
 * A FIFO queue that does not allocate per item: fixed-size circular buffers chained as they fill.
 *
 * ```
 *   head                                  tail
 *    │                                     │
 *    ▼                                     ▼
 *  ┌────────────┐   next   ┌────────────┐
 *  │ ring (2048)│ ───────► │ ring (2048)│
 *  └────────────┘          └────────────┘
 *  shift() reads from head; push() writes to tail; a drained head ring is dropped.
 * ```
 */

const SIZE = 2048;
const MASK = SIZE - 1;

class Ring<T> {
  readonly list: Array<T | undefined> = new Array<T | undefined>(SIZE);
  bottom = 0;
  top = 0;
  next: Ring<T> | null = null;

  isEmpty(): boolean { return this.top === this.bottom; }
  isFull(): boolean { return ((this.top + 1) & MASK) === this.bottom; }

  push(v: T): void {
    this.list[this.top] = v;
    this.top = (this.top + 1) & MASK;
  }

  shift(): T | undefined {
    const v = this.list[this.bottom];
    if (v === undefined) return undefined;
    this.list[this.bottom] = undefined;
    this.bottom = (this.bottom + 1) & MASK;
    return v;
  }
}

export class FixedQueue<T> {
  #head = new Ring<T>();
  #tail = this.#head;
  #length = 0;

  get length(): number { return this.#length; }
  isEmpty(): boolean { return this.#length === 0; }

  push(v: T): void {
    if (this.#head.isFull()) this.#head = this.#head.next = new Ring<T>();
    this.#head.push(v);
    this.#length++;
  }

  /** The oldest item without removing it. */
  peek(): T | undefined {
    return this.#tail.list[this.#tail.bottom];
  }

  shift(): T | undefined {
    const tail = this.#tail;
    const v = tail.shift();
    if (v === undefined) return undefined;
    this.#length--;
    if (tail.isEmpty() && tail.next !== null) this.#tail = tail.next;
    return v;
  }
}
