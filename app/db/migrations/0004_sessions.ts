// Sessions per device: a family is a session. Its absolute end (SESSION_MAX_LIFETIME after the login:
// no rotation carries it further), when it was last refreshed, and the user agent and client address
// of its login and of its last refresh, as the trusted proxy saw them. The rows go with the family
// (flushexpiredtokens). Families from before this migration end 30 days (the default) after their login.
import type { Migration } from '.';

export const sessions: Migration = {
  name: '0004_sessions',
  async up({ context: sequelize }) {
    await sequelize.query(`
      ALTER TABLE token_families
        ADD COLUMN expires_at timestamptz,
        ADD COLUMN last_used_at timestamptz,
        ADD COLUMN login_user_agent varchar(512) NOT NULL DEFAULT '',
        ADD COLUMN login_ip varchar(64) NOT NULL DEFAULT '',
        ADD COLUMN last_user_agent varchar(512) NOT NULL DEFAULT '',
        ADD COLUMN last_ip varchar(64) NOT NULL DEFAULT '';
      UPDATE token_families SET expires_at = created_at + interval '30 days', last_used_at = created_at;
      ALTER TABLE token_families ALTER COLUMN expires_at SET NOT NULL, ALTER COLUMN last_used_at SET NOT NULL;
    `);
  },
  async down({ context: sequelize }) {
    await sequelize.query(`
      ALTER TABLE token_families DROP COLUMN expires_at, DROP COLUMN last_used_at, DROP COLUMN login_user_agent,
        DROP COLUMN login_ip, DROP COLUMN last_user_agent, DROP COLUMN last_ip;
    `);
  },
};
