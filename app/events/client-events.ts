// Machine clients' security events (issue 18): app/auth/clients.ts reports what happens to a client
// inside its transaction (its RecordEvent hook); this writes the ones that are events to the outbox
// there. A client's events go out in order (subject client:<id>); they name no user.
import type { ClientEvent, RecordEvent } from '../auth/clients';
import type { Clock } from '../auth/tokens';
import type { Database } from '../db/database';
import { recordEvent, type EventOrigin } from './outbox';
import type { EventType } from './types';

const TYPES: Partial<Record<ClientEvent['type'], EventType>> = {
  'client.token_issued': 'client.token_issued',
  'client.deleted': 'client.deleted',
};

/** A recorder for one request (its origin) or one CLI command (none). */
export function clientEventRecorder(db: Database, clock: Clock, origin?: EventOrigin): RecordEvent {
  return async (event, transaction) => {
    const type = TYPES[event.type];
    if (!type) return; // created, secret rotated: not among the events
    const client = { client_id: event.client.clientId, client_name: event.client.name };
    const details =
      event.type === 'client.token_issued'
        ? { ...client, scopes: event.scopes, jti: event.jti, expires_at: event.expiresAt.toISOString() }
        : { ...client, scopes: event.client.scopes };
    await recordEvent(db, transaction, { type, at: new Date(clock()), subject: `client:${event.client.clientId}`, origin, details });
  };
}
