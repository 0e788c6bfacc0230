/**
 * @module
 * Text to token ids for ONNX embedding models: a Hugging Face `tokenizer.json` (WordPiece, BPE, Unigram, with
 * its normalizer, pre-tokenizer and post-processor: `[CLS] … [SEP]` and the like), read from disk at start
 * through `@huggingface/tokenizers` (pure JavaScript, no network), or UTF-8 bytes for byte-level models.
 *
 * An input longer than the model's sequence length is refused (400, as OpenAI does) unless the model is
 * configured to truncate: then the text is cut and the special tokens the post-processor adds are kept (the
 * first and last ones of a `[CLS] text [SEP]` template stay).
 *
 * @example
 * ```ts
 * const t = loadTokenizer(config); // once, at start
 * t.encode('hello world', 128, 0).ids; // [101, 7592, 2088, 102] for a BERT vocabulary
 * ```
 */
import { readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
import type { OnnxEmbeddingModelConfig } from '../config/index.js';
import { err } from '../errors.js';
import { LlmError } from '../runtimes/index.js';

/** One input's tokens: ids and token type ids (segment ids; 0 for a single text). */
export interface Encoded {
  readonly ids: readonly number[];
  readonly typeIds: readonly number[];
}

export interface TextTokenizer {
  /** The ids of `text` (input `index`, for messages), at most `maxLen`; 400 when longer and not truncating. */
  encode(text: string, maxLen: number, index: number): Encoded;
  /** Token ids are below this (checks token-array inputs). */
  readonly vocabSize: number;
  /** The id padding fills rows with. */
  readonly padId: number;
}

function tooLong(index: number, n: number, maxLen: number): LlmError {
  return new LlmError(
    'SY_ERR_CONTEXT_LENGTH_EXCEEDED',
    `input[${index}] is ${n} tokens; this model's maximum input length is ${maxLen} tokens. Shorten or split the input.`,
    { param: 'input' },
  );
}

/** UTF-8 bytes, id = byte + offset. */
class ByteTokenizer implements TextTokenizer {
  readonly vocabSize: number;
  readonly padId: number;
  readonly #offset: number;
  readonly #truncate: boolean;

  constructor(c: OnnxEmbeddingModelConfig) {
    this.#offset = c.tokenOffset;
    this.#truncate = c.truncate;
    this.vocabSize = 256 + c.tokenOffset;
    this.padId = c.padId ?? 0;
  }

  encode(text: string, maxLen: number, index: number): Encoded {
    let bytes = Buffer.from(text, 'utf8');
    if (bytes.length > maxLen) {
      if (!this.#truncate) throw tooLong(index, bytes.length, maxLen);
      bytes = bytes.subarray(0, maxLen);
    }
    const ids = Array.from(bytes, (b) => b + this.#offset);
    return { ids, typeIds: new Array<number>(ids.length).fill(0) };
  }
}

/** A Hugging Face tokenizer.json. */
class HfTokenizer implements TextTokenizer {
  readonly vocabSize: number;
  readonly padId: number;
  readonly #t: Tokenizer;
  readonly #truncate: boolean;

  constructor(c: OnnxEmbeddingModelConfig, files: { path: string; config?: string | undefined }) {
    const read = (file: string): object => {
      try {
        return JSON.parse(readFileSync(file, 'utf8')) as object;
      } catch (e) {
        throw err('SY_ERR_CONFIG_INVALID', `embedding model "${c.name}": cannot read tokenizer file ${file}: ${(e as Error).message}`, { cause: e });
      }
    };
    const json = read(files.path);
    const config = files.config === undefined ? {} : read(files.config);
    try {
      this.#t = new Tokenizer(json, config);
    } catch (e) {
      throw err('SY_ERR_CONFIG_INVALID', `embedding model "${c.name}": ${files.path} is not a tokenizer this server can load: ${(e as Error).message}`, {
        cause: e,
      });
    }
    this.#truncate = c.truncate;
    const vocab = this.#t.get_vocab(true);
    let max = -1;
    for (const id of vocab.values()) if (id > max) max = id;
    this.vocabSize = max + 1;
    const padding = (json as { padding?: { pad_id?: unknown } | null }).padding;
    const named = ['[PAD]', '<pad>'].map((p) => this.#t.token_to_id(p)).find((id) => id !== undefined);
    this.padId = c.padId ?? (typeof padding?.pad_id === 'number' ? padding.pad_id : (named ?? 0));
  }

  encode(text: string, maxLen: number, index: number): Encoded {
    const full = this.#t.encode(text, { return_token_type_ids: true });
    if (full.ids.length <= maxLen) return { ids: full.ids, typeIds: full.token_type_ids };
    if (!this.#truncate) throw tooLong(index, full.ids.length, maxLen);
    // Keep the special tokens around the text: full = head + text tokens + tail.
    const bare = this.#t.encode(text, { add_special_tokens: false }).ids;
    const added = full.ids.length - bare.length;
    let head = 0;
    while (head < added && full.ids[head] !== bare[0]) head++;
    const keep = Math.max(0, maxLen - added);
    const pick = <T>(xs: readonly T[]): T[] => [...xs.slice(0, head + keep), ...xs.slice(head + bare.length)];
    return { ids: pick(full.ids), typeIds: pick(full.token_type_ids) };
  }
}

/** The configured tokenizer (reads a tokenizer.json now: call once, at start). */
export function loadTokenizer(c: OnnxEmbeddingModelConfig): TextTokenizer {
  return c.tokenizer === 'bytes' ? new ByteTokenizer(c) : new HfTokenizer(c, c.tokenizer);
}
