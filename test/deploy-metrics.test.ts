/**
 * What deploy/ queries exists: every metric named by a Grafana panel, a dashboard variable, a Prometheus rule or
 * the KEDA trigger is on a live server's /metrics after traffic (and those the traffic exercises have samples);
 * the dashboard's structure; the probe paths answer.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { mlp } from '../tools/onnx/zoo.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';
import { REDIS_URL, redisReachable } from './registry-helpers.js';

const inCi = process.env['CI'] === 'true';
// The limit-store metrics exist only with Redis (the scaled deployment's setup): the live server uses it.
const redisDown = await redisReachable();

const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (p: string): string => readFileSync(`${root}deploy/${p}`, 'utf8');

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'inf', 'nan']);

/** The metric names a PromQL expression reads (functions, keywords, label matchers, ranges and grouping lists left out). */
export function metricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, ' ') // strings
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges, subqueries
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ') // label lists
    .replace(/\$\w+/g, ' ') // Grafana variables
    .replace(/\b\d+(?:ms|[smhdwy])\b/g, ' '); // durations (offset 5m)
  const names = new Set<string>();
  for (const m of s.matchAll(/[A-Za-z_:][\w:]*/g)) {
    const name = m[0];
    const rest = s.slice(m.index + name.length);
    if (/^\s*\(/.test(rest) || KEYWORDS.has(name.toLowerCase()) || /^\d/.test(name)) continue;
    if (/[\d.]e$/i.test(s.slice(Math.max(0, m.index - 2), m.index + 1))) continue; // 1e-9
    names.add(name);
  }
  return [...names];
}

type Panel = {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { uid: string };
  targets?: { expr: string; refId: string }[];
};
const dashboard = JSON.parse(read('grafana/switchyard-dashboard.json')) as {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; definition?: string }[] };
};

/** Every PromQL expression in deploy/, with where it comes from. */
function queries(): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  for (const p of dashboard.panels) for (const t of p.targets ?? []) out.push({ where: `dashboard panel "${p.title}" ${t.refId}`, expr: t.expr });
  for (const v of dashboard.templating.list) {
    const m = /^label_values\((\w+),/.exec(v.definition ?? '');
    if (m) out.push({ where: `dashboard variable ${v.name}`, expr: m[1]! });
  }
  const rules = parse(read('prometheus/switchyard-rules.yml')) as { groups: { rules: { alert?: string; record?: string; expr: string }[] }[] };
  for (const g of rules.groups) for (const r of g.rules) out.push({ where: `rule ${r.alert ?? r.record}`, expr: r.expr });
  const so = parse(read('kustomize/components/keda/scaledobject.yaml')) as { spec: { triggers: { type: string; metadata: { query?: string } }[] } };
  for (const t of so.spec.triggers) if (t.metadata.query) out.push({ where: `KEDA trigger ${t.type}`, expr: t.metadata.query });
  return out;
}

/**
 * Queried metrics that have no series until a feature is in use (tenants with limits, routing policies, drift
 * profiles, the LLM API, Redis): their families must be declared on /metrics, samples are not expected after
 * plain inference traffic.
 */
const NEED_A_FEATURE =
  /^switchyard_(ratelimit_|tenant_|routing_|circuit_|shadow_|cache_requests|drift_|data_|llm_|model_cold_start|model_unloads|inference_failure_total)/;

describe('deploy/grafana dashboard structure', () => {
  it('has unique panel ids, panels inside 24 columns, unique refIds, a Prometheus data source variable', () => {
    const ids = dashboard.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'unique panel ids');
    assert.ok(dashboard.uid && dashboard.title);
    assert.ok(dashboard.templating.list.some((v) => v.name === 'datasource' && v.type === 'datasource'));
    for (const p of dashboard.panels) {
      assert.ok(p.gridPos.x >= 0 && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: inside the grid`);
      if (p.type === 'row') continue;
      assert.equal(p.datasource?.uid, '${datasource}', `${p.title}: uses the data source variable`);
      const refs = (p.targets ?? []).map((t) => t.refId);
      assert.ok(refs.length > 0 && new Set(refs).size === refs.length, `${p.title}: targets with unique refIds`);
    }
    const titles = dashboard.panels.map((p) => p.title.toLowerCase()).join(' | ');
    for (const topic of [
      'requests per second',
      'p50 / p99',
      'failures',
      'queue vs compute',
      'batch size',
      'resident',
      'memory budget',
      'drift',
      'limit',
      'tokens',
    ]) {
      assert.ok(titles.includes(topic), `a panel on ${topic}`);
    }
  });

  it('reads metric names out of PromQL', () => {
    assert.deepEqual(metricNames('histogram_quantile(0.99, sum by (model, le) (rate(a_bucket{model=~"$model"}[$__rate_interval]))) > 0.5'), ['a_bucket']);
    assert.deepEqual(metricNames('(sum(rate(a_sum{job="x"}[1m])) / sum(rate(a_count[1m])) > 0) or vector(0)'), ['a_sum', 'a_count']);
    assert.deepEqual(metricNames('(x / y > 0.95) and (y > 0) unless on (instance) z offset 5m'), ['x', 'y', 'z']);
    assert.deepEqual(metricNames('1 - sum by (model) (rate(a[5m])) / clamp_min(b, 1e-9)'), ['a', 'b']);
  });
});

describe(
  'every metric deploy/ queries is on a live server after traffic',
  { skip: redisDown !== null && !inCi ? `Redis at ${REDIS_URL}: ${redisDown}; set CI=true to make this fail` : false },
  () => {
    let srv: TestServer;
    before(async () => {
      assert.equal(redisDown, null, `Redis at ${REDIS_URL} is needed`);
      srv = await startSwitchyard({ mlp: { versions: { 1: mlp() } } }, { config: { redis: REDIS_URL } });
      for (let i = 0; i < 6; i++) {
        const r = await srv.sy.app.inject({
          method: 'POST',
          url: '/v2/models/mlp/infer',
          payload: { inputs: [{ name: 'features', datatype: 'FP32', shape: [1 + (i % 2), 64], data: floats(64 * (1 + (i % 2)), i) }] },
        });
        assert.equal(r.statusCode, 200);
      }
      const bad = await srv.sy.app.inject({ method: 'POST', url: '/v2/models/mlp/infer', payload: { inputs: [] } });
      assert.equal(bad.statusCode, 400);
    });
    after(() => srv.close());

    it('declares every queried family, with samples for those plain inference exercises', async () => {
      const text = (await srv.sy.app.inject('/metrics')).body;
      const declared = new Set([...text.matchAll(/^# TYPE (\S+) (\w+)$/gm)].map((m) => m[1]!));
      const sampled = new Set([...text.matchAll(/^([A-Za-z_:][\w:]*)(?:\{| )/gm)].map((m) => m[1]!));
      const all = queries();
      assert.ok(all.length > 40, `found ${all.length} queries`);
      const missing: string[] = [];
      const names = new Set<string>();
      for (const { where, expr } of all) {
        const found = metricNames(expr);
        assert.ok(found.length > 0, `${where}: no metric found in ${expr}`);
        for (const name of found) {
          names.add(name);
          assert.match(name, /^switchyard_/, `${where}: ${name} is not a Switchyard metric (or the PromQL reader missed a keyword)`);
          const family = name.replace(/_(bucket|sum|count)$/, '');
          if (!declared.has(name) && !declared.has(family)) missing.push(`${name} (${where})`);
          else if (!NEED_A_FEATURE.test(name) && !sampled.has(name)) missing.push(`${name} has no sample after traffic (${where})`);
        }
      }
      assert.deepEqual(missing, []);
      assert.ok(names.size > 30, `${names.size} distinct metrics queried`);
    });

    it('answers the probe paths of the Deployment', async () => {
      const dep = parse(read('kustomize/base/deployment.yaml')) as {
        spec: { template: { spec: { containers: Record<string, { httpGet?: { path: string } }>[] } } };
      };
      const c = dep.spec.template.spec.containers[0]!;
      const paths = ['startupProbe', 'readinessProbe', 'livenessProbe'].map((k) => c[k]?.httpGet?.path);
      assert.equal(paths.filter((p) => p !== undefined).length, 3);
      for (const p of paths) assert.equal((await srv.sy.app.inject(p!)).statusCode, 200, p);
    });
  },
);
