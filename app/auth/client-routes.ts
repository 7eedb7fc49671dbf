// POST /api/oauth/token/: the OAuth 2.0 client credentials grant (RFC 6749 §4.4) for machine clients,
// answering exactly as RFC 6749 §5.1 and §5.2 say: a form-encoded request; client authentication by
// HTTP Basic (client_secret_basic, with §2.3.1's form-encoding inside the Basic credentials) or by
// form fields (client_secret_post), never both; `{access_token, token_type, expires_in, scope}` or
// `{error, error_description}`, JSON, never cached. Access tokens are RFC 9068's (tokens.ts); there
// is no refresh token (§4.4.3). The handler is thin: parse, throttle, grantClientCredentials, answer.
import type Router from '@koa/router';
import type { Context } from 'koa';
import type { ClientSettings, JwtSettings } from '../config';
import type { Database } from '../db/database';
import { createBodyReader } from '../http/body';
import { endpoint } from '../http/endpoint';
import { ApiError } from '../http/errors';
import { sendJson } from '../http/respond';
import type { ClientGrantOutcome } from './outcomes';
import { clientEventRecorder } from '../events/client-events';
import { grantClientCredentials, isScopeToken, type RecordEvent } from './clients';
import type { AuthEvents } from './events';
import { NO_STORE_HEADERS } from '../http/no-store';
import { clientOf } from './caller';
import * as throttle from './throttle';
import { MAX_CLIENT_ID_LENGTH, type Clock, type TokenService } from './tokens';

export const CLIENT_TOKEN_PATH = '/api/oauth/token';

/** RFC 6749 §5.2's error codes (and RFC 8628's slow_down, for the throttle). */
export type OAuthErrorCode = 'invalid_request' | 'invalid_client' | 'invalid_scope' | 'unsupported_grant_type' | 'slow_down';

// RFC 6749 §5.2: a 401 names the scheme the client may authenticate with.
const BASIC_CHALLENGE = 'Basic realm="oauth", charset="UTF-8"';
const MAX_SECRET_LENGTH = 512;

/** An answer in RFC 6749 §5.2's shape. */
export class OAuthError extends ApiError {
  override name = 'OAuthError';
  constructor(
    readonly error: OAuthErrorCode,
    description: string,
    status = 400,
    headers: Record<string, string> = {},
  ) {
    super(status, { error, error_description: description }, { ...NO_STORE_HEADERS, ...headers });
  }
}

const invalidRequest = (why: string) => new OAuthError('invalid_request', why);
const invalidClient = (why = 'Client authentication failed.') => new OAuthError('invalid_client', why, 401, { 'WWW-Authenticate': BASIC_CHALLENGE });

export interface ClientRouteDeps {
  db: Database;
  tokens: TokenService;
  settings: JwtSettings;
  clients: ClientSettings;
  clock: Clock;
  maxBodyBytes: number;
  throttle: throttle.ThrottleSettings;
  events: AuthEvents;
  /** Records grants inside their transactions; by default the security-event outbox (app/events/). */
  record?: RecordEvent;
}

interface Credentials {
  clientId: string;
  secret: string;
}

/** application/x-www-form-urlencoded decoding of one value (RFC 6749 Appendix B), or undefined when malformed. */
function formDecode(value: string): string | undefined {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    return undefined;
  }
}

/** client_secret_basic: RFC 7617's credentials, each half form-encoded first (RFC 6749 §2.3.1). */
function basicCredentials(header: string): Credentials {
  const match = /^Basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(header.trim());
  if (!match) throw invalidClient('Client authentication failed: use HTTP Basic (client_secret_basic) or client_id and client_secret in the body (client_secret_post).');
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const clientId = colon < 0 ? undefined : formDecode(decoded.slice(0, colon));
  const secret = colon < 0 ? undefined : formDecode(decoded.slice(colon + 1));
  if (!clientId || !secret) throw invalidClient('Client authentication failed: malformed Basic credentials.');
  return { clientId, secret };
}

/** Who the client says it is, by exactly one method (RFC 6749 §2.3). */
function credentialsOf(ctx: Context, params: URLSearchParams): Credentials {
  const headers = ctx.req.headersDistinct.authorization ?? [];
  if (headers.length > 1) throw invalidRequest('The Authorization header is repeated.');
  const bodyId = params.get('client_id') || undefined;
  const bodySecret = params.get('client_secret') || undefined;
  let credentials: Credentials;
  if (headers.length === 1) {
    if (bodySecret !== undefined) throw invalidRequest('The client authenticated in more than one way: use HTTP Basic or client_secret in the body, not both.');
    credentials = basicCredentials(headers[0]!);
    if (bodyId !== undefined && bodyId !== credentials.clientId) throw invalidRequest('client_id in the body differs from the one in the Authorization header.');
  } else if (bodySecret !== undefined) {
    if (bodyId === undefined) throw invalidRequest('client_secret needs its client_id.');
    credentials = { clientId: bodyId, secret: bodySecret };
  } else {
    throw invalidClient('Client authentication is required (client_secret_basic or client_secret_post).');
  }
  if (credentials.clientId.length > MAX_CLIENT_ID_LENGTH || credentials.secret.length > MAX_SECRET_LENGTH) throw invalidClient();
  return credentials;
}

/** The scope parameter (RFC 6749 §3.3), or undefined when absent: the client's own scopes then. */
function requestedScopes(params: URLSearchParams): string[] | undefined {
  const raw = params.get('scope') || undefined;
  if (raw === undefined) return undefined;
  const scopes = raw.split(' ').filter(Boolean);
  if (scopes.length === 0 || !scopes.every(isScopeToken)) throw new OAuthError('invalid_scope', 'The scope is malformed: scope tokens separated by spaces.');
  return scopes;
}

const PARAMETERS = ['grant_type', 'scope', 'client_id', 'client_secret'];

export function clientTokenRoutes(router: Router, deps: ClientRouteDeps): void {
  const { db, tokens, settings, clock } = deps;
  const body = createBodyReader(deps.maxBodyBytes);

  async function parameters(ctx: Context): Promise<URLSearchParams> {
    let params: URLSearchParams;
    try {
      params = await body.form(ctx);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      const detail = typeof err.body.detail === 'string' ? err.body.detail : 'The request body could not be read.';
      throw new OAuthError('invalid_request', `${detail} The token endpoint takes application/x-www-form-urlencoded.`, err.status === 413 ? 413 : 400);
    }
    for (const name of PARAMETERS) if (params.getAll(name).length > 1) throw invalidRequest(`The "${name}" parameter is repeated.`);
    return params;
  }

  async function grant(ctx: Context, claimed: (clientId: string) => void): Promise<void> {
    const params = await parameters(ctx);
    // RFC 6749 §3.2: a parameter sent without a value is as if absent.
    const grantType = params.get('grant_type') || undefined;
    if (grantType === undefined) throw invalidRequest('grant_type is required.');
    if (grantType !== 'client_credentials') {
      throw new OAuthError('unsupported_grant_type', 'This endpoint grants client_credentials only; users log in at /api/token/.');
    }
    const credentials = credentialsOf(ctx, params);
    claimed(credentials.clientId);
    const requested = requestedScopes(params);

    // Counted before the secret is checked, as a login is: concurrent guesses cannot all pass.
    const now = new Date(clock());
    const keys = throttle.clientKeys(credentials.clientId, ctx.ip);
    const reservation = await throttle.reserveLoginAttempt(db, keys, now, deps.throttle);
    if (!reservation.ok) {
      const seconds = reservation.waitSeconds;
      throw new OAuthError('slow_down', `Too many attempts for this client; retry in ${seconds} second${seconds === 1 ? '' : 's'}.`, 429, {
        'Retry-After': String(seconds),
      });
    }
    const outcome = await grantClientCredentials(
      db,
      { clientId: credentials.clientId, secret: credentials.secret, requested },
      // The clock is read here, with the client held (clients.ts): the token's iat.
      (client, scopes) => tokens.signClient({ clientId: client.clientId, scopes }, clock()),
      deps.record ?? clientEventRecorder(db, clock, clientOf(ctx)),
    );
    if (!outcome.ok && outcome.error === 'invalid_client') throw invalidClient();
    await throttle.loginSucceeded(db, keys, now); // the secret was right
    if (!outcome.ok) throw new OAuthError('invalid_scope', 'The requested scope is not one this client may be granted.');
    ctx.set(NO_STORE_HEADERS);
    sendJson(ctx, 200, {
      access_token: outcome.token.token,
      token_type: 'Bearer',
      expires_in: settings.accessTokenLifetime,
      ...(outcome.scopes.length > 0 ? { scope: outcome.scopes.join(' ') } : {}),
    });
  }

  async function token(ctx: Context): Promise<void> {
    let clientId: string | undefined;
    const record = (outcome: ClientGrantOutcome) => deps.events.clientGrant(ctx, outcome, clientId);
    try {
      await grant(ctx, (id) => (clientId = id));
    } catch (err) {
      if (err instanceof OAuthError) record(err.error === 'slow_down' ? 'throttled' : err.error);
      throw err;
    }
    record('success');
  }

  router.all(CLIENT_TOKEN_PATH, endpoint({ POST: token }));
}
