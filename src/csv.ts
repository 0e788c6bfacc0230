/**
 * @module
 * Reading CSV, over csv-parse (streaming): RFC 4180 quoting ("" escapes, line breaks inside quotes), a leading
 * BOM dropped, blank lines skipped. Each cell says whether it was quoted, so callers can tell an empty unquoted
 * cell (missing) from a quoted "" (an empty string); each record carries the line it starts on, and a syntax error
 * is a {@link CsvSyntaxError} naming the line of the record it is in. Writers use csv-stringify directly.
 */
import { Readable, pipeline } from 'node:stream';
import { CsvError, parse, type CastingContext, type InfoRecord, type Options } from 'csv-parse';
import { parse as parseSync } from 'csv-parse/sync';

export interface CsvCell {
  readonly text: string;
  readonly quoted: boolean;
}

export interface CsvRecord {
  readonly cells: readonly CsvCell[];
  /** 1-based line the record starts on. */
  readonly line: number;
}

/** A CSV syntax error: `line` is where the offending record starts, `reason` says what is wrong. */
export class CsvSyntaxError extends Error {
  readonly line: number;
  readonly reason: string;
  constructor(line: number, reason: string) {
    super(`line ${line}: ${reason}`);
    this.name = 'CsvSyntaxError';
    this.line = line;
    this.reason = reason;
  }
}

/** Turns csv-parse's end-of-record line counts into start lines (blank lines skipped in between counted). */
class Lines {
  #end = 0;
  #empty = 0;
  /** csv-parse options that track lines and turn each record into a {@link CsvRecord} (blank ones dropped). */
  readonly options: Options<CsvRecord, CsvCell[]> = {
    bom: true,
    skip_empty_lines: true,
    // Any line end, even mixed in one file (csv-parse would otherwise keep the first one it sees).
    record_delimiter: ['\r\n', '\n', '\r'],
    // Field counts are checked by the callers, with their own message.
    relax_column_count: true,
    cast: (text: string, ctx: CastingContext): CsvCell => ({ text, quoted: ctx.quoting }),
    on_record: (record: CsvCell[], info: InfoRecord): CsvRecord | null => {
      const line = this.#start(info);
      this.#end = info.lines;
      this.#empty = info.empty_lines;
      return blank(record) ? null : { cells: record, line };
    },
  };

  #start(at: { lines: number; empty_lines: number }): number {
    return this.#end + 1 + (at.empty_lines - this.#empty);
  }

  /** A csv-parse error as a {@link CsvSyntaxError} at the line its record starts on; other errors as they are. */
  error(e: unknown): unknown {
    if (!(e instanceof CsvError)) return e;
    const at = e as unknown as { lines?: number; empty_lines?: number };
    const line = this.#start({ lines: at.lines ?? this.#end + 1, empty_lines: at.empty_lines ?? this.#empty });
    switch (e.code) {
      case 'CSV_QUOTE_NOT_CLOSED':
        return new CsvSyntaxError(line, 'unterminated quoted field');
      case 'INVALID_OPENING_QUOTE':
        return new CsvSyntaxError(line, 'a quote inside an unquoted field (quote the whole field and double inner quotes)');
      case 'CSV_INVALID_CLOSING_QUOTE':
        return new CsvSyntaxError(line, 'unexpected character after a closing quote');
      default:
        return new CsvSyntaxError(line, e.message);
    }
  }
}

/** A record of one unquoted blank cell: a line of spaces, skipped like an empty line. */
const blank = (cells: readonly CsvCell[]): boolean => cells.length === 1 && !cells[0]!.quoted && cells[0]!.text.trim() === '';

/**
 * The records of a CSV stream, parsed as they arrive (memory stays bounded by the longest record). Stopping early
 * destroys the source.
 */
export async function* csvRecords(input: NodeJS.ReadableStream | AsyncIterable<string | Buffer>): AsyncGenerator<CsvRecord> {
  const lines = new Lines();
  const parser = parse(lines.options as unknown as Options);
  const source = input instanceof Readable ? input : Readable.from(input as AsyncIterable<string | Buffer>);
  // Errors of either side surface through the parser's iterator below.
  pipeline(source, parser, () => undefined);
  try {
    for await (const record of parser as AsyncIterable<CsvRecord>) yield record;
  } catch (e) {
    throw lines.error(e);
  } finally {
    parser.destroy();
  }
}

/** The records of a CSV text, all at once. */
export function csvRecordsSync(text: string): CsvRecord[] {
  const lines = new Lines();
  try {
    return parseSync(text, lines.options as unknown as Options) as unknown as CsvRecord[];
  } catch (e) {
    throw lines.error(e);
  }
}
