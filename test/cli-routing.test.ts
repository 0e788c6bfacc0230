/**
 * `switchyard routing …` and `switchyard experiments …` against one in-process server (open mode) with a model
 * of two versions: set a policy from flags and read it back, ramp a canary, clear; run an experiment through
 * create, list, show, events, report, stop, delete; errors from the server and from bad flags; --help.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Command } from 'commander';
import { experimentsCommand } from '../src/cli/experiments.js';
import { policyFromFlags, routingCommand } from '../src/cli/routing.js';
import { mlp } from '../tools/onnx/zoo.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';
import { runCli, ok, fails, type Run } from './cli-helpers.js';

const run = (args: string[], env: Record<string, string> = {}): Promise<Run> => runCli(args, { env: { SWITCHYARD_API_KEY: '', ...env } });

interface RoutingJson {
  model: string;
  revision: number;
  policy: Record<string, unknown> | null;
  circuits: unknown[];
  shadows: unknown[];
}
interface ExperimentJson {
  id: string;
  model: string;
  status: string;
  control: string;
  arms: Array<{ name: string; target: string; weight: number }>;
  guardrails: Record<string, unknown>;
  stopReason: string | null;
}
interface ReportJson {
  experiment: ExperimentJson;
  arms: Array<{
    name: string;
    target: string;
    weight: number;
    control: boolean;
    exposures: number;
    requests: { hash: number; random: number };
    metrics: Record<string, { units: number }>;
  }>;
  comparisons: Array<{ arm: string; metric: string }>;
  srm: unknown;
  unattributedEvents: number;
  guardrails: Array<{ arm: string }>;
  shadows: unknown[];
}

describe('switchyard routing and experiments CLI', () => {
  let srv: TestServer;
  let url: string[];

  const infer = (user: string, i: number) =>
    fetch(`${srv.url}/v2/models/fraud/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-user-id': user },
      body: JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, i + 1) }] }),
    });

  before(async () => {
    srv = await startSwitchyard({ fraud: { versions: { 1: mlp(3), 2: mlp(4) } }, other: { versions: { 1: mlp(5) } } }, { listen: true });
    url = ['--url', srv.url];
    const r = await fetch(`${srv.url}/api/v1/models/fraud/aliases/production`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ version: 1 }),
    });
    assert.equal(r.status, 200, await r.text());
  });
  after(() => srv.close());

  it('--help documents every subcommand and its flags', async () => {
    const [top, rh, eh, setHelp] = (
      await Promise.all([run(['--help']), run(['routing', '--help']), run(['experiments', '--help']), run(['routing', 'set', '--help'])])
    ).map(ok) as [string, string, string, string];
    assert.match(top, /routing/);
    assert.match(top, /experiments/);
    assert.match(setHelp, /--arm <name=target:weight>/);
    for (const c of ['show', 'set', 'canary', 'clear']) assert.match(rh, new RegExp(`\\b${c}\\b.*\\S`), `routing --help lacks ${c}`);
    for (const c of ['list', 'show', 'create', 'stop', 'delete', 'event', 'events', 'report'])
      assert.match(eh, new RegExp(`\\b${c}\\b.*\\S`), `experiments --help lacks ${c}`);
    const expect: Record<string, string[]> = {
      'routing show': [],
      'routing set': [
        '--file',
        '--policy',
        '--reason',
        '--arm',
        '--sticky',
        '--seed',
        '--shadow',
        '--fallback',
        '--timeout',
        '--circuit-breaker',
        '--cache-ttl',
      ],
      'routing canary': ['--control', '--reason'],
      'routing clear': ['--reason'],
      'experiments list': ['--model', '--status'],
      'experiments show': [],
      'experiments create': ['--id', '--description', '--control', '--max-error-rate', '--max-p99', '--min-requests', '--no-auto-rollback'],
      'experiments stop': ['--reason'],
      'experiments delete': [],
      'experiments event': ['--at'],
      'experiments events': ['--file'],
      'experiments report': [],
    };
    // Each subcommand's help in-process (what `switchyard <group> <cmd> --help` prints), to keep the test fast.
    const groups: Record<string, Command> = { routing: routingCommand(), experiments: experimentsCommand() };
    for (const [cmd, flags] of Object.entries(expect)) {
      const [group, sub] = cmd.split(' ') as [string, string];
      const c = groups[group]?.commands.find((x) => x.name() === sub);
      assert.ok(c, `${cmd} exists`);
      const h = c.helpInformation();
      assert.ok(c.description().length > 20, `${cmd} has a description`);
      for (const f of [...flags, '--url', '--api-key', '--actor', '--json']) assert.ok(h.includes(f), `${cmd} --help lacks ${f}`);
      for (const o of c.options) assert.ok(o.description.length > 5, `${cmd} ${o.flags} has a description`);
      for (const a of c.registeredArguments) assert.ok(a.description.length > 5, `${cmd} <${a.name()}> has a description`);
    }
  });

  it('show without a policy; set from flags; show --json returns the policy', async () => {
    const [noneHuman, noneJson] = (await Promise.all([run(['routing', 'show', 'fraud', ...url]), run(['routing', 'show', 'fraud', '--json', ...url])])).map(
      ok,
    ) as [string, string];
    assert.match(noneHuman, /default route/);
    const empty = JSON.parse(noneJson) as RoutingJson;
    assert.equal(empty.policy, null);
    assert.equal(empty.revision, 0);

    const out = ok(
      await run([
        'routing',
        'set',
        'fraud',
        '--arm',
        'control=production:95',
        '--arm',
        'canary=2:5',
        '--sticky',
        'header:x-user-id',
        '--seed',
        's1',
        '--shadow',
        '2:0.25',
        '--fallback',
        '1',
        '--fallback',
        'fraud:2',
        '--fallback',
        'other:',
        '--timeout',
        '5s',
        '--circuit-breaker',
        '--cache-ttl',
        '1.5s',
        '--reason',
        'first canary',
        '--actor',
        'alice',
        ...url,
      ]),
    );
    assert.match(out, /Routing policy of fraud set \(revision 1\)/);
    assert.match(out, /control\s*│\s*production\s*│\s*95%/);
    assert.match(out, /canary\s*│\s*2\s*│\s*5%/);
    assert.match(out, /1 → fraud:2 → other \(default route\)/);

    const [showJson, human] = (await Promise.all([run(['routing', 'show', 'fraud', '--json', ...url]), run(['routing', 'show', 'fraud', ...url])])).map(ok) as [
      string,
      string,
    ];
    const j = JSON.parse(showJson) as RoutingJson;
    assert.equal(j.model, 'fraud');
    assert.equal(j.revision, 1);
    assert.deepEqual(j.policy, {
      arms: [
        { name: 'control', target: 'production', weight: 95 },
        { name: 'canary', target: '2', weight: 5 },
      ],
      sticky: { key: 'header:x-user-id', seed: 's1', hashVersion: 2, coverage: 1 },
      shadow: [{ target: '2', fraction: 0.25, timeoutMs: 10_000 }],
      fallback: [{ version: '1' }, { model: 'fraud', version: '2' }, { model: 'other' }],
      timeoutMs: 5000,
      circuitBreaker: { errorRate: 0.5, minRequests: 20, windowMs: 10_000, cooldownMs: 30_000 },
      cache: { ttlMs: 1500 },
    });
    for (const re of [/Revision\s*│\s*1/, /header:x-user-id/, /Seed\s*│\s*s1/, /5000 ms per attempt/, /opens at 50% errors/, /TTL 1500 ms/, /Shadows:/, /25%/])
      assert.match(human, re);

    // The whole policy as JSON, from --policy and from a file (the show --json output is accepted as is).
    const file = join(srv.dir, 'policy.json');
    await writeFile(file, JSON.stringify(j));
    assert.match(ok(await run(['routing', 'set', 'fraud', '--file', file, ...url])), /revision 1\b/, 'an unchanged policy is no new revision');
    const p = JSON.parse(
      ok(await run(['routing', 'set', 'fraud', '--policy', JSON.stringify({ ...j.policy, timeoutMs: 4000 }), '--json', ...url])),
    ) as RoutingJson;
    assert.equal(p.revision, 2);
    assert.equal(p.policy?.['timeoutMs'], 4000);
  });

  it('canary ramps the weights and keeps the other fields', async () => {
    const before = JSON.parse(ok(await run(['routing', 'show', 'fraud', '--json', ...url]))) as RoutingJson;
    const out = ok(await run(['routing', 'canary', 'fraud', '2', '50', ...url]));
    assert.match(out, /50% → production \(control\), 50% → 2 \(canary\); revision 3/);
    assert.match(out, /Before: control=production 95%, canary=2 5%/);
    const mid = JSON.parse(ok(await run(['routing', 'show', 'fraud', '--json', ...url]))) as RoutingJson;
    assert.deepEqual(mid.policy?.['arms'], [
      { name: 'control', target: 'production', weight: 50 },
      { name: 'canary', target: '2', weight: 50 },
    ]);
    for (const k of ['sticky', 'shadow', 'fallback', 'timeoutMs', 'circuitBreaker', 'cache'])
      assert.deepEqual(mid.policy?.[k], before.policy?.[k], `canary kept ${k}`);
    const full = JSON.parse(ok(await run(['routing', 'canary', 'fraud', '2', '100', '--control', '1', '--json', ...url]))) as RoutingJson;
    assert.deepEqual(full.policy?.['arms'], [
      { name: 'control', target: '1', weight: 0 },
      { name: 'canary', target: '2', weight: 100 },
    ]);
    assert.equal(full.policy?.['timeoutMs'], 4000);
    // Back to 50/50 for the experiment below.
    ok(await run(['routing', 'canary', 'fraud', '2', '50%', ...url]));
  });

  it('experiments: create, list, show, events, report, stop, delete', async () => {
    const created = ok(
      await run([
        'experiments',
        'create',
        'fraud',
        '--id',
        'exp1',
        '--description',
        'v2 vs production',
        '--max-error-rate',
        '5%',
        '--max-p99',
        '500ms',
        '--min-requests',
        '10',
        '--no-auto-rollback',
        '--actor',
        'alice',
        ...url,
      ]),
    );
    assert.match(created, /Started experiment exp1 on fraud: control=production 50%, canary=2 50%; control control/);
    assert.match(created, /max error rate 5%; max p99 500 ms; judged from 10 requests; auto rollback off/);

    const [listJson, listHuman, listStopped, shown] = (
      await Promise.all([
        run(['experiments', 'list', '--model', 'fraud', '--json', ...url]),
        run(['experiments', 'list', ...url]),
        run(['experiments', 'list', '--status', 'stopped', ...url]),
        run(['experiments', 'show', 'exp1', ...url]),
      ])
    ).map(ok) as [string, string, string, string];
    const list = JSON.parse(listJson) as ExperimentJson[];
    assert.deepEqual(
      list.map((e) => [e.id, e.status]),
      [['exp1', 'running']],
    );
    assert.deepEqual(list[0]?.guardrails, { maxErrorRate: 0.05, maxP99Ms: 500, minRequests: 10, autoRollback: false });
    assert.match(listHuman, /exp1.*fraud.*running/);
    assert.match(listStopped, /No experiments/);
    assert.match(shown, /Status\s*│\s*running/);
    assert.match(shown, /control \(control\)\s*│\s*production\s*│\s*50%/);

    const users = Array.from({ length: 20 }, (_, i) => `u${i}`);
    for (const [i, u] of users.entries()) {
      const r = await infer(u, i);
      assert.equal(r.status, 200, await r.text());
    }
    const lines = Array.from({ length: 1500 }, (_, i) => JSON.stringify({ unit: users[i % 20], metric: i % 2 ? 'converted' : 'revenue', value: (i % 7) + 1 }));
    const file = join(srv.dir, 'events.jsonl');
    await writeFile(file, `${lines.join('\n')}\n\n`);
    const [one, oneJson, batch] = (
      await Promise.all([
        run(['experiments', 'event', 'exp1', 'u0', 'converted', ...url]),
        run(['experiments', 'event', 'exp1', 'u1', 'revenue', '12.5', '--json', ...url]),
        run(['experiments', 'events', 'exp1', '--file', file, ...url]),
      ])
    ).map(ok) as [string, string, string];
    assert.match(one, /Recorded converted for unit u0 in experiment exp1 \(accepted: 1\)/);
    assert.equal((JSON.parse(oneJson) as { accepted: number }).accepted, 1);
    assert.match(batch, /Sent 1500 events to experiment exp1 in 2 requests; accepted: 1500/);

    const [repJson, human] = (
      await Promise.all([run(['experiments', 'report', 'exp1', '--json', ...url]), run(['experiments', 'report', 'exp1', ...url])])
    ).map(ok) as [string, string];
    const rep = JSON.parse(repJson) as ReportJson;
    assert.equal(rep.experiment.id, 'exp1');
    assert.deepEqual(
      rep.arms.map((a) => [a.name, a.target, a.weight, a.control]),
      [
        ['control', 'production', 0.5, true],
        ['canary', '2', 0.5, false],
      ],
    );
    assert.equal(
      rep.arms.reduce((n, a) => n + a.exposures, 0),
      20,
      'every user was exposed once',
    );
    assert.equal(
      rep.arms.reduce((n, a) => n + a.requests.hash, 0),
      20,
    );
    assert.deepEqual(Object.keys(rep.arms[0]?.metrics ?? {}).sort(), ['converted', 'revenue']);
    assert.deepEqual(rep.comparisons.map((c) => `${c.arm}/${c.metric}`).sort(), ['canary/converted', 'canary/revenue']);
    assert.deepEqual(
      rep.guardrails.map((g) => g.arm),
      ['control', 'canary'],
    );
    for (const re of [
      /Experiment exp1 on fraud: running/,
      /EXPOSURES/,
      /Metric "converted" \(vs control control\)/,
      /Metric "revenue"/,
      /95% CI/,
      /Sample ratio/,
      /Guardrails/,
      /ERROR RATE/,
    ]) {
      assert.match(human, re);
    }

    assert.match(ok(await run(['experiments', 'stop', 'exp1', '--reason', 'enough data', ...url])), /Stopped experiment exp1 on fraud/);
    const [stoppedJson, stoppedList] = (
      await Promise.all([run(['experiments', 'show', 'exp1', '--json', ...url]), run(['experiments', 'list', '--status', 'stopped', ...url])])
    ).map(ok) as [string, string];
    const stopped = JSON.parse(stoppedJson) as ExperimentJson;
    assert.equal(stopped.status, 'stopped');
    assert.equal(stopped.stopReason, 'enough data');
    assert.match(stoppedList, /exp1/);
    assert.match(ok(await run(['experiments', 'delete', 'exp1', ...url])), /Deleted experiment exp1/);
    fails(await run(['experiments', 'show', 'exp1', ...url]), /^switchyard: 404 .*exp1/);
  });

  it('clear removes the policy', async () => {
    assert.match(ok(await run(['routing', 'clear', 'fraud', '--reason', 'done', ...url])), /Removed the routing policy of fraud/);
    const j = JSON.parse(ok(await run(['routing', 'show', 'fraud', '--json', ...url]))) as RoutingJson;
    assert.equal(j.policy, null);
    assert.ok(j.revision > 0);
  });

  it('fails with the server message or a clear message on bad input (exit 1)', async () => {
    const bad = join(srv.dir, 'bad.jsonl');
    await writeFile(bad, '{"unit":"u1","metric":"converted"}\n{"unit":"u2"}\n');
    const cases: Array<[string[], RegExp]> = [
      [['routing', 'show', 'nosuch'], /^switchyard: 404 .*nosuch/],
      [['routing', 'set', 'nosuch', '--arm', 'a=1:1'], /^switchyard: 404 .*nosuch/],
      [['routing', 'set', 'fraud', '--policy', '{"arms":[]}'], /^switchyard: 400 .*arms/],
      [['routing', 'set', 'fraud', '--policy', '{}', '--arm', 'a=1:1'], /^switchyard: --policy gives the whole policy; it cannot be combined with --arm/],
      [['routing', 'set', 'fraud', '--arm', 'nonsense'], /--arm.*must be name=target:weight/],
      [['experiments', 'create', 'fraud'], /^switchyard: 409 .*at least 2 arms/],
      [['experiments', 'events', 'exp1', '--file', bad], /bad\.jsonl line 2: "metric" must be a non-empty string/],
    ];
    const results = await Promise.all(cases.map(([args]) => run([...args, ...url])));
    for (const [i, r] of results.entries()) fails(r, (cases[i] as [string[], RegExp])[1]);
  });

  it('rejects bad flag values and combinations before calling the server', async () => {
    // In-process, as `switchyard <group> …` parses them (commander errors exit 1 in the binary).
    const parseError = async (group: () => Command, args: string[]): Promise<string> => {
      const g = group();
      let err = '';
      for (const c of g.commands)
        c.exitOverride().configureOutput({
          writeErr: (t) => {
            err += t;
          },
          writeOut: () => undefined,
        });
      await assert.rejects(g.parseAsync([...args, ...url], { from: 'user' }), (e: Error) => e.name === 'CommanderError', args.join(' '));
      return err;
    };
    assert.match(await parseError(routingCommand, ['set', 'fraud', '--sticky', 'cookie:x']), /--sticky.*header:<name>/);
    assert.match(await parseError(routingCommand, ['set', 'fraud', '--shadow', '2:1.5']), /--shadow.*between 0 and 1/);
    assert.match(await parseError(routingCommand, ['set', 'fraud', '--arm', 'a=1:-1']), /weight of arm "a" must be a number ≥ 0/);
    assert.match(await parseError(routingCommand, ['set', 'fraud', '--fallback', ':2']), /--fallback.*model name before ":"/);
    assert.match(await parseError(routingCommand, ['set', 'fraud', '--timeout', '0s']), /--timeout must be more than 0/);
    assert.match(
      await parseError(routingCommand, ['set', 'fraud', '--timeout', '200']),
      /--timeout must be a duration such as 500ms.*a bare number has no unit: 200ms or 200s\?/,
    );
    assert.match(await parseError(routingCommand, ['set', 'fraud', '--timeout-ms', '200']), /--timeout-ms.*was replaced by --timeout <duration>/);
    assert.match(await parseError(routingCommand, ['canary', 'fraud', '2', '150']), /percentage from 0 to 100/);
    assert.match(await parseError(experimentsCommand, ['create', 'fraud', '--max-error-rate', '2']), /--max-error-rate.*rate from 0 to 1/);
    assert.match(await parseError(experimentsCommand, ['list', '--status', 'paused']), /--status.*paused.*running/);
    assert.match(await parseError(experimentsCommand, ['events', 'exp1']), /--file/);
    assert.match(await parseError(experimentsCommand, ['event', 'exp1', 'u1', 'converted', 'lots']), /must be a number/);

    await assert.rejects(policyFromFlags({ file: 'x.json', policy: '{}' }), /either with --file or with --policy, not both/);
    await assert.rejects(
      policyFromFlags({ file: 'x.json', sticky: 'header:x', timeout: 5 }),
      /--file gives the whole policy; it cannot be combined with --sticky, --timeout/,
    );
    await assert.rejects(policyFromFlags({}), /no policy given: use --file, --policy, or build one with --arm/);
    await assert.rejects(policyFromFlags({ arm: [{ name: 'a', target: '1', weight: 1 }], seed: 's' }), /--seed needs --sticky/);
    await assert.rejects(policyFromFlags({ sticky: 'header:x' }), /--sticky needs --arm/);
    await assert.rejects(policyFromFlags({ policy: '{not json' }), /--policy is not valid JSON/);
    await assert.rejects(policyFromFlags({ policy: '[1]' }), /--policy must be a JSON object/);
    await assert.rejects(policyFromFlags({ file: join(srv.dir, 'missing.json') }), /cannot read .*missing\.json/);
    assert.deepEqual(await policyFromFlags({ cache: true, circuitBreaker: true, shadow: [{ target: '2', fraction: 0.1 }] }), {
      shadow: [{ target: '2', fraction: 0.1 }],
      circuitBreaker: {},
      cache: {},
    });
    assert.deepEqual(
      await policyFromFlags({ policy: JSON.stringify({ model: 'fraud', revision: 3, policy: { timeoutMs: 9 } }) }),
      { timeoutMs: 9 },
      'routing show --json output is accepted',
    );
  });
});
