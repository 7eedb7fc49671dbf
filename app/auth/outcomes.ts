// The outcomes of the security endpoints and the reasons a session ends: one list each, from which the
// types come, the metrics seed their zero series (app/metrics/worker.ts), and events log (events.ts).

export const LOGIN_OUTCOMES = ['success', 'failure', 'throttled'] as const;
export type LoginOutcome = (typeof LOGIN_OUTCOMES)[number];

/**
 * A refresh: rotated (a new pair), refreshed (ROTATE_REFRESH_TOKENS=false: a new access token only),
 * reissued (a parent presented again within REFRESH_REUSE_INTERVAL got its child again: two tabs, a
 * retry), or refused: reused (a replay; the family is revoked), revoked, invalid, throttled.
 */
export const REFRESH_OUTCOMES = ['rotated', 'refreshed', 'reissued', 'reused', 'revoked', 'invalid', 'throttled'] as const;
export type RefreshOutcome = (typeof REFRESH_OUTCOMES)[number];

/** A client credentials grant (POST /api/oauth/token/): issued, or the OAuth error it was answered with. */
export const CLIENT_GRANT_OUTCOMES = ['success', 'invalid_client', 'invalid_scope', 'invalid_request', 'unsupported_grant_type', 'throttled'] as const;
export type ClientGrantOutcome = (typeof CLIENT_GRANT_OUTCOMES)[number];

/** Why a session family was revoked (stored with it): through the API, or by an operator (the CLI). */
export const REVOKE_REASONS = ['logout', 'logout_all', 'logout_others', 'session_ended', 'reuse', 'password_change', 'deactivated'] as const;
export type RevokeReason = (typeof REVOKE_REASONS)[number];

/** The reasons the API revokes for, counted in auth_revocations_total; the CLI's are not requests. */
export const API_REVOCATION_REASONS = ['logout', 'logout_all', 'logout_others', 'session_ended', 'reuse'] as const satisfies readonly RevokeReason[];
export type RevocationReason = (typeof API_REVOCATION_REASONS)[number];
