/**
 * The web console end to end in a real browser: Debian's Chromium driven by playwright-core against a real
 * server (onnxruntime models, embedded SQLite, authentication on) with real data — traffic, a routing policy,
 * a reference profile, logged predictions, tenants and keys, feature definitions, a batch job. Signs in, checks that every
 * page shows its data with no console errors, moves an alias in the UI (then served over V2), changes a canary
 * weight in the UI (then in the policy), and checks that a tenant's key cannot see another tenant's model.
 * Screenshots go to .scratch/console/ (git-ignored). In CI a missing Chromium fails the test.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { mlp } from '../tools/onnx/zoo.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
const ADMIN = 'console-e2e-platform-admin-key-0123';
const SHOTS = fileURLToPath(new URL('../../.scratch/console/', import.meta.url));
const BUILT = fileURLToPath(new URL('../web/index.html', import.meta.url));
/**
 * axe-core, the accessibility engine (a devDependency; evaluated in the page over the DevTools protocol, which the
 * CSP does not govern). Null when node_modules predates it: the audit is skipped then, except in CI.
 */
const AXE = ((): string | null => {
  try {
    return createRequire(import.meta.url).resolve('axe-core/axe.min.js');
  } catch {
    return null;
  }
})();
const MODEL = 'acme.scorer';
const OTHER = 'beta.secret';

const missing = !existsSync(CHROMIUM)
  ? `Chromium not found at ${CHROMIUM} (apt-get install chromium)`
  : !existsSync(BUILT)
    ? `the console is not built (${BUILT}): npm run build:web`
    : null;
const skip = missing !== null && process.env['CI'] !== 'true' ? `${missing}; required in CI` : false;

describe('web console in Chromium', { skip }, () => {
  let srv: TestServer;
  let browser: BrowserContext;
  let profileDir: string;
  let acmeKey = '';
  let acmeKeyId = '';
  let batchId = '';

  const call = async (method: string, path: string, body?: unknown, key = ADMIN, type = 'application/json'): Promise<Record<string, unknown>> => {
    const res = await fetch(`${srv.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': type }) },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
    return text ? (JSON.parse(text) as Record<string, unknown>) : {};
  };
  const infer = (path: string, seed: number, key = ADMIN): Promise<Record<string, unknown>> =>
    call('POST', path, { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, seed) }] }, key);

  /** A fresh page signed in with `key`; console errors and page errors are collected in `errors`. */
  const signIn = async (key: string): Promise<{ page: Page; errors: string[] }> => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(`${page.url()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => errors.push(`${page.url()}: ${e.stack ?? e.message}`));
    await page.goto(`${srv.url}/ui/`);
    await page.getByLabel('API key').fill(key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('navigation', { name: 'Pages' }).waitFor();
    return { page, errors };
  };
  const show = async (page: Page, hash: string, name: string): Promise<void> => {
    await page.goto(`${srv.url}/ui/#/${hash}`);
    await page.getByRole('heading', { level: 1 }).first().waitFor();
    await page.screenshot({ path: join(SHOTS, `${name}.png`) });
  };

  before(async () => {
    if (missing) throw new Error(missing);
    await mkdir(SHOTS, { recursive: true });
    srv = await startSwitchyard(
      { [MODEL]: { versions: { 1: mlp(7), 2: mlp(8) }, config: { version_policy: { all: {} } } }, [OTHER]: { versions: { 1: mlp(9) } } },
      { listen: true, config: { adminKey: ADMIN, monitorSampleRate: 1, alertEvalMs: 3_600_000, driftEvalMs: 3_600_000 } },
    );
    // Tenancy: acme owns acme.scorer, beta owns beta.secret.
    await call('POST', '/api/v1/tenants', { name: 'acme', tier: 'premium' });
    await call('POST', '/api/v1/tenants', { name: 'beta' });
    await call('PUT', `/api/v1/models/${MODEL}/owner`, { tenant: 'acme' });
    await call('PUT', `/api/v1/models/${OTHER}/owner`, { tenant: 'beta' });
    const k = await call('POST', '/api/v1/tenants/acme/keys', { name: 'dashboard', scopes: ['infer', 'read', 'admin'] });
    acmeKey = k['key'] as string;
    acmeKeyId = k['id'] as string;
    // Registry and routing: production → 1, a 90/10 canary, a metric per version.
    await call('PUT', `/api/v1/models/${MODEL}/aliases/production`, { version: 1 });
    await call('PUT', `/api/v1/models/${MODEL}/versions/1/tags/stage`, { value: 'prod' });
    await call('PUT', `/api/v1/models/${MODEL}/routing?reason=canary`, {
      arms: [
        { name: 'control', target: '1', weight: 90 },
        { name: 'canary', target: '2', weight: 10 },
      ],
      sticky: { key: 'header:x-user-id' },
    });
    await call('POST', '/api/v1/experiments', { id: 'scorer-v2', model: MODEL, description: 'v2 vs v1', control: 'control' });
    // Drift reference for version 1 from a dataset, then traffic (logged: sample rate 1).
    const header = Array.from({ length: 64 }, (_, i) => `features[${i}]`).join(',');
    const rows = Array.from({ length: 300 }, (_, r) =>
      floats(64, 1000 + r)
        .map((v) => v.toFixed(4))
        .join(','),
    );
    await call('POST', `/api/v1/models/${MODEL}/versions/1/profile`, `${[header, ...rows].join('\n')}\n`, ADMIN, 'text/csv');
    for (let i = 0; i < 25; i++) await infer(`/v2/models/${MODEL}/versions/1/infer`, i);
    // Sticky by user: each user is exposed to one arm of the experiment; four of them convert.
    for (let i = 0; i < 10; i++) {
      const res = await fetch(`${srv.url}/v2/models/${MODEL}/infer`, {
        method: 'POST',
        headers: { authorization: `Bearer ${acmeKey}`, 'content-type': 'application/json', 'x-user-id': `user-${i}` },
        body: JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, 100 + i) }] }),
      });
      assert.equal(res.status, 200, await res.text());
    }
    await call('POST', '/api/v1/experiments/scorer-v2/events', { events: [0, 3, 5, 8].map((i) => ({ unit: `user-${i}`, metric: 'converted' })) });
    await infer(`/v2/models/${OTHER}/infer`, 7);
    await srv.sy.monitoring.log.flush();
    // Features: an entity, a view, rows.
    await call('PUT', '/api/v1/features/entities/user', { joinKeys: [{ name: 'user_id', type: 'int64' }] });
    await call('PUT', '/api/v1/features/views/user_profile', {
      entities: ['user'],
      features: [
        { name: 'f0', type: 'float32' },
        { name: 'f1', type: 'float32' },
      ],
      ttlSeconds: 7200,
    });
    await call('POST', '/api/v1/features/push', { view: 'user_profile', rows: [{ user_id: 7, event_time: Date.now() - 60_000, f0: 0.5, f1: 1.25 }] });

    // A batch job (OpenAI Batch API) whose lines name a model that does not exist: each line fails on its own.
    const form = new FormData();
    form.set('purpose', 'batch');
    const lines = [1, 2].map((i) =>
      JSON.stringify({ custom_id: `r${i}`, method: 'POST', url: '/v1/embeddings', body: { model: 'no-such-encoder', input: `text ${i}` } }),
    );
    form.set('file', new Blob([`${lines.join('\n')}\n`], { type: 'application/jsonl' }), 'input.jsonl');
    const file = (await (await fetch(`${srv.url}/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` }, body: form })).json()) as {
      id: string;
    };
    batchId = (await call('POST', '/v1/batches', { input_file_id: file.id, endpoint: '/v1/embeddings', completion_window: '24h' }))['id'] as string;

    profileDir = await mkdtemp(join(tmpdir(), 'switchyard-chromium-'));
    browser = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1200, height: 800 },
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });
  after(async () => {
    await browser?.close();
    await srv?.close();
    if (profileDir) await rm(profileDir, { recursive: true, force: true });
  });

  it('signs in with a platform key and every page renders its data with no console errors', async () => {
    const { page, errors } = await signIn(ADMIN);
    await show(page, 'overview', 'overview');
    const perModel = page.getByRole('table', { name: 'Per-model serving' });
    await perModel.getByRole('cell', { name: MODEL, exact: true }).waitFor();
    assert.ok(await perModel.getByRole('cell', { name: OTHER, exact: true }).isVisible());
    await page.locator('figure.chart canvas').first().waitFor();
    await page.getByRole('table', { name: 'Resident versions' }).waitFor();

    await show(page, 'models', 'models');
    const list = page.getByRole('table', { name: 'Registered models' });
    await list.getByRole('link', { name: MODEL }).waitFor();
    await list.getByRole('link', { name: OTHER }).waitFor();

    await show(page, `models/${MODEL}`, 'model');
    assert.equal(await page.getByRole('table', { name: 'Versions' }).locator('tbody tr').count(), 2);
    await page.getByRole('list', { name: 'Model history' }).getByText('routing policy revision 1 (canary)').waitFor();

    await show(page, `traffic/${MODEL}`, 'traffic');
    await page.getByLabel('Weight of arm canary').waitFor();
    await page.getByRole('table', { name: 'Arms of scorer-v2' }).getByRole('cell', { name: 'control (control)' }).waitFor();
    await page.getByRole('img', { name: 'converted: conversion rate per arm of scorer-v2 over time' }).locator('canvas').waitFor();
    await page.getByRole('region', { name: 'Results over time of scorer-v2' }).screenshot({ path: join(SHOTS, 'experiment-timeline.png') });

    await show(page, 'tenants', 'tenants');
    await page.getByRole('table', { name: 'Tenants' }).getByRole('link', { name: 'acme' }).waitFor();
    await show(page, 'tenants/acme', 'tenant');
    await page.getByRole('table', { name: 'Keys' }).getByRole('cell', { name: acmeKeyId, exact: true }).waitFor();
    await page.getByRole('img', { name: 'Usage per hour by model' }).locator('canvas').waitFor();
    await page.getByRole('radio', { name: 'API key' }).check();
    await page.getByRole('img', { name: 'Usage per hour by API key' }).locator('canvas').waitFor();
    await page
      .getByRole('table', { name: 'Usage totals' })
      .getByRole('cell', { name: `dashboard (${acmeKeyId})`, exact: true })
      .waitFor();
    await page.getByRole('region', { name: /^Usage over time, by API key/ }).screenshot({ path: join(SHOTS, 'usage-by-key.png') });

    await show(page, `monitoring/${MODEL}`, 'monitoring');
    await page.getByRole('table', { name: 'Features of version 1' }).getByRole('cell', { name: 'features[0]', exact: true }).waitFor();
    assert.ok((await page.getByRole('table', { name: 'Predictions' }).locator('tbody tr').count()) > 0);
    const histogram = page.getByRole('figure', { name: /^Reference vs current histogram of features\[\d+\], version 1$/ });
    await histogram.getByText(/current window \((2[5-9]|3[0-5]) values\)/).waitFor();
    await page.locator('.histogram').screenshot({ path: join(SHOTS, 'drift-histogram.png') });

    await show(page, 'features', 'features');
    await page.getByRole('table', { name: 'Entities' }).getByRole('cell', { name: 'user', exact: true }).waitFor();
    await page.getByRole('table', { name: 'Feature views' }).getByRole('cell', { name: 'user_profile', exact: true }).waitFor();

    await show(page, 'batches', 'batches');
    await page.getByRole('table', { name: 'Batch jobs' }).getByRole('cell', { name: batchId, exact: true }).waitFor();

    await page.getByRole('button', { name: 'Dark theme', pressed: false }).click();
    await show(page, 'overview', 'overview-dark');
    assert.equal(await page.evaluate('document.documentElement.dataset.theme'), 'dark');
    assert.deepEqual(errors, []);
    await page.close();
  });

  it('an alias moved in the UI is served over V2, and a canary weight changed in the UI is the policy', async () => {
    const { page, errors } = await signIn(ADMIN);
    await page.goto(`${srv.url}/ui/#/models/${MODEL}`);
    await page.getByLabel('Alias name').fill('production');
    await page.getByLabel('Target version').selectOption('2');
    await page.getByRole('button', { name: 'Move alias' }).click();
    const dialog = page.getByRole('dialog', { name: 'Move alias' });
    await dialog.getByRole('button', { name: 'Move' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await page.getByRole('heading', { level: 1 }).getByText('production: 2').waitFor();
    const aliases = await call('GET', `/api/v1/models/${MODEL}/aliases`);
    assert.deepEqual(aliases['aliases'], { production: 2 });
    // The hot swap serves the new target once it is loaded; the old version drains meanwhile.
    let served = '';
    for (let i = 0; served !== '2'; i++) {
      // no deadline: the test runner's timeout bounds a hang
      served = String((await infer(`/v2/models/${MODEL}/versions/production/infer`, i))['model_version']);
      if (served !== '2') await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(served, '2', 'the alias moved in the console is what V2 serves');

    await page.goto(`${srv.url}/ui/#/traffic/${MODEL}`);
    await page.getByLabel('Weight of arm canary').fill('50');
    await page.getByLabel('Weight of arm control').fill('50');
    await page.getByRole('button', { name: 'Apply weights' }).click();
    const confirm = page.getByRole('dialog', { name: 'Change traffic split' });
    await confirm.getByText('canary → v2: 50.0%').waitFor();
    await confirm.getByRole('button', { name: 'Apply' }).click();
    await confirm.waitFor({ state: 'hidden' });
    await page.getByRole('heading', { name: /revision 2/ }).waitFor();
    const routing = await call('GET', `/api/v1/models/${MODEL}/routing`);
    const arms = (routing['policy'] as { arms: { name: string; weight: number }[] }).arms;
    assert.deepEqual(
      arms.map((a) => [a.name, a.weight]),
      [
        ['control', 50],
        ['canary', 50],
      ],
    );
    await page.screenshot({ path: join(SHOTS, 'traffic-changed.png') });
    assert.deepEqual(errors, []);
    await page.close();
  });

  it('accessibility: no axe-core WCAG 2.1 A/AA violations on any page, light or dark; landmarks, keyboard and focus', async (t) => {
    if (AXE === null) {
      if (process.env['CI'] === 'true') assert.fail('axe-core is not installed (a devDependency: npm ci)');
      t.skip('axe-core is not installed (npm ci); required in CI');
      return;
    }
    const axeSource = await readFile(AXE, 'utf8');
    interface AxeResult {
      violations: { id: string; impact: string; help: string; nodes: { target: string[] }[] }[];
    }
    const audit = async (page: Page, where: string): Promise<string[]> => {
      // Wait for the data: no "Loading…" left.
      while ((await page.locator('[aria-busy="true"]').count()) > 0) await page.waitForTimeout(50);
      if (!(await page.evaluate('typeof window.axe !== "undefined"'))) await page.evaluate(axeSource);
      const r = (await page.evaluate(`axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })`)) as AxeResult;
      return r.violations.map(
        (v) =>
          `${where}: ${v.id} (${v.impact}) ${v.help} — ${v.nodes
            .slice(0, 4)
            .map((n) => n.target.join(' '))
            .join(' | ')}`,
      );
    };
    const page = await browser.newPage();
    await page.goto(`${srv.url}/ui/`);
    await page.getByLabel('API key').waitFor();
    const found = await audit(page, 'sign-in');
    // Keyboard only: the key field has focus, Enter signs in.
    await page.keyboard.type(ADMIN);
    await page.keyboard.press('Enter');
    await page.getByRole('navigation', { name: 'Pages' }).waitFor();
    // The first Tab reaches "Skip to content", which moves focus to the main landmark.
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate('document.activeElement.textContent'), 'Skip to content');
    await page.keyboard.press('Enter');
    assert.equal(await page.evaluate('document.activeElement.id'), 'main');
    await page.getByRole('main').waitFor();
    // Alt+2 switches to Models; the page title names the page.
    await page.keyboard.press('Alt+2');
    await page.getByRole('heading', { level: 1, name: 'Models' }).waitFor();
    assert.equal(await page.title(), 'Models — Switchyard console');
    const views = ['overview', 'models', `models/${MODEL}`, `traffic/${MODEL}`, 'tenants', 'tenants/acme', `monitoring/${MODEL}`, 'features', 'batches'];
    for (const theme of ['light', 'dark']) {
      const toggle = page.getByRole('button', { name: 'Dark theme' });
      if (((await toggle.getAttribute('aria-pressed')) === 'true') !== (theme === 'dark')) await toggle.click();
      for (const v of views) {
        await page.goto(`${srv.url}/ui/#/${v}`);
        await page.getByRole('heading', { level: 1 }).first().waitFor();
        found.push(...(await audit(page, `${theme} #/${v}`)));
      }
    }
    assert.deepEqual(found, []);
    // A confirmation is a modal dialog: focus starts on Cancel, Escape closes it and focus returns to its button.
    await page.goto(`${srv.url}/ui/#/models/${MODEL}`);
    const archive = page.getByRole('button', { name: 'Archive' }).first();
    await archive.focus();
    await page.keyboard.press('Enter');
    const dialog = page.getByRole('dialog');
    await dialog.waitFor();
    assert.equal(await page.evaluate('document.activeElement.textContent'), 'Cancel');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    assert.equal(await page.evaluate('document.activeElement.textContent'), 'Archive');
    await page.close();
  });

  it("a tenant's key sees its own model only: another tenant's model is absent everywhere", async () => {
    const { page, errors } = await signIn(acmeKey);
    await show(page, 'models', 'tenant-models');
    const list = page.getByRole('table', { name: 'Registered models' });
    await list.getByRole('link', { name: MODEL }).waitFor();
    assert.equal(await list.getByText(OTHER).count(), 0);
    await show(page, 'overview', 'tenant-overview');
    await page.getByRole('table', { name: 'Per-model serving' }).getByRole('cell', { name: MODEL, exact: true }).waitFor();
    assert.equal(await page.getByText(OTHER).count(), 0);
    await page.goto(`${srv.url}/ui/#/models/${OTHER}`);
    await page.getByRole('alert').getByText(`No model "${OTHER}"`).waitFor();
    await show(page, 'tenants', 'tenant-tenants');
    await page.getByRole('table', { name: 'Keys' }).getByRole('cell', { name: acmeKeyId, exact: true }).waitFor();
    // The only console errors: the browser reporting the 404s the API answered for beta's model.
    assert.ok(
      errors.every((e) => /404/.test(e)),
      errors.join('\n'),
    );
    await page.close();
  });
});
