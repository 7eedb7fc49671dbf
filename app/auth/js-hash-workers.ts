// The password hash this project has no native code for, computed in JavaScript on worker threads:
// bcrypt (bcryptjs), for Django's bcrypt_sha256 and bcrypt hashes. A bcrypt check at Django's 12
// rounds is a quarter of a second of pure JavaScript: on the main thread it would stall every other
// request of the worker meanwhile, so it runs here, on as many threads as the hasher runs hashes at
// once. Threads start on first use and never keep the process alive.
import { Worker } from 'node:worker_threads';

// CommonJS, evaluated in the thread; the libraries are resolved by the main thread (so the compiled
// app, tsx and vitest all find the same files) and passed in.
const THREAD = `
const { parentPort, workerData } = require('node:worker_threads');
const bcrypt = require(workerData.bcryptjs);
parentPort.on('message', (job) => {
  try {
    parentPort.postMessage({ ok: true, result: bcrypt.hashSync(job.password, job.setting) });
  } catch (err) {
    parentPort.postMessage({ ok: false, message: String((err && err.message) || err) });
  }
});`;

interface Job {
  password: string;
  setting: string;
}

type Reply = { ok: true; result: string } | { ok: false; message: string };

export interface JsHashWorkers {
  /** bcrypt of `password` (truncated to 72 UTF-8 bytes, as every bcrypt) with `setting` ("$2b$12$" + 22 salt characters): the 60-character string. */
  bcrypt(password: string, setting: string): Promise<string>;
  /** Threads running now (for tests). */
  threads(): number;
  close(): Promise<void>;
}

export function createJsHashWorkers(size: number): JsHashWorkers {
  const all = new Set<Worker>();
  const idle: Worker[] = [];
  const waiting: ((worker: Worker) => void)[] = [];
  let closed = false;

  function spawn(): Worker {
    const worker = new Worker(THREAD, {
      eval: true,
      workerData: { bcryptjs: require.resolve('bcryptjs') },
    });
    all.add(worker);
    worker.once('exit', () => {
      all.delete(worker);
      const i = idle.indexOf(worker);
      if (i >= 0) idle.splice(i, 1);
      // A job waiting for a thread gets a new one in place of the one that failed.
      const next = closed ? undefined : waiting.shift();
      if (next) next(spawn());
    });
    return worker;
  }

  function acquire(): Promise<Worker> {
    const free = idle.pop();
    if (free) return Promise.resolve(free);
    if (all.size < size) return Promise.resolve(spawn());
    return new Promise((resolve) => waiting.push(resolve));
  }

  function release(worker: Worker): void {
    const next = waiting.shift();
    if (next) return next(worker);
    worker.unref(); // an idle pool never keeps the process alive
    idle.push(worker);
  }

  async function run(job: Job): Promise<string> {
    const worker = await acquire();
    worker.ref();
    return new Promise((resolve, reject) => {
      const settle = (fn: () => void) => {
        worker.off('message', onMessage).off('error', onError).off('exit', onExit);
        fn();
      };
      const onMessage = (reply: Reply) =>
        settle(() => {
          release(worker);
          if (reply.ok) resolve(reply.result);
          else reject(new Error(`password hash thread: ${reply.message}`));
        });
      // A thread that failed is dropped; the next job starts another.
      const onError = (err: Error) => settle(() => reject(err));
      const onExit = (code: number) => settle(() => reject(new Error(`password hash thread exited (${code})`)));
      worker.on('message', onMessage).on('error', onError).on('exit', onExit);
      worker.postMessage(job);
    });
  }

  return {
    bcrypt: (password, setting) => run({ password, setting }),
    threads: () => all.size,
    async close() {
      closed = true;
      await Promise.all([...all].map((w) => w.terminate()));
    },
  };
}
