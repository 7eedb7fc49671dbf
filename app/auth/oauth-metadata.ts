// GET /.well-known/oauth-authorization-server: RFC 8414's metadata, from which OAuth client
// libraries find the token endpoint and resource servers the issuer and the keys (the JWKS beside
// it, jwks.ts). Served only with machine clients on, so `issuer` is ISSUER, exactly as in the tokens.
import type Router from '@koa/router';
import type { ClientSettings } from '../config';
import type { Database } from '../db/database';
import { endpoint } from '../http/endpoint';
import { sendJson } from '../http/respond';
import { CLIENT_TOKEN_PATH } from './client-routes';
import { offeredScopes } from './clients';
import type { Clock } from './tokens';

export const METADATA_PATH = '/.well-known/oauth-authorization-server';
// As the JWKS: clients and resource servers refetch at most this often.
const MAX_AGE_SECONDS = 300;
// The scopes are read from the database at most this often, one read at a time: the document is
// public and unthrottled, so a flood of it costs the database nothing more.
const SCOPES_CACHE_MS = 10_000;

export interface AuthorizationServerMetadata {
  issuer: string;
  token_endpoint: string;
  jwks_uri?: string;
  scopes_supported: string[];
  response_types_supported: string[];
  grant_types_supported: string[];
  token_endpoint_auth_methods_supported: string[];
  service_documentation: string;
}

/** publicKeys: the tokens are signed with a private key whose public half the JWKS serves. With an
 *  HMAC key the JWKS is empty and nobody else can verify a token, so no jwks_uri is named (RFC 8414
 *  makes it optional) rather than one that leads to no key. */
export function authorizationServerMetadata(clients: ClientSettings, scopes: string[], publicKeys: boolean): AuthorizationServerMetadata {
  // ISSUER has no path (config.ts), so the endpoints sit at its origin.
  const at = (path: string) => new URL(path, clients.issuer).href;
  return {
    issuer: clients.issuer,
    token_endpoint: at(`${CLIENT_TOKEN_PATH}/`),
    ...(publicKeys ? { jwks_uri: at('/.well-known/jwks.json') } : {}),
    scopes_supported: scopes,
    // Required by RFC 8414; there is no authorization endpoint, so none.
    response_types_supported: [],
    grant_types_supported: ['client_credentials'],
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    service_documentation: at('/api/docs/'),
  };
}

export function oauthMetadataRoutes(router: Router, deps: { db: Database; clients: ClientSettings; clock: Clock; publicKeys: boolean }): void {
  let cached: { at: number; scopes: Promise<string[]> } | undefined;
  const scopes = (): Promise<string[]> => {
    const now = deps.clock();
    if (!cached || now - cached.at >= SCOPES_CACHE_MS) {
      const read = offeredScopes(deps.db);
      cached = { at: now, scopes: read };
      read.catch(() => (cached = undefined)); // a failed read is not kept
    }
    return cached.scopes;
  };
  router.all(
    METADATA_PATH,
    endpoint({
      GET: async (ctx) => {
        const document = authorizationServerMetadata(deps.clients, await scopes(), deps.publicKeys);
        ctx.set('Cache-Control', `public, max-age=${MAX_AGE_SECONDS}`);
        sendJson(ctx, 200, document);
      },
    }),
  );
}
