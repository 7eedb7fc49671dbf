// deploy/k8s/ without a cluster: every manifest against the Kubernetes API schemas (kubernetes-models,
// generated from a current Kubernetes release's OpenAPI: types, required fields, enums, formats, and,
// through its TypeScript types, no field the API does not know), then what ties the manifests to
// each other and to the code: selectors and labels, ports, probes, env names, secrets and mounts.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import Router from '@koa/router';
import Ajv from 'ajv';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { CONFIG_VARIABLES, loadCollectorConfig, loadProcessConfig } from '../../app/config';
import type { Database } from '../../app/db/database';
import { healthRoutes } from '../../app/http/health';
import { ROOT } from '../support/images';

/* eslint-disable @typescript-eslint/no-explicit-any -- manifests are arbitrary YAML, checked field by field below */
type Manifest = Record<string, any>;

const DIR = path.join(ROOT, 'deploy/k8s');
const NOT_RESOURCES = new Set(['kustomization.yaml']);

interface Doc {
  file: string;
  object: Manifest;
}

// Kubernetes reads YAML 1.1 (0440 is octal there).
const parse = (text: string) => parseAllDocuments(text, { version: '1.1' }).map((d) => d.toJS() as Manifest | null);

const docs: Doc[] = readdirSync(DIR)
  .filter((f) => f.endsWith('.yaml') && !NOT_RESOURCES.has(f))
  .sort()
  .flatMap((file) =>
    parse(readFileSync(path.join(DIR, file), 'utf8'))
      .filter((o): o is Manifest => o !== null)
      .map((object) => ({ file, object })),
  );
const kustomization = parse(readFileSync(path.join(DIR, 'kustomization.yaml'), 'utf8'))[0]!;

const name = (d: Doc) => `${d.file}: ${d.object.kind}/${d.object.metadata?.name}`;
const ofKind = (kind: string) => docs.filter((d) => d.object.kind === kind).map((d) => d.object);
const byName = (kind: string, n: string) => ofKind(kind).find((o) => o.metadata.name === n);

/** The pods the manifests make: each workload's template, with the workload's name. */
const podTemplates = [...ofKind('Deployment'), ...ofKind('Job')].map((w) => ({ workload: w.metadata.name as string, template: w.spec.template }));
const containersOf = (workload: string) => podTemplates.find((p) => p.workload === workload)!.template.spec.containers as Manifest[];

/**
 * CloudNativePG's Cluster, which kubernetes-models does not know: its CRD's published schema (the
 * v1 openAPIV3Schema of config/crd/bases/postgresql.cnpg.io_clusters.yaml, release 1.30.0, without
 * descriptions, in test/fixtures/cnpg-cluster.schema.json), checked as the API server checks a
 * custom resource with strict field validation: types, enums, required fields, bounds, patterns,
 * and no field the schema does not declare (unless it preserves unknown fields). Its CEL rules
 * (x-kubernetes-validations) are not evaluated here. To take a newer release's schema, read that
 * file at the release's tag and rewrite the fixture the same way.
 */
const CRD_SCHEMAS: Record<string, string> = { 'postgresql.cnpg.io/v1/Cluster': 'cnpg-cluster.schema.json' };

/** A CRD schema with every object closed to undeclared fields, as strict field validation treats it. */
function strictSchema(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(strictSchema);
  if (!node || typeof node !== 'object') return node;
  const out: Manifest = Object.fromEntries(Object.entries(node).map(([k, v]) => [k, k === 'enum' || k === 'required' ? v : strictSchema(v)]));
  if (out['x-kubernetes-int-or-string']) {
    delete out.type;
    out.anyOf = [{ type: 'integer' }, { type: 'string' }];
  }
  if (out.properties && out.additionalProperties === undefined && !out['x-kubernetes-preserve-unknown-fields']) out.additionalProperties = false;
  return out;
}

const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
const compiled = new Map<string, ReturnType<typeof ajv.compile>>(); // compiling takes seconds: once
function crdValidator(apiVersion: string, kind: string) {
  const file = CRD_SCHEMAS[`${apiVersion}/${kind}`];
  if (!file) return undefined;
  if (!compiled.has(file)) {
    const { $comment, ...schema } = JSON.parse(readFileSync(path.join(ROOT, 'test/fixtures', file), 'utf8')) as Manifest;
    expect($comment).toMatch(/CloudNativePG v1\.30\.0/);
    compiled.set(file, ajv.compile(strictSchema(schema) as object));
  }
  return compiled.get(file)!;
}

/** The models package's module and class for an apiVersion and kind (core group: "v1"). */
function modelPath(apiVersion: string, kind: string): string {
  return `kubernetes-models/${apiVersion}/${kind}`;
}

const matches = (selector: Record<string, string>, labels: Record<string, string> = {}) =>
  Object.entries(selector).every(([k, v]) => labels[k] === v);

/** Pods a label selector picks: the workloads' templates, or a CloudNativePG cluster's instances. */
function selected(selector: Manifest): string[] {
  const labels = selector.matchLabels as Record<string, string>;
  if (labels['cnpg.io/cluster']) return [`cnpg:${labels['cnpg.io/cluster']}`];
  return podTemplates.filter((p) => matches(labels, p.template.metadata.labels)).map((p) => p.workload);
}

function containerPorts(workload: string): Manifest[] {
  return containersOf(workload).flatMap((c) => c.ports ?? []);
}

interface Peer {
  namespace: string;
  labels: Record<string, string>;
}

/**
 * Whether the network policies let `peer` connect to a workload's pods (namespace kas) on one of
 * their named container ports, as the API defines it: a pod no Ingress policy selects takes
 * anything; otherwise some rule of a policy that selects it must match both the peer (pod and
 * namespace selectors: the pod's own namespace when only a pod selector is given, both when both
 * are) and the port.
 */
function admits(peer: Peer, workload: string, portName: string, policies = ofKind('NetworkPolicy')): boolean {
  const podLabels = podTemplates.find((p) => p.workload === workload)!.template.metadata.labels;
  const port = containerPorts(workload).find((p) => p.name === portName)!;
  const namespaceLabels = { 'kubernetes.io/metadata.name': peer.namespace };
  const selecting = policies.filter(
    (np) => (np.spec.policyTypes ?? ['Ingress']).includes('Ingress') && matches(np.spec.podSelector.matchLabels ?? {}, podLabels),
  );
  if (selecting.length === 0) return true;
  const peerMatches = (from: Manifest) => {
    if (from.ipBlock) return false; // pod traffic is not described by address blocks here
    const pods = from.podSelector ? matches(from.podSelector.matchLabels ?? {}, peer.labels) : true;
    const namespaces = from.namespaceSelector ? matches(from.namespaceSelector.matchLabels ?? {}, namespaceLabels) : peer.namespace === 'kas';
    return pods && namespaces;
  };
  const portMatches = (p: Manifest) => p.port === undefined || p.port === port.name || p.port === port.containerPort;
  return selecting.some((np) =>
    (np.spec.ingress ?? []).some(
      (rule: Manifest) => (rule.from === undefined || rule.from.some(peerMatches)) && (rule.ports === undefined || rule.ports.some(portMatches)),
    ),
  );
}

describe('deploy/k8s against the Kubernetes API schemas', () => {
  it('lists every manifest in kustomization.yaml, but the examples and the CloudNativePG cluster (applied on its own)', () => {
    const files = [...new Set(docs.map((d) => d.file))].filter((f) => !f.endsWith('.example.yaml') && f !== 'cnpg-cluster.yaml');
    expect([...kustomization.resources].sort()).toEqual(files.sort());
    expect(kustomization.namespace).toBe(byName('Namespace', 'kas')?.metadata.name);
  });

  it('validates every object against its schema', async () => {
    expect(docs.length).toBeGreaterThan(10);
    for (const d of docs) {
      const crd = crdValidator(d.object.apiVersion, d.object.kind);
      if (crd) {
        expect(crd(d.object) ? [] : crd.errors, name(d)).toEqual([]);
        continue;
      }
      const module = (await import(modelPath(d.object.apiVersion, d.object.kind))) as Record<string, new (data: Manifest) => { validate(): void }>;
      const Model = module[d.object.kind];
      expect(Model, `${name(d)}: no schema for ${d.object.apiVersion} ${d.object.kind}`).toBeDefined();
      expect(() => new Model!(d.object).validate(), name(d)).not.toThrow();
    }
  }, 60_000);

  it('checks the CloudNativePG Cluster against its CRD’s schema, and finds a wrong type, a bad enum, a missing field and a misspelt one', () => {
    const cluster = byName('Cluster', 'kas-db')!;
    const validate = crdValidator(cluster.apiVersion, cluster.kind)!;
    expect(validate(cluster), JSON.stringify(validate.errors)).toBe(true);
    const broken = (change: (c: Manifest) => void) => {
      const c = structuredClone(cluster);
      change(c);
      return validate(c) ? [] : validate.errors!.map((e) => `${e.instancePath} ${e.message} ${JSON.stringify(e.params)}`);
    };
    expect(broken((c) => (c.spec.instances = 'three')).join()).toMatch(/\/spec\/instances must be integer/);
    expect(broken((c) => (c.spec.postgresql.synchronous.method = 'some')).join()).toMatch(/synchronous\/method must be equal to one of the allowed values/);
    expect(broken((c) => delete c.spec.postgresql.synchronous.number).join()).toMatch(/must have required property 'number'/);
    expect(broken((c) => (c.spec.postgresql.synchronus = c.spec.postgresql.synchronous)).join()).toMatch(/additionalProperty":"synchronus"/);
  }, 60_000);

  it('finds a wrong type and a missing required field (the check can fail)', async () => {
    const { Deployment } = await import('kubernetes-models/apps/v1/Deployment');
    const app = structuredClone(byName('Deployment', 'kas-app')!);
    app.spec.replicas = 'two';
    expect(() => new Deployment(app).validate()).toThrow(/replicas/);
    delete app.spec.selector;
    app.spec.replicas = 2;
    expect(() => new Deployment(app).validate()).toThrow(/selector/);
  });

  // The schemas accept fields they do not define (the API server refuses them: kubectl validates
  // strictly); the models' TypeScript types do not, so each object is type-checked as a literal.
  function unknownFields(objects: Manifest[]): string[] {
    const source = objects
      .map((o, i) => {
        const type = `I${o.kind}`;
        return `import type { ${type} as T${i} } from ${JSON.stringify(modelPath(o.apiVersion, o.kind))};\nexport const m${i}: T${i} = ${JSON.stringify(o, null, 1)};`;
      })
      .join('\n');
    const file = path.join(ROOT, 'test/unit/k8s-manifests.generated.mts');
    const options: ts.CompilerOptions = {
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      target: ts.ScriptTarget.ES2024,
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      types: [],
    };
    const host = ts.createCompilerHost(options);
    const readFile = host.readFile.bind(host);
    const getSourceFile = host.getSourceFile.bind(host);
    host.fileExists = ((exists) => (f: string) => f === file || exists(f))(host.fileExists.bind(host));
    host.readFile = (f) => (f === file ? source : readFile(f));
    host.getSourceFile = (f, lang, ...rest) => (f === file ? ts.createSourceFile(f, source, lang) : getSourceFile(f, lang, ...rest));
    const program = ts.createProgram([file], options, host);
    return ts
      .getPreEmitDiagnostics(program)
      .map((diag) => {
        const at = diag.file && diag.start !== undefined ? diag.file.getLineAndCharacterOfPosition(diag.start).line : -1;
        const index = [...source.split('\n').slice(0, at + 1).join('\n').matchAll(/export const m(\d+)/g)].pop()?.[1];
        const o = index === undefined ? undefined : objects[Number(index)];
        return `${o ? `${o.kind}/${o.metadata?.name}` : '?'}: ${ts.flattenDiagnosticMessageText(diag.messageText, ' ')}`;
      });
  }

  it('uses no field the Kubernetes API does not have (and finds a misspelt one)', () => {
    // One compilation (they take seconds): the manifests, then a copy of the app with a typo.
    const misspelt = structuredClone(byName('Deployment', 'kas-app')!);
    misspelt.metadata.name = 'misspelt';
    misspelt.spec.template.spec.containers[0].readinesProbe = misspelt.spec.template.spec.containers[0].readinessProbe;
    const found = unknownFields([...docs.map((d) => d.object).filter((o) => !crdValidator(o.apiVersion, o.kind)), misspelt]);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(/^Deployment\/misspelt: .*readinesProbe/);
  }, 60_000);
});

describe('deploy/k8s, what ties it together', () => {
  it('gives every workload a selector that matches its pods, and every pod the restricted security settings', () => {
    for (const w of [...ofKind('Deployment'), ...ofKind('Job')]) {
      const pod = w.spec.template;
      if (w.spec.selector) expect(matches(w.spec.selector.matchLabels, pod.metadata.labels), w.metadata.name).toBe(true);
      expect(pod.spec.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
      expect(pod.spec.securityContext.runAsUser).toBeGreaterThan(0); // numeric: the images name their user
      expect(pod.spec.automountServiceAccountToken).toBe(false);
      for (const c of pod.spec.containers) {
        expect(c.securityContext, `${w.metadata.name}/${c.name}`).toEqual({
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          capabilities: { drop: ['ALL'] },
        });
        expect(c.resources?.limits?.cpu, `${w.metadata.name}/${c.name}: a CPU limit`).toBeDefined();
      }
    }
  });

  it('points every Service, autoscaler, disruption budget and network policy at pods that exist, on ports they open', () => {
    for (const s of ofKind('Service')) {
      const pods = selected({ matchLabels: s.spec.selector });
      expect(pods, `Service ${s.metadata.name}`).toHaveLength(1);
      for (const p of s.spec.ports) {
        expect(containerPorts(pods[0]!).some((cp) => cp.name === p.targetPort || cp.containerPort === p.targetPort), `Service ${s.metadata.name} → ${p.targetPort}`).toBe(true);
      }
    }
    for (const h of ofKind('HorizontalPodAutoscaler')) {
      expect(byName(h.spec.scaleTargetRef.kind, h.spec.scaleTargetRef.name), h.metadata.name).toBeDefined();
      expect(byName('PodDisruptionBudget', h.metadata.name)?.spec.minAvailable).toBeLessThan(h.spec.minReplicas);
    }
    for (const b of ofKind('PodDisruptionBudget')) expect(selected(b.spec.selector), b.metadata.name).toHaveLength(1);
    for (const np of ofKind('NetworkPolicy')) {
      const targets = selected(np.spec.podSelector);
      expect(targets.length, `NetworkPolicy ${np.metadata.name} selects no pod`).toBeGreaterThan(0);
      for (const rule of [...(np.spec.ingress ?? []), ...(np.spec.egress ?? [])]) {
        for (const peer of [...(rule.from ?? []), ...(rule.to ?? [])]) {
          if (peer.podSelector && !peer.namespaceSelector) expect(selected(peer.podSelector).length, `${np.metadata.name}: peer`).toBeGreaterThan(0);
        }
      }
      // A named port must be one the selected pods (ingress) or the peers (egress) open.
      for (const rule of np.spec.ingress ?? []) {
        for (const port of rule.ports ?? []) {
          if (typeof port.port === 'string') for (const t of targets) expect(containerPorts(t).map((p) => p.name), `${np.metadata.name}`).toContain(port.port);
        }
      }
      for (const rule of np.spec.egress ?? []) {
        for (const port of rule.ports ?? []) {
          if (typeof port.port !== 'string') continue;
          for (const peer of rule.to ?? []) for (const t of selected(peer.podSelector)) expect(containerPorts(t).map((p) => p.name)).toContain(port.port);
        }
      }
    }
  });

  it('lets only nginx reach the app, and only the app and the migrate Job reach Postgres', () => {
    const app = byName('NetworkPolicy', 'kas-app')!;
    expect(app.spec.ingress.flatMap((r: Manifest) => r.from.flatMap((p: Manifest) => selected(p.podSelector)))).toEqual(['kas-nginx']);
    const db = byName('NetworkPolicy', 'kas-db')!;
    const onPostgres = db.spec.ingress.filter((r: Manifest) => r.ports.some((p: Manifest) => p.port === 5432));
    expect(onPostgres.flatMap((r: Manifest) => r.from.flatMap((p: Manifest) => selected(p.podSelector))).sort()).toEqual(['cnpg:kas-db', 'kas-app', 'kas-migrate']);
    // Every pod of the stack is denied by default.
    const deny = byName('NetworkPolicy', 'kas-default-deny')!;
    expect(deny.spec.ingress ?? []).toEqual([]);
    expect(deny.spec.egress ?? []).toEqual([]);
    expect(selected(deny.spec.podSelector).sort()).toEqual(podTemplates.map((p) => p.workload).sort());
  });

  it('probes paths the app and nginx serve', () => {
    // The app's own router decides what /healthz and /readyz are.
    const router = new Router();
    healthRoutes(router, { db: {} as Database, feed: { connected: () => true }, clock: Date.now });
    const nginxLocations = readFileSync(path.join(ROOT, 'nginx/templates/api.locations'), 'utf8');
    for (const { workload, template } of podTemplates) {
      for (const c of template.spec.containers) {
        for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe'].map((p) => c[p]).filter(Boolean)) {
          const where = `${workload}/${c.name}: ${probe.httpGet.path}`;
          expect(c.ports.map((p: Manifest) => p.name), where).toContain(probe.httpGet.port);
          if (workload === 'kas-app') expect(router.match(probe.httpGet.path, 'GET').route, where).toBe(true);
          else expect(nginxLocations, where).toContain(`location = ${probe.httpGet.path} {`);
        }
      }
    }
    const app = containersOf('kas-app')[0]!;
    expect([app.readinessProbe.httpGet.path, app.livenessProbe.httpGet.path]).toEqual(['/readyz', '/healthz']);
    expect(router.match('/nowhere', 'GET').route).toBe(false); // the check can fail
  });

  it('sets only variables the code reads, from ConfigMaps and Secrets that exist', () => {
    // The app: app/config.ts, plus what ecosystem.config.js reads for PM2.
    const ecosystem = readFileSync(path.join(ROOT, 'ecosystem.config.js'), 'utf8');
    const appReads = new Set([...CONFIG_VARIABLES, ...[...ecosystem.matchAll(/process\.env\.([A-Z_]+)/g)].map((m) => m[1]!)]);
    // nginx: the variables its image declares (nginx/Dockerfile's ENV) for entrypoint.sh.
    const dockerfile = readFileSync(path.join(ROOT, 'nginx/Dockerfile'), 'utf8');
    const nginxReads = new Set([...dockerfile.matchAll(/^\s*(?:ENV\s+)?([A-Z_]+)=/gm)].map((m) => m[1]!));
    expect(nginxReads).toContain('APP_UPSTREAM_FOLLOW');

    for (const { workload, template } of podTemplates) {
      for (const c of template.spec.containers as Manifest[]) {
        const reads = c.name === 'nginx' ? nginxReads : appReads;
        const names: string[] = (c.env ?? []).map((e: Manifest) => e.name);
        for (const from of c.envFrom ?? []) {
          const cm = byName('ConfigMap', from.configMapRef.name);
          expect(cm, `${workload}: ConfigMap ${from.configMapRef.name}`).toBeDefined();
          names.push(...Object.keys(cm!.data));
        }
        for (const n of names) expect(reads.has(n), `${workload}/${c.name} sets ${n}, which nothing reads`).toBe(true);
        for (const e of c.env ?? []) {
          const ref = e.valueFrom?.secretKeyRef;
          if (ref) expect(Object.keys(byName('Secret', ref.name)?.stringData ?? {}), `${workload}: Secret ${ref.name}`).toContain(ref.key);
        }
      }
    }
    expect(appReads.has('NOT_A_SETTING')).toBe(false);
  });

  it('gives the app its database URL from a Secret, its key as a file from a Secret, and its workers from its CPU limit', () => {
    for (const workload of ['kas-app', 'kas-migrate']) {
      const [c] = containersOf(workload);
      const env = Object.fromEntries(c!.env.map((e: Manifest) => [e.name, e]));
      expect(env.DATABASE_URL.valueFrom.secretKeyRef).toEqual({ name: 'kas-db-app', key: 'uri' });
      // SIGNING_KEY_FILE is a key of the Secret mounted at its directory.
      const file = env.SIGNING_KEY_FILE.value as string;
      const mount = c!.volumeMounts.find((m: Manifest) => m.mountPath === path.dirname(file));
      const volume = podTemplates.find((p) => p.workload === workload)!.template.spec.volumes.find((v: Manifest) => v.name === mount.name);
      expect(Object.keys(byName('Secret', volume.secret.secretName)?.stringData ?? {})).toContain(path.basename(file));
      // Readable by the pod's user: group-readable with fsGroup, as the container runs non-root.
      const pod = podTemplates.find((p) => p.workload === workload)!.template.spec;
      expect(pod.securityContext.fsGroup).toBe(pod.securityContext.runAsGroup);
      expect(volume.secret.defaultMode & 0o040).toBe(0o040);
    }
    const [app] = containersOf('kas-app');
    const workers = app!.env.find((e: Manifest) => e.name === 'WEB_CONCURRENCY');
    expect(workers.valueFrom.resourceFieldRef).toMatchObject({ containerName: app!.name, resource: 'limits.cpu' });
    expect(app!.command).toEqual(['pm2-runtime', 'start', 'ecosystem.config.js']);
  });

  it('gives the app longer to stop than the preStop pause and PM2’s drain together', () => {
    // PM2's kill_timeout as ecosystem.config.js takes it, with the settings the manifests give the app.
    const settings = Object.fromEntries(Object.entries(byName('ConfigMap', 'kas-settings')!.data as Record<string, string>).filter(([k]) => k.startsWith('SHUTDOWN_')));
    const { killTimeoutMs } = loadProcessConfig({ SIGNING_KEY: 'k', ...settings }, 1);
    const pod = byName('Deployment', 'kas-app')!.spec.template.spec;
    const pause = pod.containers[0].lifecycle.preStop.sleep.seconds as number;
    expect(pause).toBeGreaterThan(0);
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(pause + killTimeoutMs / 1000);
  });

  it('has nginx follow the app pods through a headless Service', () => {
    const nginxEnv = byName('ConfigMap', 'kas-nginx')!.data;
    const [host, port] = (nginxEnv.APP_UPSTREAM as string).split(':');
    const service = byName('Service', host!)!;
    expect(service.spec.clusterIP).toBe('None');
    expect(service.spec.ports.map((p: Manifest) => String(p.port))).toContain(port);
    expect(Number(nginxEnv.APP_UPSTREAM_FOLLOW)).toBeGreaterThan(0);
  });

  it('serves HTTPS at the edge, from a TLS Secret, behind a ClusterIP Service (the LoadBalancer or Ingress is a choice)', () => {
    const service = byName('Service', 'kas-nginx')!;
    expect(service.spec.type ?? 'ClusterIP').toBe('ClusterIP');
    // Only a NodePort or LoadBalancer Service may set it (the API refuses it here).
    expect(service.spec.externalTrafficPolicy).toBeUndefined();
    expect(Object.fromEntries(service.spec.ports.map((p: Manifest) => [p.port, p.targetPort]))).toEqual({ 80: 'http', 443: 'https' });
    const [nginx] = containersOf('kas-nginx');
    expect(Object.fromEntries(nginx!.ports.map((p: Manifest) => [p.name, p.containerPort]))).toEqual({ http: 80, https: 443 });
    // The certificate and key where the image looks for them (nginx/Dockerfile: TLS_CERT_FILE,
    // TLS_KEY_FILE), from a kubernetes.io/tls Secret, readable by nginx's user.
    const dockerfile = readFileSync(path.join(ROOT, 'nginx/Dockerfile'), 'utf8');
    const file = (name: string) => new RegExp(`${name}=(\\S+)`).exec(dockerfile)![1]!;
    const pod = byName('Deployment', 'kas-nginx')!.spec.template.spec;
    for (const f of [file('TLS_CERT_FILE'), file('TLS_KEY_FILE')]) {
      const mount = nginx!.volumeMounts.find((m: Manifest) => m.mountPath === path.dirname(f));
      expect(mount, f).toBeDefined();
      const volume = pod.volumes.find((v: Manifest) => v.name === mount.name);
      const secret = byName('Secret', volume.secret.secretName)!;
      expect(secret.type).toBe('kubernetes.io/tls');
      expect(Object.keys(secret.stringData)).toContain(path.basename(f));
      expect(pod.securityContext.fsGroup).toBe(pod.securityContext.runAsGroup);
      expect(volume.secret.defaultMode & 0o040).toBe(0o040);
    }
    // Probes stay on port 80 (answered there, not redirected).
    for (const probe of [nginx!.readinessProbe, nginx!.livenessProbe]) expect(probe.httpGet.port).toBe('http');
    // The trusted-proxy setting is there, empty: nobody's X-Forwarded-For is believed until set.
    expect(byName('ConfigMap', 'kas-nginx')!.data.REAL_IP_FROM).toBe('');
  });

  it('lets Prometheus in the monitoring namespace scrape the app’s metrics port, and nothing else in', () => {
    // The port the metrics collector listens on when nothing sets it (app/config.ts).
    const collectorPort = loadCollectorConfig({ METRICS_SOCKET_DIR: '/run/metrics' }).port;
    const [app] = containersOf('kas-app');
    expect(app!.ports.find((p: Manifest) => p.name === 'metrics')?.containerPort).toBe(collectorPort);
    expect(byName('ConfigMap', 'kas-settings')!.data.METRICS_PORT).toBeUndefined(); // the default is the one declared
    const prometheus = { namespace: 'monitoring', labels: { 'app.kubernetes.io/name': 'prometheus' } };
    const nginxPod = { namespace: 'kas', labels: podTemplates.find((p) => p.workload === 'kas-nginx')!.template.metadata.labels };
    expect(admits(prometheus, 'kas-app', 'metrics')).toBe(true);
    expect(admits(prometheus, 'kas-app', 'http')).toBe(false);
    expect(admits(prometheus, 'kas-nginx', 'http')).toBe(true); // the edge is open to everyone
    expect(admits({ namespace: 'monitoring', labels: { 'app.kubernetes.io/name': 'grafana' } }, 'kas-app', 'metrics')).toBe(false);
    expect(admits({ namespace: 'default', labels: prometheus.labels }, 'kas-app', 'metrics')).toBe(false);
    expect(admits(nginxPod, 'kas-app', 'http')).toBe(true);
    expect(admits(nginxPod, 'kas-app', 'metrics')).toBe(false);
    // Without the policy, the default deny leaves Prometheus out (the check can fail).
    expect(admits(prometheus, 'kas-app', 'metrics', ofKind('NetworkPolicy').filter((np) => np.metadata.name !== 'kas-prometheus'))).toBe(false);
  });

  it('gives the app a CloudNativePG cluster that survives a lost instance: synchronous standby, one instance per node, disruption budgets; its Secret and policy match', () => {
    const cluster = byName('Cluster', 'kas-db')!;
    expect(cluster.spec.instances).toBeGreaterThanOrEqual(3);
    expect(cluster.spec.postgresql.synchronous).toMatchObject({ number: 1, dataDurability: 'required' });
    expect(cluster.spec.postgresql.synchronous.number).toBeLessThan(cluster.spec.instances);
    expect(cluster.spec.enablePDB).toBe(true);
    expect(cluster.spec.affinity).toMatchObject({ enablePodAntiAffinity: true, podAntiAffinityType: 'required', topologyKey: 'kubernetes.io/hostname' });
    // The operator names the app's Secret <cluster>-app (key uri), the one the app reads.
    for (const workload of ['kas-app', 'kas-migrate']) {
      const env = containersOf(workload)[0]!.env.find((e: Manifest) => e.name === 'DATABASE_URL');
      expect(env.valueFrom.secretKeyRef).toEqual({ name: `${cluster.metadata.name}-app`, key: 'uri' });
    }
    expect(cluster.spec.bootstrap.initdb.owner).toBe(cluster.spec.bootstrap.initdb.database);
    expect(cluster.metadata.namespace).toBe(kustomization.namespace);
    expect(byName('NetworkPolicy', 'kas-db')!.spec.podSelector.matchLabels).toEqual({ 'cnpg.io/cluster': cluster.metadata.name });
  });

  it('keeps real secrets out of the example', () => {
    for (const s of ofKind('Secret')) for (const v of Object.values(s.stringData as Record<string, string>)) expect(v).toMatch(/replace-me/);
  });
});
