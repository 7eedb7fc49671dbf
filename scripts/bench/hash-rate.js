#!/usr/bin/env node
// argon2id hashes per second with the app's hasher and parameters, one at a time and two at a time, in
// this process (no HTTP, no database): what the CPUs can hash, the floor under login throughput. Run
// from the project's directory after `npm run build`, or in the app's image (/app):
//   node scripts/bench/hash-rate.js
//   docker run --rm -v "$PWD/scripts/bench/hash-rate.js:/h.js:ro" --entrypoint node koa-auth-stack-app /h.js
'use strict';
const path = require('node:path');

const SECONDS = Number(process.env.SECONDS_PER_MODE) || 8;
const hasher = require(path.resolve('dist/auth/passwords.js')).createPasswordHasher(undefined, { concurrency: 2 });
const hash = () => hasher.hash('bench');

(async () => {
  for (const atOnce of [1, 2]) {
    let done = 0;
    const end = Date.now() + SECONDS * 1000;
    await Promise.all(
      Array.from({ length: atOnce }, async () => {
        while (Date.now() < end) {
          await hash();
          done += 1;
        }
      }),
    );
    console.log(`${atOnce} at a time: ${(done / SECONDS).toFixed(1)} hashes/s (${((SECONDS * 1000 * atOnce) / done).toFixed(1)} ms each)`);
  }
  await hasher.close();
})();
