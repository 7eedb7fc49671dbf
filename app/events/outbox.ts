// The write side of the transactional outbox: a change that causes a security event calls
// recordEvent inside its own transaction, so the event's rows commit with the change or not at all.
// One row per receiver (WEBHOOK_URL), each delivered on its own by the delivery process
// (delivery.ts). With no receiver configured, or an event type left out of WEBHOOK_EVENTS, nothing is
// written and no statement is sent.
import { randomUUID } from 'node:crypto';
import type { Transaction } from 'sequelize';
import type { WebhookSettings } from '../config';
import type { Database } from '../db/database';
import type { EventPayload, EventType } from './types';

/** What the writers need to know: which receivers, which types. */
export interface OutboxSettings {
  /** The receivers' keys (WebhookEndpoint.key). */
  endpoints: readonly string[];
  events: ReadonlySet<EventType>;
}

export const NO_OUTBOX: OutboxSettings = { endpoints: [], events: new Set() };

export const outboxSettings = (webhooks: WebhookSettings): OutboxSettings => ({
  endpoints: webhooks.endpoints.map((e) => e.key),
  events: webhooks.events,
});

/** Where a change came from, as the app knows it (families.ts' Client is one). */
export interface EventOrigin {
  ip?: string | undefined;
  userAgent?: string | undefined;
  requestId?: string | undefined;
}

export interface NewEvent {
  type: EventType;
  /** When the change happened: the clock the change itself used. */
  at: Date;
  /** When it is written, if later than `at` (an end noticed afterwards): its delivery's clock starts here. */
  recordedAt?: Date;
  /**
   * The user: by id (the username is looked up when not given) or, for a login that named an
   * account, by username (the id is looked up: null when there is no such user). None for an event
   * of no user's (a machine client's).
   */
  user?: { id: number; username?: string } | { username: string };
  sessionId?: string | null | undefined;
  /** Whose events this one goes out in order with, when it has no user ('client:<id>'). */
  subject?: string;
  origin?: EventOrigin | undefined;
  /** The type's own fields (a reason, a scope, a count). */
  details?: Record<string, unknown>;
}

const orNull = (s: string | undefined | null) => (s === undefined || s === null || s === '' ? null : s);

export const newMessageId = (): string => `msg_${randomUUID().replaceAll('-', '')}`;

/** Whether an event of this type is recorded: some receiver, and the type is wanted (WEBHOOK_EVENTS). */
export const wantsEvent = (db: Database, type: EventType): boolean => db.outbox.endpoints.length > 0 && db.outbox.events.has(type);

/**
 * Writes the event for every receiver, in `transaction` (the change's own; without one, on its own:
 * for events that change nothing, as a failed login). Returns its webhook-id, or undefined when it
 * is not recorded (no receiver, or its type is not wanted).
 */
export async function recordEvent(db: Database, transaction: Transaction | undefined, event: NewEvent): Promise<string | undefined> {
  const settings = db.outbox;
  if (!wantsEvent(db, event.type)) return undefined;
  const { User } = db.models;
  let userId: number | null = null;
  let username: string | null = null;
  if (event.user && 'id' in event.user) {
    userId = event.user.id;
    username = event.user.username ?? (await User.findByPk(userId, { attributes: ['username'], transaction }))?.username ?? null;
  } else if (event.user) {
    username = event.user.username;
    userId = (await User.findOne({ where: { username }, attributes: ['id'], transaction }))?.id ?? null;
  }
  const payload: EventPayload = {
    type: event.type,
    timestamp: event.at.toISOString(),
    data: {
      user_id: userId,
      username,
      session_id: event.sessionId ?? null,
      ip: orNull(event.origin?.ip),
      user_agent: orNull(event.origin?.userAgent),
      request_id: orNull(event.origin?.requestId),
      ...event.details,
    },
  };
  const messageId = newMessageId();
  const body = JSON.stringify(payload);
  const recorded = event.recordedAt ?? event.at;
  await db.models.WebhookOutbox.bulkCreate(
    settings.endpoints.map((endpoint) => ({
      messageId,
      endpoint,
      type: event.type,
      userId,
      subject: userId !== null ? `user:${userId}` : (event.subject ?? null),
      body,
      createdAt: recorded,
      nextAttemptAt: recorded,
      retryFrom: recorded,
    })),
    { transaction },
  );
  return messageId;
}
