// Security events as webhooks (issue 18): the transactional outbox. A change that causes an event
// writes its rows here in its own transaction (app/events/outbox.ts), one row per receiver, so the
// event exists if and only if the change committed; the delivery process (app/events/) sends them and
// records each row's fate. Also: when a session that simply reached its end was announced, so it is
// announced once.
import type { Migration } from '.';

export const webhookOutbox: Migration = {
  name: '0007_webhook_outbox',
  async up({ context: sequelize }) {
    await sequelize.query(`
      CREATE TABLE webhook_outbox (
        -- The order events were written in: a user's events go out in this order.
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        -- webhook-id: the same for every receiver and every attempt (the receivers' idempotency key).
        message_id varchar(64) NOT NULL,
        -- Which WEBHOOK_URL (a hash of it: a URL may hold credentials).
        endpoint char(16) NOT NULL,
        type varchar(64) NOT NULL,
        -- No foreign key: the event outlives the user.
        user_id integer,
        -- Whose events go out in order: 'user:<id>', 'client:<client_id>'; none, not ordered.
        subject varchar(80),
        -- The body exactly as signed and sent, on every attempt.
        body text NOT NULL,
        created_at timestamptz NOT NULL,
        status varchar(16) NOT NULL DEFAULT 'pending',
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL,
        -- Retries stop WEBHOOK_MAX_AGE after this: the event, or a manual retry (webhooks retry).
        retry_from timestamptz NOT NULL,
        last_attempt_at timestamptz,
        last_error varchar(512),
        delivered_at timestamptz,
        CONSTRAINT webhook_outbox_status CHECK (status IN ('pending', 'delivered', 'failed')),
        CONSTRAINT webhook_outbox_once_per_endpoint UNIQUE (message_id, endpoint)
      );
      -- What is due; and a subject's earlier pending event, which holds back the later ones.
      CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
      CREATE INDEX webhook_outbox_pending_subject_idx ON webhook_outbox (endpoint, subject, id) WHERE status = 'pending';
      CREATE INDEX webhook_outbox_settled_idx ON webhook_outbox (status, created_at) WHERE status <> 'pending';

      -- A session that reached its end (SESSION_MAX_LIFETIME, or its last refresh token expired unused)
      -- is announced once; sessions that had ended before this migration are not announced at all.
      ALTER TABLE token_families ADD COLUMN end_announced_at timestamptz;
      UPDATE token_families f SET end_announced_at = now()
        WHERE f.revoked_at IS NULL
          AND (f.expires_at <= now()
               OR NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.id
                                AND t.rotated_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > now()));
      CREATE INDEX token_families_unannounced_end_idx ON token_families (expires_at)
        WHERE revoked_at IS NULL AND end_announced_at IS NULL;
      -- (Tokens that expired unused are found by refresh_tokens_expires_at_idx, between two sweeps. A
      -- partial index of current tokens by expiry would tempt the planner away from the family's
      -- index in the refresh path's statements: test/integration/refresh-reuse.test.ts.)
    `);
  },
  async down({ context: sequelize }) {
    await sequelize.query(`
      DROP INDEX token_families_unannounced_end_idx;
      ALTER TABLE token_families DROP COLUMN end_announced_at;
      DROP TABLE webhook_outbox;
    `);
  },
};
