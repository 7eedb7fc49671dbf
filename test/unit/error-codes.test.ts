import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ERROR_CODES, notFound, throttled } from '../../app/http/errors';
import { ErrorBody } from '../../app/http/openapi';
import { ROOT } from '../support/images';

const filesUnder = (dir: string): string[] =>
  readdirSync(path.join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => path.relative(ROOT, path.join(e.parentPath, e.name)));

describe('error codes (app/http/errors.ts)', () => {
  it('are the OpenAPI document’s enum', () => {
    const schema = z.toJSONSchema(ErrorBody) as unknown as { $defs: { Error: { properties: { code: { enum?: string[] } } } } };
    expect(schema.$defs.Error.properties.code.enum).toEqual([...ERROR_CODES]);
    expect(ErrorBody.safeParse({ detail: 'x', code: 'made_up' }).success).toBe(false);
  });

  it('include every code nginx answers with', () => {
    const nginx = filesUnder('nginx').map((f) => readFileSync(path.join(ROOT, f), 'utf8')).join('\n');
    const codes = new Set([...nginx.matchAll(/\\?"code\\?":\s*\\?"([a-z_]+)/g)].map((m) => m[1]!));
    expect(codes.size).toBeGreaterThan(3);
    for (const code of codes) expect(ERROR_CODES, code).toContain(code);
  });

  it('are written nowhere else in app/', () => {
    // A body or a comparison spelling a code out: `code: 'not_found'`, `code === 'throttled'`.
    const literal = new RegExp(`\\bcode\\s*(:|===|!==)\\s*['"](${ERROR_CODES.join('|')})['"]`);
    const offenders = filesUnder('app')
      .filter((f) => f.endsWith('.ts') && f !== path.join('app', 'http', 'errors.ts'))
      .flatMap((f) => readFileSync(path.join(ROOT, f), 'utf8').split('\n').map((line, i) => [`${f}:${i + 1}`, line] as const))
      .filter(([, line]) => literal.test(line));
    expect(offenders.map(([where]) => where)).toEqual([]);
  });

  it('build their bodies once', () => {
    expect(notFound().body).toEqual({ detail: 'Not found.', code: 'not_found' });
    expect(throttled(1)).toMatchObject({ status: 429, body: { detail: 'Request was throttled. Expected available in 1 second.', code: 'throttled' }, headers: { 'Retry-After': '1' } });
    expect(throttled(2).body.detail).toMatch(/in 2 seconds\.$/);
  });
});
