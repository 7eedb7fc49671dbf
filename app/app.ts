// The Koa application: middleware order and routers. Everything it uses is passed in, so tests build
// it against their own database and clock.
import Router from '@koa/router';
import Koa from 'koa';
import type { Logger } from 'pino';
import { apiRoutes } from './api/me';
import { clientTokenRoutes } from './auth/client-routes';
import { createAuthEvents } from './auth/events';
import { createGuard } from './auth/guard';
import { jwksRoutes } from './auth/jwks';
import { isHmac } from './auth/keys';
import { oauthMetadataRoutes } from './auth/oauth-metadata';
import type { PasswordHasher } from './auth/passwords';
import type { RevocationCheck, RevocationFeed } from './auth/revocations';
import { tokenRoutes } from './auth/routes';
import { sessionRoutes } from './auth/session-routes';
import type { Clock, TokenService } from './auth/tokens';
import type { Config } from './config';
import type { Database } from './db/database';
import { corsPolicy } from './http/cors';
import { docsRoutes } from './http/docs';
import { errorAnswers } from './http/errors';
import { requestFrame } from './http/frame';
import { healthRoutes } from './http/health';
import { openApiDocument, schemaRoutes } from './http/openapi';
import { requestLog } from './http/logging';
import { untrustedProxyWarning } from './http/proxy';
import { requestMetrics } from './http/metrics';
import type { WorkerMetrics } from './metrics/worker';

export interface AppDeps {
  config: Config;
  db: Database;
  logger: Logger;
  tokens: TokenService;
  hasher: PasswordHasher;
  clock: Clock;
  /** Revoked access tokens (Services.revocationCheck: memory, or the database past the feed's bound). */
  revocationCheck: RevocationCheck;
  feed: Pick<RevocationFeed, 'connected'>;
  metrics: WorkerMetrics;
}

export function createApp(deps: AppDeps): Koa {
  const { config, db, logger, tokens, hasher, clock, revocationCheck: revocations, feed, metrics } = deps;
  const app = new Koa();
  // Behind nginx exactly one hop is trusted, so ctx.ip is the client nginx saw, not a header a client
  // wrote.
  app.proxy = config.proxyHops > 0;
  app.maxIpsCount = config.proxyHops;
  app.silent = true; // errors are logged by errorHandler, once, with the request id

  const guard = createGuard({ tokens, authHeaderTypes: config.jwt.authHeaderTypes, revocations });
  // One router for every route: one match per request. Paths are case-sensitive, as Django's and
  // nginx's locations are: one spelling per endpoint, so no spelling slips past nginx's limits.
  const router = new Router({ sensitive: true });
  healthRoutes(router, { db, feed, clock });
  const events = createAuthEvents(metrics, logger);
  tokenRoutes(router, { db, tokens, hasher, settings: config.jwt, clock, maxBodyBytes: config.maxBodyBytes, revocations, guard, throttle: config.throttle, events });
  jwksRoutes(router, config.jwt.keys);
  // Machine clients (OAuth 2.0 client credentials): only with ISSUER an issuer identifier (config.ts).
  if (config.clients) {
    clientTokenRoutes(router, { db, tokens, settings: config.jwt, clients: config.clients, clock, maxBodyBytes: config.maxBodyBytes, throttle: config.throttle, events });
    oauthMetadataRoutes(router, { db, clients: config.clients, clock, publicKeys: !isHmac(config.jwt.algorithm) });
  }
  sessionRoutes(router, { db, guard, clock, events, reauthAge: config.jwt.sessionReauthAge });
  apiRoutes(router, { db, guard });
  schemaRoutes(router, openApiDocument({ authScheme: config.jwt.authHeaderTypes[0]!, clients: config.clients !== undefined, claims: config.jwt.accessTokenClaims }));
  docsRoutes(router);

  app.use(
    requestFrame({
      log: requestLog(logger, config.slowRequestMs),
      errors: errorAnswers({ logger, authScheme: config.jwt.authHeaderTypes[0]! }),
      record: requestMetrics(metrics),
    }),
  );
  if (config.proxyHops === 0) app.use(untrustedProxyWarning(logger));
  app.use(corsPolicy(config.corsAllowedOrigins));
  app.use(router.routes());
  return app;
}
