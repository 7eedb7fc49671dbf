// Security outcomes of the token endpoints: counted for Prometheus, and the ones an operator must be
// able to find later (failed and throttled logins, throttled refreshes, a replayed refresh token,
// revocations, machine clients' refused grants) logged at info with the request id. nginx's access log has every request; the app logs
// only what nginx cannot know. Routes call these at their outcomes; nothing here decides anything.
import type { Logger } from 'pino';
import type { Refusal } from './families';
import type { ClientGrantOutcome, LoginOutcome, RefreshOutcome, RevocationReason } from './outcomes';

export interface AuthCounters {
  login(outcome: LoginOutcome): void;
  refresh(outcome: RefreshOutcome): void;
  revocation(reason: RevocationReason): void;
  clientGrant(outcome: ClientGrantOutcome): void;
}

/** What an event needs of the request: Koa's Context has both. */
export interface EventSource {
  ip: string;
  state: { requestId?: string };
}

const LOGGED_LOGINS = new Set<LoginOutcome>(['failure', 'throttled']);
// A re-answer within REFRESH_REUSE_INTERVAL is logged too: it is a tab or a retry, or a thief's replay
// the interval forgave, and an operator tracing a theft needs to find it.
const LOGGED_REFRESHES = new Set<RefreshOutcome>(['throttled', 'reused', 'reissued']);

// A refused refresh, by why: a replay of a rotated token is "reused" (and revokes its family); a token
// of a revoked family or of an inactive account is "revoked"; no such live token is "invalid".
const REFUSALS: Record<Refusal, RefreshOutcome> = { reused: 'reused', revoked: 'revoked', inactive: 'revoked', unknown: 'invalid' };

export function createAuthEvents(counters: AuthCounters, logger: Logger) {
  const log = (source: EventSource, event: string, extra: Record<string, unknown> = {}) =>
    logger.info({ request_id: source.state.requestId, event, ip: source.ip, ...extra }, 'security event');
  const refresh = (source: EventSource, outcome: RefreshOutcome) => {
    counters.refresh(outcome);
    if (LOGGED_REFRESHES.has(outcome)) log(source, `refresh_${outcome}`);
  };
  const revoked = (source: EventSource, reason: RevocationReason) => {
    counters.revocation(reason);
    log(source, 'revocation', { reason });
  };
  return {
    login(source: EventSource, outcome: LoginOutcome) {
      counters.login(outcome);
      if (LOGGED_LOGINS.has(outcome)) log(source, `login_${outcome}`);
    },
    refresh,
    /** A machine client's grant; all but successes are logged, with the client id it named (not a secret). */
    clientGrant(source: EventSource, outcome: ClientGrantOutcome, clientId?: string) {
      counters.clientGrant(outcome);
      if (outcome !== 'success') log(source, `client_grant_${outcome}`, clientId !== undefined ? { client_id: clientId.slice(0, 64) } : {});
    },
    /** A refused refresh; a replay also revoked its family (families.rotate did it). */
    refreshRefused(source: EventSource, refusal: Refusal) {
      refresh(source, REFUSALS[refusal]);
      if (refusal === 'reused') revoked(source, 'reuse');
    },
    revoked,
  };
}

export type AuthEvents = ReturnType<typeof createAuthEvents>;
