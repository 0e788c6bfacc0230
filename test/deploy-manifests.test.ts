/**
 * deploy/ without a cluster: the Dockerfile's structure (stages, non-root user, volumes, what it copies exists
 * and passes its .dockerignore); every Kustomize overlay rendered by `kubectl kustomize`, every rendered
 * object validated against its Kubernetes (or KEDA / prometheus-operator CRD) schema, and the relations a
 * cluster would only reveal at run time (selectors, ports, volumes, config values the server accepts, drain
 * timing, no scale-to-zero on a pod-sourced metric).
 * kubectl must be there in CI (CI=true; .ci/run installs it); elsewhere the rendering tests are skipped with a message.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { ConfigMap, PersistentVolumeClaim, Service, ServiceAccount } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { Job } from 'kubernetes-models/batch/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { loadServerConfig } from '../src/config/server-config.js';

const inCi = process.env['CI'] === 'true';
const root = fileURLToPath(new URL('../../', import.meta.url));
const deploy = (p: string): string => `${root}deploy/${p}`;

// ── Dockerfile ──

interface Stage {
  from: string;
  name: string | null;
  lines: string[];
}

/** The Dockerfile's instructions (continuations joined, comments dropped), grouped by stage. */
function stages(text: string): Stage[] {
  const joined = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const out: Stage[] = [];
  for (const line of joined) {
    const m = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?$/i.exec(line);
    if (m) out.push({ from: m[1]!, name: m[2] ?? null, lines: [] });
    else if (/^(ARG|#)/i.test(line) && out.length === 0) continue;
    else {
      assert.ok(out.length > 0, `instruction before the first FROM: ${line}`);
      out[out.length - 1]!.lines.push(line);
    }
  }
  return out;
}

describe('deploy/Dockerfile (structure; no Docker engine here to build it)', () => {
  const text = readFileSync(deploy('Dockerfile'), 'utf8');
  const all = stages(text);
  const final = all[all.length - 1]!;
  const instr = (s: Stage, op: string): string[] => s.lines.filter((l) => l.toUpperCase().startsWith(`${op} `)).map((l) => l.slice(op.length + 1).trim());

  it('is multi-stage: a build stage, and a runtime stage that copies only built output from it', () => {
    assert.ok(all.length >= 2, 'at least two stages');
    const build = all.find((s) => s.name === 'build');
    assert.ok(build, 'a stage named build');
    assert.ok(
      instr(build, 'RUN').some((r) => r.includes('tsc')),
      'the build stage compiles TypeScript',
    );
    assert.ok(
      instr(build, 'RUN').some((r) => r.includes('npm prune --omit=dev')),
      'dev dependencies are pruned',
    );
    const copies = instr(final, 'COPY');
    assert.ok(copies.length > 0 && copies.every((c) => c.includes('--from=build')), `the runtime stage copies only from build: ${copies.join(' | ')}`);
    assert.ok(!instr(final, 'RUN').some((r) => /apt-get install/.test(r)), 'no compilers in the runtime stage');
  });

  it('runs as a non-root user with its writable paths on volumes', () => {
    const users = instr(final, 'USER');
    assert.equal(users.length, 1, 'one USER in the runtime stage');
    const [user, group] = users[0]!.split(':');
    assert.ok(
      user !== 'root' && user !== '0' && /^\d+$/.test(user!),
      `USER ${users[0]} is numeric and not root (Kubernetes' runAsNonRoot needs a numeric uid)`,
    );
    assert.ok(group !== '0', 'not the root group');
    // Nothing switches back to root after USER.
    const after = final.lines.slice(final.lines.findIndex((l) => /^USER /i.test(l)) + 1);
    assert.ok(!after.some((l) => /^USER /i.test(l)), 'USER is not changed again');
    const volumes = instr(final, 'VOLUME').join(' ');
    for (const v of ['/data', '/cache']) assert.ok(volumes.includes(`"${v}"`), `VOLUME ${v}`);
    const env = instr(final, 'ENV').join(' ');
    assert.match(env, /SWITCHYARD_DATA_DIR=\/data/);
    assert.match(env, /SWITCHYARD_HOST=0\.0\.0\.0/);
    assert.deepEqual(JSON.parse(instr(final, 'ENTRYPOINT')[0]!), ['node', '/app/dist/src/cli/main.js']);
  });

  it('copies only paths that exist and that its .dockerignore lets through', () => {
    const ignore = readFileSync(deploy('Dockerfile.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    assert.equal(ignore[0], '**', 'everything excluded by default');
    const allowed = ignore.slice(1).map((l) => l.replace(/^!/, '').replace(/\/\*\*$/, ''));
    for (const s of all.filter((st) => st !== final)) {
      for (const c of instr(s, 'COPY').filter((x) => !x.includes('--from='))) {
        const parts = c.split(/\s+/).filter((p) => !p.startsWith('--'));
        for (const src of parts.slice(0, -1)) {
          assert.ok(existsSync(`${root}${src}`), `COPY ${src}: exists in the repository`);
          assert.ok(allowed.includes(src), `COPY ${src}: let through by Dockerfile.dockerignore`);
        }
      }
    }
  });
});

// ── Kustomize ──

/** The kubectl to use: $KUBECTL, else the one on PATH; null when there is none. */
function findKubectl(): string | null {
  const candidate = process.env['KUBECTL'] ?? 'kubectl';
  return spawnSync(candidate, ['version', '--client'], { encoding: 'utf8' }).error === undefined ? candidate : null;
}
const kubectl = findKubectl();

type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
};
type Validatable = { validate(): void };
const MODELS: Record<string, new (data: never) => Validatable> = {
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'apps/v1/Deployment': Deployment,
  'batch/v1/Job': Job,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'keda.sh/v1alpha1/ScaledObject': ScaledObject,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
};

function render(overlay: string): Obj[] {
  assert.ok(kubectl !== null, 'kubectl must be installed in CI (.ci/run installs kubernetes-client when it is missing)');
  const r = spawnSync(kubectl, ['kustomize', deploy(`kustomize/overlays/${overlay}`)], { encoding: 'utf8' });
  assert.ifError(r.error);
  // Debian's kubernetes-client (kubectl 1.20) embeds kustomize v2.0.3, which predates `labels`, `patches`,
  // `replicas` and components; name the version so that failure explains itself.
  const version = spawnSync(kubectl, ['version', '--client'], { encoding: 'utf8' }).stdout.replace(/\s+/g, ' ').trim();
  assert.equal(r.status, 0, `kubectl kustomize ${overlay} (${version}; the overlays need kustomize v4 or later, kubectl 1.21+): ${r.stderr}`);
  return parseAllDocuments(r.stdout)
    .map((d) => d.toJS() as Obj)
    .filter((o) => o !== null);
}

const one = (objs: Obj[], kind: string, name?: string): Obj => {
  const found = objs.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  assert.equal(found.length, 1, `one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0]!;
};
const matches = (selector: Record<string, string>, labels: Record<string, string> | undefined): boolean =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

type Container = {
  name: string;
  args?: string[];
  ports?: { name: string; containerPort: number }[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  envFrom?: { configMapRef?: { name: string } }[];
  volumeMounts?: { name: string; mountPath: string }[];
  securityContext?: { readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean };
  startupProbe?: Probe;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
};
type Probe = { httpGet: { path: string; port: string }; periodSeconds: number; failureThreshold: number };
type PodSpec = {
  containers: Container[];
  volumes?: { name: string; persistentVolumeClaim?: { claimName: string } }[];
  terminationGracePeriodSeconds?: number;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  topologySpreadConstraints?: { labelSelector: { matchLabels: Record<string, string> } }[];
};
type Template = { metadata: { labels: Record<string, string> }; spec: PodSpec };
const podOf = (o: Obj): Template => (o.spec as { template: Template }).template;

/** The environment a container gets: its ConfigMaps' data, then its literal env (secret refs as placeholders). */
function environment(objs: Obj[], c: Container): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of c.envFrom ?? []) {
    const name = from.configMapRef?.name;
    assert.ok(name, 'envFrom uses ConfigMaps only (secrets come by secretKeyRef, key by key)');
    Object.assign(env, one(objs, 'ConfigMap', name).data);
  }
  for (const e of c.env ?? []) env[e.name] = e.value ?? `<secret ${e.valueFrom?.secretKeyRef?.name}/${e.valueFrom?.secretKeyRef?.key}>`;
  return env;
}

/** Every `[env NAME]` that `switchyard <command> --help` documents. */
function documentedEnv(command: string): Set<string> {
  const r = spawnSync(process.execPath, [fileURLToPath(new URL('../src/cli/main.js', import.meta.url)), command, '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return new Set([...r.stdout.replace(/\s+/g, ' ').matchAll(/\[env (SWITCHYARD_[A-Z_]+)/g)].map((m) => m[1]!));
}

/** Settings the server reads that are not its own (the AWS SDK's) and the runtime's. */
const FOREIGN_ENV = new Set(['AWS_REGION', 'AWS_ENDPOINT_URL', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'NODE_ENV', 'TMPDIR']);

function noThrow(f: () => void, what: string): void {
  try {
    f();
  } catch (e) {
    assert.fail(`${what}: ${(e as Error).message}`);
  }
}

function checkServer(objs: Obj[]): { deployment: Obj; pod: Template; container: Container; env: Record<string, string> } {
  for (const o of objs) {
    const Model = MODELS[`${o.apiVersion}/${o.kind}`];
    assert.ok(Model, `${o.apiVersion} ${o.kind} has no schema in this test: add its model`);
    noThrow(() => new Model(o as never).validate(), `${o.kind} ${o.metadata.name} against its schema`);
  }
  const deployment = one(objs, 'Deployment', 'switchyard');
  const pod = podOf(deployment);
  const container = pod.spec.containers.find((c) => c.name === 'switchyard')!;
  assert.ok(container, 'the switchyard container');
  // Security: non-root, read-only root filesystem, writable paths mounted.
  assert.equal(pod.spec.securityContext?.runAsNonRoot, true);
  assert.equal(container.securityContext?.readOnlyRootFilesystem, true);
  assert.equal(container.securityContext?.allowPrivilegeEscalation, false);
  const volumes = new Set((pod.spec.volumes ?? []).map((v) => v.name));
  const mounts = new Map((container.volumeMounts ?? []).map((m) => [m.mountPath, m.name]));
  for (const path of ['/data', '/cache', '/tmp']) assert.ok(volumes.has(mounts.get(path) ?? ''), `${path} is mounted from a pod volume`);
  // The Service and the probes point at ports the container names.
  const ports = new Set((container.ports ?? []).map((p) => p.name));
  const service = one(objs, 'Service', 'switchyard');
  for (const p of (service.spec as { ports: { targetPort: string }[] }).ports) assert.ok(ports.has(p.targetPort), `Service targetPort ${p.targetPort}`);
  const selector = (service.spec as { selector: Record<string, string> }).selector;
  assert.ok(matches(selector, pod.metadata.labels), 'the Service selects the server pods');
  for (const job of objs.filter((o) => o.kind === 'Job'))
    assert.ok(!matches(selector, podOf(job).metadata.labels), `the Service does not select Job ${job.metadata.name}'s pods`);
  const probes = { startup: container.startupProbe, readiness: container.readinessProbe, liveness: container.livenessProbe };
  for (const [kind, p] of Object.entries(probes)) {
    assert.ok(p, `${kind} probe`);
    assert.ok(ports.has(p.httpGet.port), `${kind} probe port ${p.httpGet.port}`);
  }
  assert.equal(probes.readiness!.httpGet.path, '/v2/health/ready');
  assert.ok(probes.startup!.periodSeconds * probes.startup!.failureThreshold >= 600, 'the startup probe allows at least 10 minutes of model loading');
  // Drain: the grace period outlasts the preStop sleep plus the server's drain.
  const env = environment(objs, container);
  const sleep = Number(container.lifecycle?.preStop?.exec?.command.at(-1));
  const drainS = Number(env['SWITCHYARD_SHUTDOWN_GRACE_MS']) / 1000;
  assert.ok(sleep > 0 && drainS > 0, `preStop sleep ${sleep}, drain ${drainS}`);
  assert.ok((pod.spec.terminationGracePeriodSeconds ?? 30) > sleep + drainS, `grace ${pod.spec.terminationGracePeriodSeconds} s > ${sleep} s + ${drainS} s`);
  // Every SWITCHYARD_* variable is one the server documents, and the values pass its config validation.
  const known = documentedEnv('serve');
  for (const name of Object.keys(env)) assert.ok(known.has(name) || FOREIGN_ENV.has(name), `${name}: not a documented setting of switchyard serve`);
  const values = Object.fromEntries(Object.entries(env).filter(([, v]) => !v.startsWith('<secret ')));
  values['SWITCHYARD_ADMIN_KEY'] = 'x'.repeat(24);
  noThrow(() => loadServerConfig({}, values), "the rendered settings in switchyard serve's config validation");
  return { deployment, pod, container, env };
}

describe(
  'Kustomize overlays (deploy/kustomize)',
  { skip: kubectl === null && !inCi ? 'kubectl is not installed; set CI=true to make this fail' : false },
  () => {
    it('embedded: one replica, Recreate, SQLite on its PVC, no autoscaler', () => {
      const objs = render('embedded');
      const { deployment, pod, env } = checkServer(objs);
      const spec = deployment.spec as { replicas: number; strategy: { type: string } };
      assert.equal(spec.replicas, 1);
      assert.equal(spec.strategy.type, 'Recreate');
      const data = pod.spec.volumes!.find((v) => v.name === 'data');
      assert.equal(one(objs, 'PersistentVolumeClaim', data?.persistentVolumeClaim?.claimName).kind, 'PersistentVolumeClaim');
      assert.equal(env['SWITCHYARD_DATABASE'], undefined, 'the default: SQLite in the data dir');
      assert.equal(objs.filter((o) => o.kind === 'HorizontalPodAutoscaler' || o.kind === 'ScaledObject').length, 0);
    });

    it('scaled: external stores from secrets, HPA, PDB, spread, ServiceMonitor, migration Job', () => {
      const objs = render('scaled');
      const { deployment, pod, env, container } = checkServer(objs);
      assert.equal((deployment.spec as { replicas?: number }).replicas, undefined, 'the HPA owns the replica count');
      for (const name of ['SWITCHYARD_DATABASE', 'SWITCHYARD_REDIS', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'])
        assert.match(env[name] ?? '', /^<secret /, `${name} from a Secret`);
      assert.match(env['SWITCHYARD_ARTIFACTS'] ?? '', /^s3:\/\//);
      const hpa = one(objs, 'HorizontalPodAutoscaler', 'switchyard').spec as {
        scaleTargetRef: { kind: string; name: string };
        minReplicas: number;
        metrics: { resource?: { name: string } }[];
      };
      assert.deepEqual([hpa.scaleTargetRef.kind, hpa.scaleTargetRef.name], ['Deployment', 'switchyard']);
      assert.ok(hpa.minReplicas >= 2);
      assert.equal(hpa.metrics[0]?.resource?.name, 'cpu');
      const pdb = one(objs, 'PodDisruptionBudget').spec as { selector: { matchLabels: Record<string, string> } };
      assert.ok(matches(pdb.selector.matchLabels, pod.metadata.labels), 'the PDB covers the server pods');
      const spread = pod.spec.topologySpreadConstraints ?? [];
      assert.ok(spread.length >= 1 && spread.every((t) => matches(t.labelSelector.matchLabels, pod.metadata.labels)), 'topology spread over the server pods');
      const sm = one(objs, 'ServiceMonitor').spec as { selector: { matchLabels: Record<string, string> }; endpoints: { port: string; path: string }[] };
      const service = one(objs, 'Service', 'switchyard');
      assert.ok(matches(sm.selector.matchLabels, service.metadata.labels), 'the ServiceMonitor selects the Service');
      assert.ok((service.spec as { ports: { name: string }[] }).ports.some((p) => p.name === sm.endpoints[0]?.port));
      assert.equal(sm.endpoints[0]?.path, '/metrics');
      const job = podOf(one(objs, 'Job'));
      const migrate = job.spec.containers[0]!;
      assert.deepEqual(migrate.args, ['migrate']);
      assert.equal(migrate.securityContext?.readOnlyRootFilesystem, true);
      assert.equal(environment(objs, migrate)['SWITCHYARD_DATABASE'], env['SWITCHYARD_DATABASE'], 'the Job migrates the database the servers use');
      assert.equal((migrate as { image?: string }).image, (container as { image?: string }).image, 'same image as the servers');
    });

    it('scaled-keda: a ScaledObject on queue time per request replaces the HPA, never scaling to zero', () => {
      const objs = render('scaled-keda');
      checkServer(objs);
      assert.equal(objs.filter((o) => o.kind === 'HorizontalPodAutoscaler').length, 0, 'KEDA owns the HPA: ours is deleted');
      const so = one(objs, 'ScaledObject').spec as {
        minReplicaCount: number;
        scaleTargetRef: { name: string };
        triggers: { type: string; metricType?: string; metadata: { query?: string } }[];
      };
      assert.equal(so.scaleTargetRef.name, 'switchyard');
      assert.ok(so.minReplicaCount >= 1, 'no scale to zero on a metric the pods themselves export (the 0→1 deadlock)');
      const prom = so.triggers.find((t) => t.type === 'prometheus');
      assert.equal(prom?.metricType, 'Value', 'an average is not divided by the replica count');
      assert.match(prom?.metadata.query ?? '', /switchyard_inference_queue_duration_seconds_sum/);
    });
  },
);
