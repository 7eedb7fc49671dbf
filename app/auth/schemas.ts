// The token endpoints' and the session API's requests and answers as zod schemas: the handlers
// validate with the request schemas, build their answers to the answer types, and the OpenAPI
// document (app/http/openapi.ts) is generated from the same schemas.
import { z } from 'zod';
import { charField, choiceField } from '../http/validation';
import { REFRESH_COOKIE } from './cookie';

const jwt = z.string().meta({ description: 'A JSON Web Token (three base64url segments).' });

export const ObtainRequest = z
  .object({ username: charField, password: charField })
  .meta({ id: 'TokenObtainRequest', description: 'Credentials. JSON, form-encoded or multipart.' });
export const RefreshRequest = z.object({ refresh: charField }).meta({ id: 'TokenRefreshRequest' });
/** With `X-Token-Transport: cookie` the refresh token may come from the cookie instead. */
export const CookieRefreshRequest = z
  .object({ refresh: charField.optional() })
  .meta({ id: 'CookieTokenRefreshRequest', description: `With X-Token-Transport: cookie, no body: the refresh token comes from the ${REFRESH_COOKIE} cookie.` });
export const VerifyRequest = z.object({ token: charField }).meta({ id: 'TokenVerifyRequest' });
export const LogoutAllQuery = z.object({
  scope: choiceField(['all', 'others'])
    .default('all')
    .meta({ description: '`all` ends every session of the caller, `others` every one but the calling session.' }),
});
export const SessionPath = z.object({ id: z.uuid().meta({ description: 'The session id (the `sid` claim of its access tokens).' }) });

export const TokenPair = z.object({ refresh: jwt, access: jwt }).meta({ id: 'TokenPair' });
export const RotatedPair = z.object({ access: jwt, refresh: jwt }).meta({ id: 'TokenRefreshResponse' });
export const AccessOnly = z
  .object({ access: jwt })
  .meta({ id: 'AccessToken', description: `The access token; the refresh token is in the ${REFRESH_COOKIE} cookie (cookie transport), or unchanged (ROTATE_REFRESH_TOKENS off).` });
export const Empty = z.object({}).strict().meta({ id: 'Empty' });

export const Session = z
  .object({
    id: z.uuid(),
    created_at: z.iso.datetime({ offset: true }).meta({ description: 'When its login happened.' }),
    last_used_at: z.iso.datetime({ offset: true }).meta({ description: 'Its last refresh (its login, if never refreshed).' }),
    user_agent: z.string().meta({ description: 'The User-Agent of its last refresh (or login).' }),
    ip: z.string().meta({ description: 'The client address of its last refresh (or login), as the trusted proxy saw it.' }),
    current: z.boolean().meta({ description: 'Whether this is the session of the access token that asked.' }),
  })
  .meta({ id: 'Session' });
export const SessionList = z.array(Session).meta({ id: 'SessionList' });

export type TokenPair = z.infer<typeof TokenPair>;
export type RotatedPair = z.infer<typeof RotatedPair>;
export type AccessOnly = z.infer<typeof AccessOnly>;
export type Session = z.infer<typeof Session>;
