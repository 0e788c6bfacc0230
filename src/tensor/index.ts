/**
 * @module
 * Tensors end to end: the dtype table, typed-array tensors, row concat/split, JSON and binary codecs.
 */
export * from './dtype.js';
export * from './tensor.js';
export { decodeJsonData, describeJson, encodeJsonData } from './json.js';
export { decodeBinaryData, encodeBinaryData } from './binary.js';
export { bytesText, fromRuntimeStrings, isWellFormed, toRuntimeStrings, utf8, utf8Text } from './bytes.js';
