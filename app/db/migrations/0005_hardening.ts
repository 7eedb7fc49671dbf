// Hardening (issue 9):
// - one clock: the revocation triggers stamp with the app's clock when the change comes from the app
//   (it sets `auth.now` for its transaction), so their times compare with the tokens' `iat` and with
//   the app's own stamps; only an operator's plain SQL falls back to the database's clock;
// - a login racing a password change, a deactivation or a logout-all: `token_generation` moves with
//   each of them, and a login records its session only if the generation it read is still the user's;
// - the addresses that logged into an account (hashed), exempt from its shared login budget;
// - the index the revocation state's reload reads revoked families by.
import type { Migration } from '.';

export const hardening: Migration = {
  name: '0005_hardening',
  async up({ context: sequelize }) {
    await sequelize.query(`
      -- The time a revocation is stamped with: the app's (set for the transaction), else the database's.
      CREATE FUNCTION auth_now() RETURNS timestamptz LANGUAGE sql STABLE AS $$
        SELECT coalesce(nullif(current_setting('auth.now', true), '')::timestamptz, now())
      $$;

      ALTER TABLE users ADD COLUMN token_generation integer NOT NULL DEFAULT 0;

      -- Before the row is written: a password change or a deactivation moves the generation, so a
      -- login that read the user before cannot record a session after.
      CREATE FUNCTION bump_token_generation() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF (OLD.is_active AND NOT NEW.is_active) OR OLD.password_changed_at IS DISTINCT FROM NEW.password_changed_at THEN
          NEW.token_generation := OLD.token_generation + 1;
        END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER users_bump_token_generation BEFORE UPDATE OF is_active, password_changed_at ON users
        FOR EACH ROW EXECUTE FUNCTION bump_token_generation();

      CREATE OR REPLACE FUNCTION revoke_user_tokens() RETURNS trigger LANGUAGE plpgsql AS $$
      DECLARE
        why text;
        at timestamptz := auth_now();
      BEGIN
        IF TG_OP = 'DELETE' THEN
          -- The families went with the user (ON DELETE CASCADE); the cutoff outlives them.
          INSERT INTO user_revocations (user_id, not_before, reason)
            VALUES (OLD.id, date_trunc('second', at) + interval '1 second', 'deleted');
          RETURN NULL;
        ELSIF OLD.is_active AND NOT NEW.is_active THEN
          why := 'deactivated';
        ELSIF OLD.password_changed_at IS DISTINCT FROM NEW.password_changed_at THEN
          why := 'password_change';
        ELSE
          RETURN NULL;
        END IF;
        UPDATE token_families SET revoked_at = at, revoke_reason = why
          WHERE user_id = NEW.id AND revoked_at IS NULL;
        -- After a deactivation no token can be issued, so its cutoff covers its own second; after a
        -- password change the user may log in again at once, so it does not (the families' exact
        -- revocation covers that second).
        INSERT INTO user_revocations (user_id, not_before, reason) VALUES (
          NEW.id,
          CASE WHEN why = 'password_change' THEN date_trunc('second', at)
               ELSE date_trunc('second', at) + interval '1 second' END,
          why);
        RETURN NULL;
      END $$;

      CREATE TABLE auth_known_addresses (
        key char(64) PRIMARY KEY,
        seen_at timestamptz NOT NULL
      );
      CREATE INDEX auth_known_addresses_seen_at_idx ON auth_known_addresses (seen_at);

      CREATE INDEX token_families_revoked_at_idx ON token_families (revoked_at) WHERE revoked_at IS NOT NULL;
    `);
  },
  async down({ context: sequelize }) {
    await sequelize.query(`
      DROP INDEX token_families_revoked_at_idx;
      DROP TABLE auth_known_addresses;
      CREATE OR REPLACE FUNCTION revoke_user_tokens() RETURNS trigger LANGUAGE plpgsql AS $$
      DECLARE
        why text;
      BEGIN
        IF TG_OP = 'DELETE' THEN
          INSERT INTO user_revocations (user_id, not_before, reason)
            VALUES (OLD.id, date_trunc('second', now()) + interval '1 second', 'deleted');
          RETURN NULL;
        ELSIF OLD.is_active AND NOT NEW.is_active THEN
          why := 'deactivated';
        ELSIF OLD.password_changed_at IS DISTINCT FROM NEW.password_changed_at THEN
          why := 'password_change';
        ELSE
          RETURN NULL;
        END IF;
        UPDATE token_families SET revoked_at = now(), revoke_reason = why
          WHERE user_id = NEW.id AND revoked_at IS NULL;
        INSERT INTO user_revocations (user_id, not_before, reason) VALUES (
          NEW.id,
          CASE WHEN why = 'password_change' THEN NEW.password_changed_at
               ELSE date_trunc('second', now()) + interval '1 second' END,
          why);
        RETURN NULL;
      END $$;
      DROP TRIGGER users_bump_token_generation ON users;
      DROP FUNCTION bump_token_generation();
      ALTER TABLE users DROP COLUMN token_generation;
      DROP FUNCTION auth_now();
    `);
  },
};
