// Brute-force throttling state, shared by every worker and surviving restarts: failed logins per
// (account, client address) and refreshes per account. Keys are hashes, so neither usernames nor
// addresses are stored in clear here.
import type { Migration } from '.';

export const throttle: Migration = {
  name: '0003_throttle',
  async up({ context: sequelize }) {
    await sequelize.query(`
      CREATE TABLE auth_throttle (
        key char(64) PRIMARY KEY,
        count integer NOT NULL,
        started_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        blocked_until timestamptz
      );
      CREATE INDEX auth_throttle_updated_at_idx ON auth_throttle (updated_at);
    `);
  },
  async down({ context: sequelize }) {
    await sequelize.query('DROP TABLE auth_throttle;');
  },
};
