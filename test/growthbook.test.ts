/**
 * GrowthBook assignment functions against the SDK's published test vectors
 * (test/fixtures/growthbook-vectors.json, taken from the brief's shared/conformance/growthbook-cases.json): the same user, seed and weights must land in the same
 * variation here as in a GrowthBook SDK.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { chooseVariation, getBucketRange, getEqualWeights, hash, inNamespace, type BucketRange, type Namespace } from '../src/routing/growthbook.js';

/** The vectors, from the repo's own fixture (test/fixtures/growthbook-vectors.json, whose `source` names where they come from). */
interface Cases {
  specVersion: string;
  hash: Array<{ seed: string; value: string; version: number; expected: number | null }>;
  getBucketRange: Array<{ name: string; variations: number; coverage: number; weights: number[] | null; expected: BucketRange[] }>;
  chooseVariation: Array<{ name: string; n: number; ranges: BucketRange[]; expected: number }>;
  inNamespace: Array<{ name: string; id: string; namespace: Namespace; expected: boolean }>;
  getEqualWeights: Array<{ n: number; expected: number[] }>;
}

const cases = JSON.parse(readFileSync(new URL('../../test/fixtures/growthbook-vectors.json', import.meta.url), 'utf8')) as Cases;
const close = (a: number, b: number, what: string): void => assert.ok(Math.abs(a - b) < 1e-6, `${what}: ${a} vs ${b}`);

describe(`GrowthBook hashing and bucketing (spec ${cases.specVersion})`, () => {
  it(`hash: ${cases.hash.length} vectors`, () => {
    for (const { seed, value, version, expected } of cases.hash) {
      const got = hash(seed, value, version);
      if (expected === null) assert.equal(got, null, `hash(${seed}, ${value}, v${version})`);
      else close(got!, expected, `hash(${JSON.stringify(seed)}, ${JSON.stringify(value)}, v${version})`);
    }
  });
  it(`getBucketRange: ${cases.getBucketRange.length} vectors`, () => {
    for (const { name, variations, coverage, weights, expected } of cases.getBucketRange) {
      const got = getBucketRange(variations, coverage, weights);
      assert.equal(got.length, expected.length, name);
      got.forEach((r, i) => {
        close(r[0], expected[i]![0], `${name} [${i}].start`);
        close(r[1], expected[i]![1], `${name} [${i}].end`);
      });
    }
  });
  it(`chooseVariation: ${cases.chooseVariation.length} vectors`, () => {
    for (const { name, n, ranges, expected } of cases.chooseVariation) assert.equal(chooseVariation(n, ranges), expected, name);
  });
  it(`inNamespace: ${cases.inNamespace.length} vectors`, () => {
    for (const { name, id, namespace, expected } of cases.inNamespace) assert.equal(inNamespace(id, namespace), expected, name);
  });
  it(`getEqualWeights: ${cases.getEqualWeights.length} vectors`, () => {
    for (const { n, expected } of cases.getEqualWeights) {
      const got = getEqualWeights(n);
      assert.equal(got.length, expected.length, `getEqualWeights(${n})`);
      got.forEach((w, i) => assert.ok(Math.abs(w - expected[i]!) < 1e-7, `getEqualWeights(${n})[${i}]`));
    }
  });
});
