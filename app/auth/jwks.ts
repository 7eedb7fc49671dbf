// GET /.well-known/jwks.json: the public keys tokens are verified with, for services that verify our
// tokens themselves. HMAC secrets are never published (an HS* deployment answers an empty set).
import type Router from '@koa/router';
import { endpoint } from '../http/endpoint';
import { sendJson } from '../http/respond';
import type { KeySet } from './keys';

// Verifiers refetch at most this often; after a rotation they see the new kid within this time, and
// a verifier that meets an unknown kid refetches at once anyway.
const MAX_AGE_SECONDS = 300;

export function jwksRoutes(router: Router, keys: KeySet): void {
  const body = keys.jwks();
  router.all(
    '/.well-known/jwks.json',
    endpoint({
      GET: (ctx) => {
        ctx.set('Cache-Control', `public, max-age=${MAX_AGE_SECONDS}`);
        sendJson(ctx, 200, body);
      },
    }),
  );
}
