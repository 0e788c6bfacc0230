/**
 * @module
 * Model monitoring, put together: the sampled prediction log, drift against each version's reference profile
 * (incremental sketches over a sliding window, reports kept as history and exposed as gauges), per-model
 * latency and error windows, and the alert engine that watches all of them. The data plane calls `wants`
 * before a request runs (so it copies inputs only when something will look at them) and `observe` after.
 */
import diagnostics from 'node:diagnostics_channel';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry as PromRegistry } from 'prom-client';
import { err } from '../errors.js';
import { channels, type BatchEvent, type RequestEvent } from '../events.js';
import type { Registry } from '../registry/index.js';
import { WindowStats } from '../routing/index.js';
import type { Database } from '../storage/index.js';
import { PgChannel } from '../storage/index.js';
import type { Tensor } from '../tensor/index.js';
import { AlertEngine, type AlertRule, type AlertSignals } from './alerts.js';
import { profileDataset } from './profile-job.js';
import { buildProfile, defaultFeatures, DriftMonitor, rowsFromRecords, type DriftBins, type DriftReport, type ReferenceProfile } from './drift.js';
import { PredictionLog, type PredictionQuery } from './prediction-log.js';
import type { PredictionSink } from './prediction-log.js';
import type { FeatureSpec, PredictionRecord } from './types.js';
import { ServingTimeline, type TimelineOptions } from './timeline.js';

type Named = readonly { readonly name: string; readonly tensor: Tensor }[];

export interface MonitoringOptions {
  readonly database: Database;
  readonly registry: Registry;
  readonly sink: PredictionSink;
  readonly logger: Logger;
  readonly metrics: PromRegistry;
  /** Prediction log sampling rate per model (0..1). */
  readonly sampleRate: number;
  /** Share of requests observed for drift on versions with a reference profile (0..1). */
  readonly driftSampleRate: number;
  readonly retentionMs: number;
  /** Drift window, ms. */
  readonly driftWindowMs: number;
  /** How often drift reports are computed and stored, ms. */
  readonly driftEvalMs: number;
  readonly alertEvalMs: number;
  /** The per-model serving time series (the console's overview). Default: the last hour in 10 s steps. */
  readonly timeline?: TimelineOptions;
}

export interface ProfileRecord {
  readonly model: string;
  readonly version: number;
  readonly source: string;
  readonly createdBy: string;
  readonly createdAt: string;
  readonly profile: ReferenceProfile;
}

const key = (model: string, version: number): string => `${model}:${version}`;
const PROFILE_CHANNEL = 'switchyard_monitoring';
const NEITHER = Object.freeze({ log: false, drift: false });
const LOG_ONLY = Object.freeze({ log: true, drift: false });
const DRIFT_ONLY = Object.freeze({ log: false, drift: true });
const BOTH = Object.freeze({ log: true, drift: true });

export class MonitoringService {
  readonly log: PredictionLog;
  readonly alerts: AlertEngine;
  /** Requests, errors, latency and batch sizes per model over the last hour (fed by the same subscriptions). */
  readonly timeline: ServingTimeline;
  readonly #db: Database;
  readonly #registry: Registry;
  readonly #logger: Logger;
  readonly #opts: MonitoringOptions;
  readonly #monitors = new Map<string, DriftMonitor>();
  /** The profile (as stored) behind each monitor, to re-read only what changed. */
  readonly #installed = new Map<string, { model: string; version: number; text: string }>();
  /** Models with at least one monitored version (a cheap first check on the hot path). */
  readonly #monitored = new Set<string>();
  /** Latest computed drift report per model version. */
  readonly #latest = new Map<string, { model: string; version: number; report: DriftReport }>();
  readonly #serving = new WindowStats({ windowMs: 300_000 });
  readonly #timer: NodeJS.Timeout;
  readonly #onRequest: (m: unknown) => void;
  readonly #onBatch: (m: unknown) => void;
  #channel: PgChannel<{ model: string; version: number }> | null = null;
  #prunedAt = 0;

  private constructor(opts: MonitoringOptions) {
    this.#opts = opts;
    this.#db = opts.database;
    this.#registry = opts.registry;
    this.#logger = opts.logger;
    this.log = new PredictionLog({ sink: opts.sink, sampleRate: () => opts.sampleRate, retentionMs: opts.retentionMs, logger: opts.logger });
    const signals: AlertSignals = { value: (rule) => this.signal(rule) };
    this.alerts = new AlertEngine({ database: opts.database, signals, evalMs: opts.alertEvalMs, logger: opts.logger });
    this.timeline = new ServingTimeline(opts.timeline);
    this.#onRequest = (m) => {
      const e = m as RequestEvent;
      this.timeline.record(e);
      // Server-side failures only: bad input is the caller's, not the model's.
      if (e.ok || (e.reason !== 'invalid_input' && e.reason !== 'cancelled')) this.#serving.record(e.model, e.ok, e.totalMs);
      if (e.reason === 'invalid_input') {
        const mon = this.#monitorOf(e.model, Number(e.version));
        mon?.violation('shape');
      }
    };
    this.#onBatch = (m) => this.timeline.recordBatch(m as BatchEvent);
    diagnostics.subscribe(channels.request.name as string, this.#onRequest);
    diagnostics.subscribe(channels.batch.name as string, this.#onBatch);
    this.#timer = setInterval(
      () => void this.evaluateDrift().catch((x: unknown) => this.#logger.error({ err: x }, 'drift evaluation failed')),
      opts.driftEvalMs,
    );
    this.#timer.unref();
    this.#gauges(opts.metrics);
  }

  static async create(opts: MonitoringOptions): Promise<MonitoringService> {
    const s = new MonitoringService(opts);
    await s.#reloadProfiles();
    const db = opts.database;
    if (db.pgConfig !== null) {
      // Profiles set or removed through another replica apply here at once; after a lost connection, all are re-read.
      s.#channel = await PgChannel.start<{ model: string; version: number }>(db.pgConfig, PROFILE_CHANNEL, db.schema ?? '', {
        onMessage: (c) => void s.#reloadProfile(c.model, c.version),
        onReconnect: () => void s.#reloadProfiles().catch((e: unknown) => opts.logger.warn({ err: e }, 're-reading reference profiles failed')),
        logger: opts.logger,
      });
    }
    await s.alerts.start();
    return s;
  }

  /** Every stored reference profile installed (a monitor kept where its profile is unchanged), the others removed. */
  async #reloadProfiles(): Promise<void> {
    const rows = await this.#db.db.selectFrom('reference_profiles').selectAll().execute();
    const stored = new Set(rows.map((r) => key(r.model, Number(r.version))));
    for (const [k, m] of [...this.#installed]) if (!stored.has(k)) this.#uninstall(m.model, m.version);
    for (const row of rows) {
      if (this.#installed.get(key(row.model, Number(row.version)))?.text === row.profile) continue;
      this.#install(row.model, Number(row.version), JSON.parse(row.profile) as ReferenceProfile);
    }
  }

  async #reloadProfile(model: string, version: number): Promise<void> {
    try {
      const row = await this.#db.db
        .selectFrom('reference_profiles')
        .select('profile')
        .where('model', '=', model)
        .where('version', '=', version)
        .executeTakeFirst();
      if (row === undefined) {
        this.#uninstall(model, version);
      } else {
        this.#install(model, version, JSON.parse(row.profile) as ReferenceProfile);
      }
    } catch (e) {
      this.#logger.error({ err: e, model, version }, 'reloading a reference profile failed');
    }
  }

  async #announce(model: string, version: number): Promise<void> {
    await this.#channel?.notify(this.#db.db, { model, version }).catch((e: unknown) => this.#logger.warn({ err: e }, 'reference profile NOTIFY failed'));
  }

  // ── hot path ──

  /** Before a request runs: will the log or drift look at it? (Then the caller passes a copy of its inputs.) */
  wants(model: string, version: number): { log: boolean; drift: boolean } {
    const log = this.log.sample(model);
    // Most requests of most models: no profile and not sampled — no allocation.
    const drift =
      this.#monitored.has(model) && this.#monitors.has(key(model, version)) && (this.#opts.driftSampleRate >= 1 || Math.random() < this.#opts.driftSampleRate);
    return log ? (drift ? BOTH : LOG_ONLY) : drift ? DRIFT_ONLY : NEITHER;
  }

  /** After a request succeeded: log it and / or feed drift, as `wants` said. Never throws. */
  observe(
    w: { log: boolean; drift: boolean },
    p: { model: string; version: number; tenant: string; arm: string | null; requestId: string; latencyMs: number; inputs: Named; outputs: Named },
  ): void {
    try {
      if (w.drift) this.#monitors.get(key(p.model, p.version))?.observe(p.inputs, p.outputs);
      if (w.log) this.log.record(p);
    } catch (e) {
      this.#logger.warn({ err: e, model: p.model }, 'monitoring observe failed');
    }
  }

  // ── reference profiles ──

  /** Build and store the reference profile of a version from rows (a dataset) or from its logged predictions. */
  async setProfile(
    model: string,
    version: number,
    source:
      { rows: Iterable<Record<string, number | string | null>>; label: string } | { log: PredictionQuery } | { dataset: Uint8Array; format: 'csv' | 'jsonl' },
    names: Readonly<Record<string, readonly string[]>> | undefined,
    actor: string,
  ): Promise<ProfileRecord> {
    const v = await this.#registry.getVersion(model, version);
    if (v.signature === null) throw err('SY_ERR_REGISTRY_CONFLICT', `model "${model}" version ${version} has no signature yet`);
    const features: FeatureSpec[] = defaultFeatures(v.signature, names === undefined ? {} : { names });
    if ('dataset' in source) {
      // An uploaded dataset is parsed and profiled in a worker thread: the event loop keeps serving meanwhile.
      const built = await profileDataset({ bytes: source.dataset, format: source.format, features, target: `model "${model}" version ${version}` });
      return this.#storeProfile(model, version, built.profile, `dataset (${source.format}, ${built.rows} rows)`, actor);
    }
    let rows: Iterable<Record<string, number | string | null>>;
    let label: string;
    if ('log' in source) {
      const records: PredictionRecord[] = await this.log.query({ ...source.log, model, version });
      if (records.length === 0)
        throw err(
          'SY_ERR_BAD_REQUEST',
          `no logged predictions of model "${model}" version ${version} in that range (is the prediction log sampling this model?)`,
        );
      rows = rowsFromRecords(features, records);
      label = `prediction log: ${records.length} requests`;
    } else {
      rows = source.rows;
      label = source.label;
      const list = Array.isArray(rows) ? (rows as Record<string, unknown>[]) : null;
      if (list !== null && !features.some((f) => list.some((r) => r[f.name] !== undefined && r[f.name] !== null))) {
        throw err(
          'SY_ERR_BAD_REQUEST',
          `the dataset has none of the monitored features of model "${model}" version ${version} (expected columns such as ${features
            .slice(0, 3)
            .map((f) => `"${f.name}"`)
            .join(', ')}; name them with "names" or match the tensor columns)`,
        );
      }
    }
    return this.#storeProfile(model, version, buildProfile(features, rows), label, actor);
  }

  async #storeProfile(model: string, version: number, profile: ReferenceProfile, label: string, actor: string): Promise<ProfileRecord> {
    if (profile.rows === 0) throw err('SY_ERR_BAD_REQUEST', 'the reference data has no rows');
    const now = Date.now();
    const row = { model, version, profile: JSON.stringify(profile), source: label, created_by: actor, created_at: now };
    await this.#db.db.deleteFrom('reference_profiles').where('model', '=', model).where('version', '=', version).execute();
    await this.#db.db.insertInto('reference_profiles').values(row).execute();
    this.#install(model, version, profile);
    await this.#announce(model, version);
    return { model, version, source: label, createdBy: actor, createdAt: new Date(now).toISOString(), profile };
  }

  async getProfile(model: string, version: number): Promise<ProfileRecord> {
    const row = await this.#db.db.selectFrom('reference_profiles').selectAll().where('model', '=', model).where('version', '=', version).executeTakeFirst();
    if (row === undefined) throw err('SY_ERR_REGISTRY_NOT_FOUND', `model "${model}" version ${version} has no reference profile`);
    return {
      model,
      version,
      source: row.source,
      createdBy: row.created_by,
      createdAt: new Date(Number(row.created_at)).toISOString(),
      profile: JSON.parse(row.profile) as ReferenceProfile,
    };
  }

  async deleteProfile(model: string, version: number): Promise<void> {
    const r = await this.#db.db.deleteFrom('reference_profiles').where('model', '=', model).where('version', '=', version).executeTakeFirst();
    if (Number(r.numDeletedRows) === 0) throw err('SY_ERR_REGISTRY_NOT_FOUND', `model "${model}" version ${version} has no reference profile`);
    this.#uninstall(model, version);
    await this.#announce(model, version);
  }

  #uninstall(model: string, version: number): void {
    this.#monitors.delete(key(model, version));
    this.#installed.delete(key(model, version));
    this.#latest.delete(key(model, version));
    if (this.monitoredVersions(model).length === 0) this.#monitored.delete(model);
  }

  #install(model: string, version: number, profile: ReferenceProfile): void {
    // 1000 rows before a feature is judged: with fewer, sampling noise alone moves a 10-bin JS distance past 0.1.
    this.#monitors.set(key(model, version), new DriftMonitor(profile, { windowMs: this.#opts.driftWindowMs, minRows: 1000 }));
    this.#installed.set(key(model, version), { model, version, text: JSON.stringify(profile) });
    this.#monitored.add(model);
  }

  #monitorOf(model: string, version: number): DriftMonitor | undefined {
    return this.#monitors.get(key(model, version));
  }

  // ── drift ──

  /** The drift report of a version over the current window (computed now). */
  drift(model: string, version: number): DriftReport {
    const mon = this.#monitorOf(model, version);
    if (mon === undefined)
      throw err(
        'SY_ERR_REGISTRY_NOT_FOUND',
        `model "${model}" version ${version} has no reference profile: set one first (POST /api/v1/models/${model}/versions/${version}/profile)`,
      );
    const report = mon.report();
    this.#latest.set(key(model, version), { model, version, report });
    return report;
  }

  /** Reference vs current-window counts per feature of a version (the histograms behind {@link drift}). */
  driftBins(model: string, version: number): DriftBins {
    const mon = this.#monitorOf(model, version);
    if (mon === undefined)
      throw err(
        'SY_ERR_REGISTRY_NOT_FOUND',
        `model "${model}" version ${version} has no reference profile: set one first (POST /api/v1/models/${model}/versions/${version}/profile)`,
      );
    return mon.bins();
  }

  /** Versions of `model` that have a reference profile. */
  monitoredVersions(model: string): number[] {
    const out: number[] = [];
    for (const k of this.#monitors.keys()) {
      const i = k.lastIndexOf(':');
      if (k.slice(0, i) === model) out.push(Number(k.slice(i + 1)));
    }
    return out.sort((a, b) => a - b);
  }

  /** Compute every monitored version's report now and keep it in the history. */
  async evaluateDrift(): Promise<void> {
    const rows: { model: string; version: number; at: number; report: string }[] = [];
    for (const k of [...this.#monitors.keys()]) {
      const i = k.lastIndexOf(':');
      const model = k.slice(0, i);
      const version = Number(k.slice(i + 1));
      const report = this.drift(model, version);
      if (report.rows > 0) rows.push({ model, version, at: Date.now(), report: JSON.stringify(report) });
    }
    if (rows.length > 0) await this.#db.db.insertInto('drift_reports').values(rows).execute();
    // The history keeps what the prediction log keeps (pruned at most hourly).
    const now = Date.now();
    if (Number.isFinite(this.#opts.retentionMs) && now - this.#prunedAt > 3_600_000) {
      this.#prunedAt = now;
      await this.#db.db
        .deleteFrom('drift_reports')
        .where('at', '<', now - this.#opts.retentionMs)
        .execute();
    }
  }

  async driftHistory(q: {
    model: string;
    version?: number;
    since?: number;
    until?: number;
    limit?: number;
  }): Promise<{ at: string; version: number; report: DriftReport }[]> {
    let sel = this.#db.db.selectFrom('drift_reports').selectAll().where('model', '=', q.model);
    if (q.version !== undefined) sel = sel.where('version', '=', q.version);
    if (q.since !== undefined) sel = sel.where('at', '>=', q.since);
    if (q.until !== undefined) sel = sel.where('at', '<=', q.until);
    const rows = await sel
      .orderBy('id', 'desc')
      .limit(Math.min(q.limit ?? 100, 1000))
      .execute();
    return rows.map((r) => ({ at: new Date(Number(r.at)).toISOString(), version: Number(r.version), report: JSON.parse(r.report) as DriftReport }));
  }

  // ── alert signals ──

  /** The current value an alert rule watches, or null without data. */
  signal(rule: AlertRule): number | null {
    switch (rule.kind) {
      case 'latency_p99':
        return this.#serving.snapshot(rule.model).p99Ms;
      case 'error_rate':
        return this.#serving.snapshot(rule.model).errorRate;
      default:
        break;
    }
    let worst: number | null = null;
    for (const { model, version, report } of this.#latest.values()) {
      if (model !== rule.model || (rule.version !== undefined && version !== rule.version)) continue;
      let v: number | null = null;
      if (rule.kind === 'drift') v = report.driftedShare;
      else {
        for (const f of report.features) {
          if (rule.feature !== undefined && f.name !== rule.feature) continue;
          const x = rule.kind === 'quality' ? qualityValue(f.quality, rule.metric ?? 'missing_rate') : driftValue(f, rule.metric ?? 'psi');
          if (x !== null && (v === null || x > v)) v = x;
        }
      }
      if (v !== null && (worst === null || v > worst)) worst = v;
    }
    return worst;
  }

  #gauges(registry: PromRegistry): void {
    const latest = (): { model: string; version: number; report: DriftReport }[] => [...this.#latest.values()];
    const fv = ['model', 'version', 'feature'] as const;
    const perFeature = (name: string, help: string, pick: (f: DriftReport['features'][number]) => number | null): void => {
      new Gauge({
        name,
        help,
        labelNames: fv,
        registers: [registry],
        collect() {
          this.reset();
          for (const { model, version, report } of latest()) {
            for (const f of report.features) {
              const v = pick(f);
              if (v !== null) this.set({ model, version: String(version), feature: f.name }, v);
            }
          }
        },
      });
    };
    perFeature(
      'switchyard_drift_psi',
      'Population stability index of a feature, current window vs the reference profile (> 0.2: significant drift).',
      (f) => f.psi,
    );
    perFeature('switchyard_drift_js_distance', 'Jensen-Shannon distance (base 2) of a feature, current window vs reference.', (f) => f.js);
    perFeature('switchyard_drift_ks_statistic', 'Kolmogorov-Smirnov statistic of a numeric feature, current window vs reference.', (f) => f.ks);
    perFeature('switchyard_data_missing_rate', 'Share of missing values of a feature in the current window.', (f) => f.quality.missingRate);
    perFeature('switchyard_data_nan_rate', 'Share of NaN values of a feature in the current window.', (f) => f.quality.nanRate);
    perFeature('switchyard_data_out_of_range_rate', 'Share of values outside the reference min..max in the current window.', (f) => f.quality.outOfRangeRate);
    new Gauge({
      name: 'switchyard_drift_share',
      help: 'Share of monitored features that drifted in the current window (dataset drift when >= 0.5).',
      labelNames: ['model', 'version'],
      registers: [registry],
      collect() {
        this.reset();
        for (const { model, version, report } of latest()) if (report.driftedShare !== null) this.set({ model, version: String(version) }, report.driftedShare);
      },
    });
    const log = this.log;
    const counter = (name: string, help: string, read: () => number): void => {
      new Counter({
        name,
        help,
        registers: [registry],
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    };
    counter('switchyard_prediction_log_written_total', 'Sampled predictions written to the prediction log.', () => log.written);
    counter(
      'switchyard_prediction_log_dropped_total',
      'Sampled predictions dropped (log buffer full, or a record the sink kept refusing); requests are never affected.',
      () => log.dropped,
    );
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#channel?.close();
    diagnostics.unsubscribe(channels.request.name as string, this.#onRequest);
    diagnostics.unsubscribe(channels.batch.name as string, this.#onBatch);
    this.timeline.close();
    await this.alerts.close();
    await this.log.close();
  }
}

function qualityValue(q: DriftReport['features'][number]['quality'], metric: string): number | null {
  if (metric === 'nan_rate') return q.nanRate;
  if (metric === 'out_of_range_rate') return q.outOfRangeRate;
  return q.missingRate;
}

function driftValue(f: DriftReport['features'][number], metric: string): number | null {
  if (metric === 'js') return f.js;
  if (metric === 'ks') return f.ks;
  return f.psi;
}
