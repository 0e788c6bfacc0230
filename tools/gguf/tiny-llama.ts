/**
 * @module
 * Writes a tiny Llama-architecture GGUF model with random weights (a few hundred KB), so the LLM API's local
 * backend can be tested and demonstrated without downloading anything.
 *
 * Format: GGUF v3 (github.com/ggml-org/ggml docs/gguf.md): magic, version, tensor and metadata counts,
 * typed key/value metadata, tensor infos (name, dims innermost first, type, offset), then the F32 tensor
 * data, each tensor aligned to 32 bytes.
 *
 * Tokenizer: SentencePiece-style ("llama") with byte fallback: control tokens (`<s>`, `</s>`, ChatML's
 * `<|im_start|>`/`<|im_end|>`), the 256 byte tokens, printable ASCII and a few common words. A ChatML
 * chat template is embedded.
 *
 * Generation is steered to readable text: every token's embedding has 1 in dimension 0, and no layer writes
 * to dimension 0 (those rows of the attention output and FFN down projections are zero), so after the final
 * RMS norm dimension 0 is a positive constant; the output rows of control, byte and unknown tokens hold a
 * large negative weight there, so those tokens are never sampled. End-of-generation is never produced:
 * generation ends at max_tokens or a stop sequence — deterministic for tests.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { prng } from '../prng.js';

export interface TinyLlamaOptions {
  /** Embedding width. @default 64 */
  embd?: number;
  /** Transformer blocks. @default 2 */
  layers?: number;
  /** Attention heads. @default 4 */
  heads?: number;
  /** Feed-forward width. @default 128 */
  ff?: number;
  /** Trained context length. @default 512 */
  context?: number;
  /** PRNG seed for the weights. @default 1 */
  seed?: number;
}

const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
const ALIGN = 32;
const enum T {
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
}
const enum TokenType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  BYTE = 6,
}

const CHATML =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const WORDS = [
  'the',
  'and',
  'of',
  'to',
  'in',
  'is',
  'it',
  'that',
  'for',
  'on',
  'with',
  'as',
  'was',
  'at',
  'by',
  'hello',
  'world',
  'switch',
  'yard',
  'model',
  'token',
];

/** The vocabulary: [piece, score, type]. */
function vocabulary(): Array<[string, number, TokenType]> {
  const v: Array<[string, number, TokenType]> = [
    ['<unk>', 0, TokenType.UNKNOWN],
    ['<s>', 0, TokenType.CONTROL],
    ['</s>', 0, TokenType.CONTROL],
    ['<|im_start|>', 0, TokenType.CONTROL],
    ['<|im_end|>', 0, TokenType.CONTROL],
  ];
  for (let b = 0; b < 256; b++) v.push([`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, 0, TokenType.BYTE]);
  let score = -1;
  v.push(['\u2581', score--, TokenType.NORMAL]);
  for (let c = 0x21; c < 0x7f; c++) v.push([String.fromCharCode(c), score--, TokenType.NORMAL]);
  for (const w of WORDS) v.push([`\u2581${w}`, score--, TokenType.NORMAL]);
  return v;
}

/** The id of a vocabulary piece (`\u2581` marks a leading space), e.g. for a test's logit_bias; -1 when absent. */
export function tinyLlamaTokenId(piece: string): number {
  return vocabulary().findIndex(([p]) => p === piece);
}

/** Box-Muller over the seeded uniform PRNG: reproducible normal samples. */
function gaussian(seed: number): () => number {
  const uniform = prng(seed);
  return () => Math.sqrt(-2 * Math.log(uniform() + 1e-12)) * Math.cos(2 * Math.PI * uniform());
}

class ByteWriter {
  #buf = new Uint8Array(1 << 16);
  #view = new DataView(this.#buf.buffer);
  length = 0;

  #room(n: number): void {
    if (this.length + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.length));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }
  u32(x: number): void {
    this.#room(4);
    this.#view.setUint32(this.length, x, true);
    this.length += 4;
  }
  i32(x: number): void {
    this.#room(4);
    this.#view.setInt32(this.length, x, true);
    this.length += 4;
  }
  u64(x: number): void {
    this.#room(8);
    this.#view.setBigUint64(this.length, BigInt(x), true);
    this.length += 8;
  }
  f32(x: number): void {
    this.#room(4);
    this.#view.setFloat32(this.length, x, true);
    this.length += 4;
  }
  u8(x: number): void {
    this.#room(1);
    this.#buf[this.length++] = x;
  }
  bytes(b: Uint8Array): void {
    this.#room(b.length);
    this.#buf.set(b, this.length);
    this.length += b.length;
  }
  str(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  pad(align: number): void {
    while (this.length % align !== 0) this.u8(0);
  }
  result(): Uint8Array {
    return this.#buf.slice(0, this.length);
  }
}

type Meta = readonly [key: string, write: (w: ByteWriter) => void];
const u32 = (k: string, x: number): Meta => [
  k,
  (w) => {
    w.u32(T.U32);
    w.u32(x);
  },
];
const f32 = (k: string, x: number): Meta => [
  k,
  (w) => {
    w.u32(T.F32);
    w.f32(x);
  },
];
const str = (k: string, x: string): Meta => [
  k,
  (w) => {
    w.u32(T.STRING);
    w.str(x);
  },
];
const bool = (k: string, x: boolean): Meta => [
  k,
  (w) => {
    w.u32(T.BOOL);
    w.u8(x ? 1 : 0);
  },
];
const arr = <V>(k: string, type: T, xs: readonly V[], put: (w: ByteWriter, x: V) => void): Meta => [
  k,
  (w) => {
    w.u32(T.ARRAY);
    w.u32(type);
    w.u64(xs.length);
    for (const x of xs) put(w, x);
  },
];

interface Tensor {
  name: string;
  dims: number[];
  data: Float32Array;
}

/** The GGUF file's bytes. */
export function tinyLlamaGguf(opts: TinyLlamaOptions = {}): Uint8Array {
  const { embd = 64, layers = 2, heads = 4, ff = 128, context = 512, seed = 1 } = opts;
  const vocab = vocabulary();
  const nVocab = vocab.length;
  const rand = gaussian(seed);
  const random = (n: number, std: number): Float32Array => Float32Array.from({ length: n }, () => rand() * std);
  const ones = (n: number): Float32Array => new Float32Array(n).fill(1);
  /** A [inner, outer] matrix whose row 0 (output dimension 0) is zero: nothing writes to dimension 0. */
  const intoResidual = (inner: number): Float32Array => {
    const m = random(inner * embd, 1 / Math.sqrt(inner));
    m.fill(0, 0, inner);
    return m;
  };
  const tokenEmbd = random(embd * nVocab, 1);
  for (let t = 0; t < nVocab; t++) tokenEmbd[t * embd] = 1;
  const output = random(embd * nVocab, 1 / Math.sqrt(embd));
  for (let t = 0; t < nVocab; t++) {
    output[t * embd] = vocab[t]![2] === TokenType.NORMAL ? 0 : -100;
  }
  const tensors: Tensor[] = [
    { name: 'token_embd.weight', dims: [embd, nVocab], data: tokenEmbd },
    { name: 'output_norm.weight', dims: [embd], data: ones(embd) },
    { name: 'output.weight', dims: [embd, nVocab], data: output },
  ];
  for (let l = 0; l < layers; l++) {
    const p = `blk.${l}.`;
    tensors.push(
      { name: `${p}attn_norm.weight`, dims: [embd], data: ones(embd) },
      { name: `${p}attn_q.weight`, dims: [embd, embd], data: random(embd * embd, 1 / Math.sqrt(embd)) },
      { name: `${p}attn_k.weight`, dims: [embd, embd], data: random(embd * embd, 1 / Math.sqrt(embd)) },
      { name: `${p}attn_v.weight`, dims: [embd, embd], data: random(embd * embd, 1 / Math.sqrt(embd)) },
      { name: `${p}attn_output.weight`, dims: [embd, embd], data: intoResidual(embd) },
      { name: `${p}ffn_norm.weight`, dims: [embd], data: ones(embd) },
      { name: `${p}ffn_gate.weight`, dims: [embd, ff], data: random(embd * ff, 1 / Math.sqrt(embd)) },
      { name: `${p}ffn_up.weight`, dims: [embd, ff], data: random(embd * ff, 1 / Math.sqrt(embd)) },
      { name: `${p}ffn_down.weight`, dims: [ff, embd], data: intoResidual(ff) },
    );
  }
  const meta: Meta[] = [
    str('general.architecture', 'llama'),
    str('general.name', 'switchyard-tiny-llama'),
    u32('general.alignment', ALIGN),
    u32('llama.context_length', context),
    u32('llama.embedding_length', embd),
    u32('llama.block_count', layers),
    u32('llama.feed_forward_length', ff),
    u32('llama.rope.dimension_count', embd / heads),
    u32('llama.attention.head_count', heads),
    u32('llama.attention.head_count_kv', heads),
    f32('llama.attention.layer_norm_rms_epsilon', 1e-5),
    u32('llama.vocab_size', nVocab),
    str('tokenizer.ggml.model', 'llama'),
    arr(
      'tokenizer.ggml.tokens',
      T.STRING,
      vocab.map((v) => v[0]),
      (w, s) => w.str(s),
    ),
    arr(
      'tokenizer.ggml.scores',
      T.F32,
      vocab.map((v) => v[1]),
      (w, x) => w.f32(x),
    ),
    arr(
      'tokenizer.ggml.token_type',
      T.I32,
      vocab.map((v) => v[2]),
      (w, x) => w.i32(x),
    ),
    u32('tokenizer.ggml.unknown_token_id', 0),
    u32('tokenizer.ggml.bos_token_id', 1),
    u32('tokenizer.ggml.eos_token_id', 4),
    bool('tokenizer.ggml.add_bos_token', true),
    bool('tokenizer.ggml.add_eos_token', false),
    str('tokenizer.chat_template', CHATML),
  ];

  const w = new ByteWriter();
  w.u32(GGUF_MAGIC);
  w.u32(3);
  w.u64(tensors.length);
  w.u64(meta.length);
  for (const [key, put] of meta) {
    w.str(key);
    put(w);
  }
  let offset = 0;
  for (const t of tensors) {
    w.str(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(0); // GGML_TYPE_F32
    w.u64(offset);
    offset += t.data.byteLength;
    offset = Math.ceil(offset / ALIGN) * ALIGN;
  }
  w.pad(ALIGN);
  for (const t of tensors) {
    w.bytes(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    w.pad(ALIGN);
  }
  return w.result();
}

/** Write the tiny model to `path` (creating its directory). */
export async function writeTinyLlama(path: string, opts: TinyLlamaOptions = {}): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, tinyLlamaGguf(opts));
}
