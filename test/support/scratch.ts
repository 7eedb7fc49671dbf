// Scratch directories for tests, removed when the test that made them ends, passed or failed: files
// written for the CLI, keys and certificates made for a container. Each CI run had left nine or ten
// behind.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { onTestFinished } from 'vitest';

/** A new directory under the system's temporary one; only inside a test (vitest's onTestFinished). */
export async function scratchDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}
