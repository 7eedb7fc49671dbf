#!/usr/bin/env node
// argon2id hashes per second with the app's parameters, one at a time and two at a time, in this
// process (no HTTP, no database): what the CPUs can hash, the floor under login throughput.
//   node scripts/bench/hash-rate.js
//   docker run --rm -v "$PWD/scripts/bench/hash-rate.js:/h.js:ro" --entrypoint node koa-auth-stack-app /h.js
'use strict';
const { argon2, randomBytes } = require('node:crypto');

const SECONDS = Number(process.env.SECONDS_PER_MODE) || 8;
const params = () => ({ message: Buffer.from('bench'), nonce: randomBytes(16), memory: 19456, passes: 2, parallelism: 1, tagLength: 32 });
const hash = () => new Promise((resolve, reject) => argon2('argon2id', params(), (err) => (err ? reject(err) : resolve())));

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
})();
