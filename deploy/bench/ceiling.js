// The ceiling for benchmarks: a bare node:http cluster (same worker count as the app) answering every
// request with the JSON GET /api/me/ returns, after reading any body: no framework, no auth, no
// database. Behind the same nginx configuration, it is the most the stack could do here. npm run bench
// runs it twice: on the host (no Docker at all) and in a container.
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');

const workers = Number(process.env.WEB_CONCURRENCY) || os.availableParallelism();
const port = Number(process.env.PORT) || 3000;
const body = JSON.stringify({ id: 1, username: 'bench' });

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', () => cluster.fork());
  process.on('SIGTERM', () => {
    cluster.removeAllListeners('exit');
    for (const w of Object.values(cluster.workers)) w.kill();
    process.exit(0);
  });
} else {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.keepAliveTimeout = 65_000;
  server.listen(port, process.env.HOST);
}
