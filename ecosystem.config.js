// PM2: the API as a cluster of Koa workers (PM2's cluster plays uWSGI's worker pool).
//   pm2-runtime ecosystem.config.js      the container's command (npm start)
//   pm2 reload api                       roll every worker, one at a time, no failed request
//   pm2 scale api 4                      resize the pool
// Upgrades under docker compose put the new release's code in place first (scripts/release.js).
// Beside the workers, `metrics` answers Prometheus on METRICS_PORT (0: off) with the whole container
// in one scrape, read from every worker's private socket (app/metrics/); and, when
// WEBHOOK_URL is set, `webhooks` sends the security events the workers and the CLI write to the
// outbox (app/events/): one per container, every container sharing the outbox.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

// CPUs this container may use: the CFS quota (docker --cpus) when there is one, else the CPUs the
// process may run on. os.cpus() would count the host's.
function containerCpus() {
  let quota = Infinity;
  const read = (file) => {
    try {
      return fs.readFileSync(file, 'utf8').trim();
    } catch {
      return undefined;
    }
  };
  const v2 = read('/sys/fs/cgroup/cpu.max'); // "max 100000" or "150000 100000"
  if (v2) {
    const [max, period] = v2.split(/\s+/);
    if (max !== 'max') quota = Number(max) / Number(period);
  } else {
    const max = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us'));
    const period = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_period_us'));
    if (max > 0 && period > 0) quota = max / period;
  }
  return Math.max(1, Math.min(os.availableParallelism(), Math.ceil(quota)));
}

// The code the workers run: the image's own, or, once an upgrade activated another release in this
// container (scripts/release.js), that one. A link, so that `pm2 reload` starts each new worker from
// whatever it points at by then.
function codeHome() {
  const link = process.env.APP_RELEASE_LINK;
  return link && fs.existsSync(link) ? link : __dirname;
}

const home = codeHome();
// The settings PM2 needs, read, defaulted and checked by the app's own config module (built: npm run
// build), so its names, defaults and messages are the app's. A bad value stops the start here. The
// module shipped beside this file: an activated release changes the workers' code, not this list.
const { loadProcessConfig } = require(path.join(__dirname, 'dist/config.js'));
const settings = loadProcessConfig(process.env, containerCpus());
const workers = settings.workers;
const metricsSocketDir = settings.metricsSocketDir;

// What every process here shares.
const common = {
  // Restart a process that crashes, with backoff; do not give up on a flapping database.
  exp_backoff_restart_delay: 200,
  max_restarts: 1000,
  merge_logs: true,
  // Without PM2's in-process agent (pm2-io-bpm), which PM2 otherwise loads into every process: it
  // wraps http.Server's emit to time each request, samples the heap and the event loop every
  // second, and opens an inspector session for remote profiling, all for PM2's paid dashboard
  // (pm2.io). The app has its own metrics (METRICS_PORT); `pm2 ls` and `pm2 monit` still show each
  // process's CPU and memory, which the daemon reads from outside. A worker is ~2.6 MB smaller
  // after start (docs/PERFORMANCE.md). In fork mode the agent also kept a process running after an
  // unhandled rejection; without it, every process here ends on an unhandled error, as the workers
  // did already, and PM2 starts it again.
  pmx: false,
};

module.exports = {
  apps: [
    {
      ...common,
      name: 'api',
      script: path.join(home, 'dist/server.js'),
      cwd: home,
      exec_mode: 'cluster',
      instances: workers,
      // A worker counts as up when it says so (process.send('ready') after the database answers),
      // not when it first listens; a reload moves on only then.
      wait_ready: true,
      // Above the slowest start: the worker waits up to DB_CONNECT_TIMEOUT (30 s) for the database.
      listen_timeout: 40_000,
      // Above a worker's whole stop: SHUTDOWN_DELAY, then SHUTDOWN_TIMEOUT for in-flight requests
      // before connections are cut, and a margin (15 s with the defaults).
      kill_timeout: settings.killTimeoutMs,
      // A smaller young generation: the default (16 MiB semi-spaces) adds ~15 MB of RSS per worker
      // under load for no throughput we could measure (docs/PERFORMANCE.md).
      node_args: ['--max-semi-space-size=4'],
      env: {
        NODE_ENV: settings.env,
        PASSWORD_HASH_CONCURRENCY: String(settings.hashConcurrency),
        METRICS_SOCKET_DIR: metricsSocketDir ?? '',
      },
    },
    ...(settings.webhooks
      ? [
          {
            ...common,
            name: 'webhooks',
            script: path.join(home, 'dist/events/server.js'),
            cwd: home,
            exec_mode: 'fork',
            instances: 1,
            // Lets the batch in flight finish (its requests end by WEBHOOK_TIMEOUT, 15 s by default); a
            // kill before that only sends those events again, under the same webhook-id.
            kill_timeout: 20_000,
            env: {
              NODE_ENV: settings.env,
              METRICS_SOCKET_DIR: metricsSocketDir ?? '',
            },
          },
        ]
      : []),
    ...(metricsSocketDir !== undefined
      ? [
          {
            ...common,
            name: 'metrics',
            script: path.join(home, 'dist/metrics/server.js'),
            cwd: home,
            exec_mode: 'fork',
            instances: 1,
            env: { METRICS_SOCKET_DIR: metricsSocketDir },
          },
        ]
      : []),
  ],
};
