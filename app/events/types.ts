// Security events for other systems (a SIEM, a gateway that drops ended sessions, a product that
// mails "new sign-in"): their types and the shape every one is delivered in. No dependencies, so the
// configuration can validate WEBHOOK_EVENTS against the list.

export const EVENT_TYPES = [
  'login.succeeded',
  'login.failed',
  'login.throttled',
  'token.reuse_detected',
  'session.ended',
  'sessions.revoked',
  'user.password_changed',
  'user.deactivated',
  'user.created',
  'client.token_issued',
  'client.deleted',
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

/**
 * What every event's `data` names, null where the app does not know it (a CLI change has no request;
 * a failed login for a username that does not exist has no user id). Never a token, a password or a
 * hash.
 */
export interface EventData {
  user_id: number | null;
  username: string | null;
  /** The session (refresh-token family; the access tokens' `sid`). */
  session_id: string | null;
  /** The client address as the trusted proxy saw it (TRUST_PROXY_HOPS). */
  ip: string | null;
  user_agent: string | null;
  /** nginx's X-Request-Id: the app's and nginx's log lines of the request carry it. */
  request_id: string | null;
  [detail: string]: unknown;
}

/** The body of a delivery (Standard Webhooks' recommended payload structure). */
export interface EventPayload {
  type: EventType;
  /** When the change happened (ISO 8601), not when it was delivered. */
  timestamp: string;
  data: EventData;
}
