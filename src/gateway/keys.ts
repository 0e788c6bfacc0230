/**
 * @module
 * API key format and hashing. A key is `sy_<id>_<secret>`: the 12-character id is public (listings, logs,
 * audit), the 256-bit secret is shown once at creation. Only sha256(key) is stored; with that much entropy a
 * fast hash is the right one (no password stretching needed), and verification is a constant-time compare.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
const KEY = /^(sy_[a-z2-7]{12})_([A-Za-z0-9_-]{43})$/;

export interface NewKey {
  readonly id: string;
  readonly key: string;
  readonly hash: string;
}

/** The stored form of a key: sha256, hex. */
export function hashKey(key: string): string {
  return digestKey(key).toString('hex');
}

export function generateKey(): NewKey {
  const idBytes = randomBytes(12);
  let id = 'sy_';
  for (const b of idBytes) id += ID_ALPHABET[b & 31];
  const key = `${id}_${randomBytes(32).toString('base64url')}`;
  return { id, key, hash: hashKey(key) };
}

/** The key's public id, or null when `key` is not shaped like a Switchyard key. */
export function keyId(key: string): string | null {
  return KEY.exec(key)?.[1] ?? null;
}

const DUMMY = Buffer.alloc(32);

/** sha256 of a presented key: computed once per request, compared against any number of stored hashes. */
export function digestKey(key: string): Buffer {
  return createHash('sha256').update(key).digest();
}

/** Constant-time check of a key's digest against a stored hex hash (a missing hash still costs one compare). */
export function digestMatches(digest: Buffer, storedHash: string | null): boolean {
  const stored = storedHash === null ? DUMMY : Buffer.from(storedHash, 'hex');
  return timingSafeEqual(digest, stored.length === 32 ? stored : DUMMY) && storedHash !== null;
}
