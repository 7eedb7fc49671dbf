// Instant revocation: every worker keeps revoked families and per-user cutoffs in memory, fed by
// LISTEN/NOTIFY. The notifications come from triggers, so every path that revokes (the app, the
// CLI, an operator's SQL) is heard, and only once its transaction commits.
import type { Migration } from '.';

export const revocations: Migration = {
  name: '0002_revocations',
  async up({ context: sequelize }) {
    await sequelize.query(`
      -- "Access tokens of this user issued before not_before are void": logout everywhere, password
      -- change, deactivation, deletion. No foreign key: a deleted user's row must outlive the user.
      CREATE TABLE user_revocations (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id integer NOT NULL,
        not_before timestamptz NOT NULL,
        reason varchar(32) NOT NULL
      );
      CREATE INDEX user_revocations_not_before_idx ON user_revocations (not_before);

      CREATE FUNCTION notify_family_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_notify('auth_revocations', 'f:' || NEW.id || ':' || extract(epoch FROM NEW.revoked_at));
        RETURN NULL;
      END $$;
      CREATE TRIGGER token_families_notify_revoked AFTER UPDATE OF revoked_at ON token_families
        FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
        EXECUTE FUNCTION notify_family_revoked();

      CREATE FUNCTION notify_user_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_notify('auth_revocations', 'u:' || NEW.user_id || ':' || extract(epoch FROM NEW.not_before));
        RETURN NULL;
      END $$;
      CREATE TRIGGER user_revocations_notify AFTER INSERT ON user_revocations
        FOR EACH ROW EXECUTE FUNCTION notify_user_revoked();

      -- Account changes made by any means (the CLI, an operator's SQL) end the user's sessions:
      -- deactivation, a new password (password_changed_at, not the hash: the upgrade of a hash at
      -- login is no change), deletion. Live families are revoked (exact), and a cutoff voids access
      -- tokens by their iat (whole seconds). After a deactivation or a deletion no token can be issued,
      -- so that cutoff covers its own second too; after a password change the user may log in again
      -- at once, so it does not (the family revocation covers that second).
      CREATE FUNCTION revoke_user_tokens() RETURNS trigger LANGUAGE plpgsql AS $$
      DECLARE
        why text;
      BEGIN
        IF TG_OP = 'DELETE' THEN
          -- The families went with the user (ON DELETE CASCADE); the cutoff outlives them.
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
      CREATE TRIGGER users_revoke_tokens AFTER UPDATE OF is_active, password_changed_at OR DELETE ON users
        FOR EACH ROW EXECUTE FUNCTION revoke_user_tokens();
    `);
  },
  async down({ context: sequelize }) {
    await sequelize.query(`
      DROP TRIGGER users_revoke_tokens ON users;
      DROP FUNCTION revoke_user_tokens();
      DROP TRIGGER user_revocations_notify ON user_revocations;
      DROP FUNCTION notify_user_revoked();
      DROP TRIGGER token_families_notify_revoked ON token_families;
      DROP FUNCTION notify_family_revoked();
      DROP TABLE user_revocations;
    `);
  },
};
