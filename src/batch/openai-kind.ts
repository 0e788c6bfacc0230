/**
 * @module
 * The `openai` job kind (/v1/batches): the input file's request lines checked as OpenAI checks them, each line run
 * through the {@link LineRunner} its transport provides (the online endpoint's validation, models and bodies),
 * output and error files of `{id, custom_id, response, error}` lines.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { FileStore } from './files.js';
import { addUsage, ZERO_USAGE, type JobRecord, type JobUsage, type LeasedChunk, type NewChunk, type OpenAiJob } from './jobs.js';
import { linesOf, utf8Parts, type ChunkRun, type JobKind, type OutputFile, type Prepared, type RunContext } from './kinds.js';
import { checkInput, responseLine, unrunLine, type BatchEndpoint } from './openai-format.js';
import type { LineRunner, LineUsage } from './types.js';

/** A line refused for load (429, 503) is tried again this many times, after its retry hint. */
export const LOAD_RETRIES = 8;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

function usageOf(u: { promptTokens: number; completionTokens: number } | null): JobUsage {
  return u === null ? ZERO_USAGE : { input_tokens: u.promptTokens, output_tokens: u.completionTokens, total_tokens: u.promptTokens + u.completionTokens };
}

export class OpenAiKind implements JobKind {
  readonly #files: FileStore;
  readonly #runner: LineRunner;
  readonly #logger: Logger;

  constructor(files: FileStore, runner: LineRunner, logger: Logger) {
    this.#files = files;
    this.#runner = runner;
    this.#logger = logger;
  }

  endpoint(job: JobRecord): string {
    return (job as OpenAiJob).spec.endpoint;
  }

  failureBudget(): number | null {
    return null;
  }

  async prepare(job: JobRecord, chunkLines: number): Promise<Prepared> {
    const spec = (job as OpenAiJob).spec;
    const meta = await this.#files.get(job.tenant, job.inputFileId);
    const checked =
      meta === null
        ? {
            lines: [],
            model: null,
            errors: [{ code: 'file_not_found', line: null, message: `The input file ${job.inputFileId} no longer exists.`, param: 'input_file_id' }],
          }
        : checkInput((await this.#files.read(job.inputFileId)).toString('utf8'), spec.endpoint as BatchEndpoint);
    if (checked.errors.length > 0) return { errors: checked.errors };
    const chunks: NewChunk[] = [];
    for (let i = 0; i < checked.lines.length; i += chunkLines) {
      const part = checked.lines.slice(i, i + chunkLines);
      chunks.push({ firstLine: part[0]!.line, lines: part.length, input: part.map((l) => `${l.text}\n`).join('') });
    }
    return { chunks, total: checked.lines.length };
  }

  unrun(_job: JobRecord, input: string, code: string, message: string): string {
    return linesOf(input)
      .map((l) => `${unrunLine((JSON.parse(l) as { custom_id: string }).custom_id, code, message)}\n`)
      .join('');
  }

  outputFile(job: JobRecord, lines: AsyncIterable<string>): OutputFile {
    return { filename: `${job.id}_output.jsonl`, content: utf8Parts(lines) };
  }

  async runChunk(job: JobRecord, c: LeasedChunk, ctx: RunContext): Promise<ChunkRun> {
    const spec = (job as OpenAiJob).spec;
    const outcomes = await Promise.all(
      linesOf(c.input).map(async (text) => {
        const line = JSON.parse(text) as { custom_id: string; url: string; body: Record<string, unknown> };
        const requestId = `req_${randomBytes(12).toString('hex')}`;
        for (let attempt = 0; ; attempt++) {
          let o;
          try {
            o = await this.#runner.run(line.url, line.body, { tenant: job.tenant, keyId: spec.keyId, requestId, flow: ctx.flow, signal: ctx.signal });
          } catch (e) {
            this.#logger.error({ err: e, job: job.id }, 'batch line runner threw');
            o = {
              status: 500,
              body: { error: { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: null } },
              usage: null,
            };
          }
          if ((o.status === 429 || o.status === 503) && attempt < LOAD_RETRIES && !ctx.signal.aborted) {
            await sleep(Math.min(5000, 100 * 2 ** attempt));
            continue;
          }
          return { customId: line.custom_id, requestId, ...o };
        }
      }),
    );
    let output = '';
    let errorOutput = '';
    let succeeded = 0;
    let failed = 0;
    let usage = ZERO_USAGE;
    const lineUsage: LineUsage[] = [];
    for (const o of outcomes) {
      const text = `${responseLine(o.customId, o.status, o.requestId, o.body)}\n`;
      if (o.status >= 200 && o.status < 300) {
        output += text;
        succeeded++;
      } else {
        errorOutput += text;
        failed++;
      }
      if (o.usage !== null) {
        usage = addUsage(usage, usageOf(o.usage));
        lineUsage.push(o.usage);
      }
    }
    return { output, errorOutput, succeeded, failed, usage, lineUsage };
  }
}
