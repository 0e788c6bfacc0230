/**
 * @module
 * The part of node-llama-cpp's API the llama runtime uses, declared locally, and loading it on demand.
 *
 * node-llama-cpp is not in the default install (its prebuilt CUDA and Vulkan binaries are ~650 MB, and most
 * deployments serve ONNX on CPU): `npm run install:llama` puts it, with the CPU binary for this platform, in
 * `.llama-runtime/`. The build does not need its type declarations, and a server without it runs every other
 * backend. It is imported the first time a `backend: llama` model loads (from node_modules when the application
 * installed it, else from the runtime directory); when it is missing, that load fails naming the command.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { err } from '../../errors.js';
import type { LlamaModelConfig } from '../../config/index.js';

export type Token = number;

/** A compiled grammar (GBNF), bound to the Llama instance that built it. */
export interface LlamaGrammar {
  readonly grammar: string;
}
export interface GrammarState {
  readonly _grammarState?: never;
}
export interface TokenBias {
  set(token: Token, bias: { logit: number }): TokenBias;
}

export interface EvaluateOptions {
  temperature?: number;
  topP?: number;
  seed?: number;
  grammarEvaluationState?: GrammarState;
  repeatPenalty?: { punishTokens: () => Token[]; maxPunishTokens: number; penalty: number; frequencyPenalty: number; presencePenalty: number };
  tokenBias?: TokenBias;
}

export interface TokenWithMetadata {
  readonly token: Token;
  readonly probabilities?: Map<Token, number>;
}

export interface LlamaSequence {
  readonly contextTokens: readonly Token[];
  readonly nextTokenIndex: number;
  clearHistory(): Promise<void>;
  eraseContextTokenRanges(ranges: Array<{ start: number; end: number }>): Promise<void>;
  evaluate(tokens: Token[], options: EvaluateOptions): AsyncGenerator<Token, void, void>;
  evaluateWithMetadata(tokens: Token[], metadata: { probabilities: true }, options: EvaluateOptions): AsyncGenerator<TokenWithMetadata, void, void>;
}

export interface LlamaContext {
  readonly contextSize: number;
  getSequence(): LlamaSequence;
  dispose(): Promise<void>;
}

export interface LlamaModel {
  readonly trainContextSize: number;
  readonly fileInfo: { readonly metadata: unknown };
  readonly tokens: { readonly bos: Token | null };
  readonly tokenizer: unknown;
  tokenize(text: string, specialTokens?: boolean): Token[];
  detokenize(tokens: readonly Token[], specialTokens?: boolean, lastTokens?: readonly Token[]): string;
  isEogToken(token: Token | undefined): boolean;
  createContext(options: { sequences: number; contextSize: number; threads: number }): Promise<LlamaContext>;
  dispose(): Promise<void>;
}

export interface Llama {
  loadModel(options: { modelPath: string; gpuLayers: number | 'auto' }): Promise<LlamaModel>;
  createGrammarForJsonSchema(schema: unknown): Promise<LlamaGrammar>;
  createGrammar(options: { grammar: string }): Promise<LlamaGrammar>;
  getGrammarFor(type: 'json'): Promise<LlamaGrammar>;
}

/** node-llama-cpp's LlamaText: text with special-token parts, tokenized as a whole. */
export interface LlamaText {
  mapValues(mapper: (value: unknown) => unknown): LlamaText;
  tokenize(tokenizer: unknown): Token[];
  toString(): string;
}

/** A function call as the chat history holds it (the model's own call syntax is rendered by its chat wrapper). */
export interface HistoryFunctionCall {
  type: 'functionCall';
  name: string;
  params: unknown;
  result: unknown;
}
export type HistoryItem = { type: 'system'; text: string } | { type: 'user'; text: string } | { type: 'model'; response: Array<string | HistoryFunctionCall> };
export type AvailableFunctions = Record<string, { description?: string; params?: unknown }>;

export interface ChatWrapper {
  readonly wrapperName: string;
  readonly settings: {
    readonly functions: {
      readonly call: { readonly prefix: unknown; readonly paramsPrefix: unknown; readonly suffix: unknown };
    };
  };
  generateContextState(options: { chatHistory: HistoryItem[]; availableFunctions?: AvailableFunctions; documentFunctionParams?: boolean }): {
    contextText: { tokenize(tokenizer: unknown): Token[] };
  };
}

export interface NodeLlamaCpp {
  getLlama(options: { gpu: LlamaModelConfig['gpu']; build: 'never'; logLevel: unknown; progressLogs: boolean }): Promise<Llama>;
  readonly LlamaLogLevel: { readonly error: unknown };
  resolveChatWrapper(model: LlamaModel): ChatWrapper;
  readonly LlamaGrammarEvaluationState: new (options: { model: LlamaModel; grammar: LlamaGrammar }) => GrammarState;
  readonly TokenBias: new (tokenizer: unknown) => TokenBias;
  LlamaText(value: unknown): LlamaText;
}

/** The package name in a variable: loaded at run time only, never resolved by the compiler. */
const PACKAGE = 'node-llama-cpp';

/** The command that installs the local-LLM runtime (named in the error when it is missing). */
export const INSTALL_COMMAND = 'npm run install:llama';

/**
 * Where `npm run install:llama` puts the runtime: `.llama-runtime/` in the package's root (this file is
 * dist/src/runtimes/llama/bindings.js), or the directory in SWITCHYARD_LLAMA_RUNTIME.
 */
export function runtimeDir(): string {
  return process.env['SWITCHYARD_LLAMA_RUNTIME'] ?? fileURLToPath(new URL('../../../../.llama-runtime/', import.meta.url));
}

async function importRuntime(): Promise<NodeLlamaCpp> {
  try {
    return (await import(PACKAGE)) as NodeLlamaCpp; // installed with the application (npm install node-llama-cpp)
  } catch (first) {
    let entry: string;
    try {
      entry = createRequire(join(runtimeDir(), 'package.json')).resolve(PACKAGE);
    } catch {
      throw first;
    }
    return (await import(pathToFileURL(entry).href)) as NodeLlamaCpp;
  }
}

let bindings: Promise<NodeLlamaCpp> | null = null;

/** node-llama-cpp, imported once; a clear configuration error naming the install command when it is missing. */
export function loadBindings(): Promise<NodeLlamaCpp> {
  bindings ??= importRuntime().catch((e: unknown) => {
    bindings = null;
    throw err(
      'SY_ERR_CONFIG_INVALID',
      `a "backend: llama" model needs the local-LLM runtime node-llama-cpp, which is not installed: run \`${INSTALL_COMMAND}\` (CPU build, ~85 MB; \`${INSTALL_COMMAND} -- --gpu\` adds the GPU builds; see docs/llm.md)`,
      { cause: e },
    );
  });
  return bindings;
}

/** Once per process: the native bindings (CPU, or the GPU a model asks for). */
const llamas = new Map<string, Promise<Llama>>();

export function llamaFor(lib: NodeLlamaCpp, gpu: LlamaModelConfig['gpu']): Promise<Llama> {
  const key = String(gpu);
  let l = llamas.get(key);
  if (!l) {
    // build 'never': use the prebuilt binaries from npm; never download or compile llama.cpp at run time.
    l = lib.getLlama({ gpu, build: 'never', logLevel: lib.LlamaLogLevel.error, progressLogs: false });
    llamas.set(key, l);
  }
  return l;
}

/** Default threads: leave a core for the HTTP server; llama.cpp's spin-waiting threads collapse when oversubscribed. */
export function defaultThreads(): number {
  return Math.max(1, availableParallelism() - 1);
}
