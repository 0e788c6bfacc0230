/**
 * @module
 * BYTES elements are bytes (`Uint8Array`), never JS strings in between: these helpers cross the edges where
 * text is the only form (JSON strings, onnxruntime's string tensors) and refuse what cannot cross unaltered.
 */
import { err } from '../errors.js';

const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The UTF-8 bytes of a well-formed string. */
export function utf8(s: string): Uint8Array {
  return Buffer.from(s, 'utf8');
}

/** The text whose UTF-8 encoding `b` is, or null when `b` is not valid UTF-8 (nothing is replaced). */
export function utf8Text(b: Uint8Array): string | null {
  if (isAscii(b)) return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
  try {
    return strict.decode(b);
  } catch {
    return null;
  }
}

function isAscii(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i]! > 0x7f) return false;
  return true;
}

/** Whether a string has no unpaired surrogate (so its UTF-8 encoding round-trips). */
export function isWellFormed(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    if (c > 0xdbff) return false;
    const d = s.charCodeAt(i + 1);
    if (!(d >= 0xdc00 && d <= 0xdfff)) return false;
    i++;
  }
  return true;
}

/**
 * Strings for onnxruntime's string tensors, which the Node binding passes as C strings of UTF-8: an element
 * with a NUL byte would be cut short and invalid UTF-8 replaced, so both are refused (400 naming the tensor and
 * the element) instead of altered.
 */
export function toRuntimeStrings(name: string, elements: readonly Uint8Array[]): string[] {
  const out = new Array<string>(elements.length);
  for (let i = 0; i < elements.length; i++) {
    const b = elements[i]!;
    if (b.indexOf(0) >= 0) {
      throw err(
        'SY_ERR_NOT_REPRESENTABLE',
        `input "${name}": BYTES element ${i} contains a NUL byte, which the ONNX runtime cannot take (it would cut the element short)`,
      );
    }
    const t = utf8Text(b);
    if (t === null) {
      throw err(
        'SY_ERR_NOT_REPRESENTABLE',
        `input "${name}": BYTES element ${i} is not valid UTF-8, which the ONNX runtime's string tensors cannot take unaltered`,
      );
    }
    out[i] = t;
  }
  return out;
}

/** BYTES elements of a runtime's string tensor output (its UTF-8 bytes). */
export function fromRuntimeStrings(strings: readonly string[]): Uint8Array[] {
  return strings.map(utf8);
}

/**
 * A BYTES element as text for logs, exports and drift categories: its UTF-8 text, or `base64:` and the
 * base64 of its bytes when it is not valid UTF-8 (so nothing is replaced, and such elements stay apart).
 */
export function bytesText(b: Uint8Array): string {
  return utf8Text(b) ?? `base64:${Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64')}`;
}
