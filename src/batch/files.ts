/**
 * @module
 * Batch files in the metadata store: a row per file (tenant, purpose, name, size) and its bytes in parts of at
 * most {@link PART_BYTES}, so every replica sharing the store reads every file (an upload on one replica, a job
 * on another, the output fetched from a third). Files belong to one tenant: another tenant's file is "not found".
 */
import { randomBytes } from 'node:crypto';
import type { Kysely, Transaction } from 'kysely';
import type { DB } from '../storage/index.js';

/** Largest part of a file's bytes stored in one row. */
export const PART_BYTES = 1 << 20;

export interface FileRecord {
  readonly id: string;
  readonly tenant: string;
  readonly purpose: string;
  readonly filename: string;
  readonly bytes: number;
  /** Epoch ms. */
  readonly createdAt: number;
  readonly expiresAt: number | null;
}

type Db = Kysely<DB> | Transaction<DB>;

/** A new file id in OpenAI's shape (`file-` and 24 base-62-ish characters). */
export function newFileId(): string {
  return `file-${randomBytes(18).toString('base64url').replace(/[-_]/g, 'x')}`;
}

function toRecord(r: DB['batch_files']): FileRecord {
  return {
    id: r.id,
    tenant: r.tenant,
    purpose: r.purpose,
    filename: r.filename,
    bytes: Number(r.bytes),
    createdAt: Number(r.created_at),
    expiresAt: r.expires_at === null ? null : Number(r.expires_at),
  };
}

export class FileStore {
  readonly #db: Kysely<DB>;

  constructor(db: Kysely<DB>) {
    this.#db = db;
  }

  /** Store `parts` (concatenated: the file's bytes) as file `meta.id`, in `trx` when given (else in its own transaction). */
  async put(meta: Omit<FileRecord, 'bytes'>, parts: Iterable<Uint8Array> | AsyncIterable<Uint8Array>, trx?: Transaction<DB>): Promise<FileRecord> {
    const write = async (t: Db): Promise<FileRecord> => {
      await t.deleteFrom('batch_file_parts').where('file_id', '=', meta.id).execute();
      await t.deleteFrom('batch_files').where('id', '=', meta.id).execute();
      await t
        .insertInto('batch_files')
        .values({
          id: meta.id,
          tenant: meta.tenant,
          purpose: meta.purpose,
          filename: meta.filename,
          bytes: 0,
          created_at: meta.createdAt,
          expires_at: meta.expiresAt,
        })
        .execute();
      let bytes = 0;
      let seq = 0;
      for await (const p of parts) {
        for (let at = 0; at < p.length; at += PART_BYTES) {
          const data = p.subarray(at, Math.min(p.length, at + PART_BYTES));
          await t
            .insertInto('batch_file_parts')
            .values({ file_id: meta.id, seq: seq++, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength) })
            .execute();
          bytes += data.length;
        }
      }
      await t.updateTable('batch_files').set({ bytes }).where('id', '=', meta.id).execute();
      return { ...meta, bytes };
    };
    return trx ? write(trx) : this.#db.transaction().execute(write);
  }

  /** The file, if it exists and belongs to `tenant`. */
  async get(tenant: string, id: string): Promise<FileRecord | null> {
    const r = await this.#db.selectFrom('batch_files').selectAll().where('id', '=', id).where('tenant', '=', tenant).executeTakeFirst();
    return r ? toRecord(r) : null;
  }

  /** The tenant's files, newest first; `after` = the id the previous page ended with. */
  async list(tenant: string, opts: { limit: number; after: string | null; purpose: string | null; order: 'asc' | 'desc' }): Promise<FileRecord[]> {
    let q = this.#db.selectFrom('batch_files').selectAll().where('tenant', '=', tenant);
    if (opts.purpose !== null) q = q.where('purpose', '=', opts.purpose);
    if (opts.after !== null) {
      const a = await this.#db
        .selectFrom('batch_files')
        .select(['created_at', 'id'])
        .where('id', '=', opts.after)
        .where('tenant', '=', tenant)
        .executeTakeFirst();
      if (a) {
        const op = opts.order === 'desc' ? '<' : '>';
        q = q.where((eb) => eb.or([eb('created_at', op, a.created_at), eb.and([eb('created_at', '=', a.created_at), eb('id', op, a.id)])]));
      }
    }
    const rows = await q.orderBy('created_at', opts.order).orderBy('id', opts.order).limit(opts.limit).execute();
    return rows.map(toRecord);
  }

  /** Delete the tenant's file; false if there was none. */
  async delete(tenant: string, id: string): Promise<boolean> {
    return this.#db.transaction().execute(async (t) => {
      const r = await t.selectFrom('batch_files').select('id').where('id', '=', id).where('tenant', '=', tenant).executeTakeFirst();
      if (!r) return false;
      await t.deleteFrom('batch_file_parts').where('file_id', '=', id).execute();
      await t.deleteFrom('batch_files').where('id', '=', id).execute();
      return true;
    });
  }

  /** The file's bytes, part by part (a few parts per query: a large file never sits in memory whole). */
  async *content(id: string): AsyncGenerator<Uint8Array> {
    const PAGE = 4;
    for (let seq = 0; ; seq += PAGE) {
      const rows = await this.#db
        .selectFrom('batch_file_parts')
        .select(['seq', 'data'])
        .where('file_id', '=', id)
        .where('seq', '>=', seq)
        .where('seq', '<', seq + PAGE)
        .orderBy('seq')
        .execute();
      for (const r of rows) yield r.data;
      if (rows.length < PAGE) return;
    }
  }

  /** The whole file as one buffer (input files, read once to be split into chunks). */
  async read(id: string): Promise<Buffer> {
    const parts: Uint8Array[] = [];
    for await (const p of this.content(id)) parts.push(p);
    return Buffer.concat(parts);
  }
}
