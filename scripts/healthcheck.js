#!/usr/bin/env node
// Docker HEALTHCHECK for the app image: GET /healthz on the local port, with only what the image
// has (node). Exit 0 healthy, 1 not.
'use strict';
const http = require('node:http');

const port = Number(process.env.PORT) || 3000;
const req = http.get({ host: '127.0.0.1', port, path: '/healthz', timeout: 2000 }, (res) => {
  res.resume();
  process.exit(res.statusCode === 200 ? 0 : 1);
});
req.on('timeout', () => req.destroy(new Error('timeout')));
req.on('error', () => process.exit(1));
