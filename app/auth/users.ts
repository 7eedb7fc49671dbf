// Accounts: who may log in, and the account changes ops make from the CLI.
import { UniqueConstraintError, type Transaction } from 'sequelize';
import type { Database } from '../db/database';
import type { PasswordHasher } from './passwords';

/** Usernames are compared after NFKC normalisation (as Django stores them), so "ａｌｉｃｅ" is alice. */
export const normalizeUsername = (raw: string): string => raw.normalize('NFKC');

// Django's UnicodeUsernameValidator: letters, digits and @ . + - _ ; at most 150 characters.
const USERNAME = /^[\p{L}\p{M}\p{N}_.@+-]{1,150}$/u;
export const PASSWORD_MIN_LENGTH = 8;
export const PASSWORD_MAX_LENGTH = 4096;

export class UserError extends Error {
  override name = 'UserError';
}

export function validateUsername(raw: string): string {
  const username = normalizeUsername(raw.trim());
  if (!USERNAME.test(username)) {
    throw new UserError('a username is 1 to 150 letters, digits and the characters @ . + - _');
  }
  return username;
}

export function validatePassword(password: string): void {
  if (password.length < PASSWORD_MIN_LENGTH) throw new UserError(`a password has at least ${PASSWORD_MIN_LENGTH} characters`);
  if (password.length > PASSWORD_MAX_LENGTH) throw new UserError(`a password has at most ${PASSWORD_MAX_LENGTH} characters`);
}

interface LoginRow {
  id: number;
  username: string;
  password_hash: string;
  is_active: boolean;
}

export interface Authenticated {
  id: number;
  username: string;
}

/**
 * The account for these credentials, or null. Every path spends one password hash, so a response's
 * timing does not tell whether the username exists or is active.
 */
export async function authenticate(
  db: Database,
  hasher: PasswordHasher,
  username: string,
  password: string,
  options: { updateLastLogin: boolean; now: Date; signal?: AbortSignal },
): Promise<Authenticated | null> {
  const [user] = await db.rows<LoginRow>('SELECT id, username, password_hash, is_active FROM users WHERE username = $1', [
    normalizeUsername(username),
  ]);
  if (!user) {
    await hasher.burn(password, options.signal);
    return null;
  }
  const result = await hasher.verify(password, user.password_hash, options.signal);
  if (!result.ok || !user.is_active) return null;
  if (result.needsRehash) {
    // Compare-and-set: a password change that lands meanwhile wins over the upgrade.
    await db.rows('UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3 RETURNING id', [
      user.id,
      await hasher.hash(password),
      user.password_hash,
    ]);
  }
  if (options.updateLastLogin) {
    await db.rows('UPDATE users SET last_login = $2 WHERE id = $1 RETURNING id', [user.id, options.now]);
  }
  return { id: user.id, username: user.username };
}

export async function createUser(
  db: Database,
  hasher: PasswordHasher,
  input: { username: string; password: string; isActive: boolean },
): Promise<{ id: number; username: string }> {
  const username = validateUsername(input.username);
  validatePassword(input.password);
  try {
    const user = await db.models.User.create({
      username,
      passwordHash: await hasher.hash(input.password),
      isActive: input.isActive,
    });
    return { id: user.id, username: user.username };
  } catch (err) {
    if (err instanceof UniqueConstraintError) throw new UserError(`the username "${username}" is taken`);
    throw err;
  }
}

/**
 * The user, locked for the change, with the number of sessions (live families) it has. The change
 * itself ends them: the trigger on users (migration 0002) revokes the families and voids the access
 * tokens, for this CLI and for an operator's plain SQL alike.
 */
async function lockUser(db: Database, username: string, transaction: Transaction): Promise<{ id: number; sessions: number }> {
  const [user] = await db.rows<{ id: number; sessions: number }>(
    `SELECT id, (SELECT count(*) FROM token_families f WHERE f.user_id = users.id AND f.revoked_at IS NULL)::int AS sessions
     FROM users WHERE username = $1 FOR UPDATE`,
    [normalizeUsername(username.trim())],
    transaction,
  );
  if (!user) throw new UserError(`no user "${username}"`);
  return user;
}

/** Sets a new password; every session of the user ends (trigger). One transaction. */
export async function changePassword(
  db: Database,
  hasher: PasswordHasher,
  username: string,
  password: string,
  now: Date,
): Promise<{ id: number; revokedSessions: number }> {
  validatePassword(password);
  const passwordHash = await hasher.hash(password);
  return db.sequelize.transaction(async (transaction) => {
    const user = await lockUser(db, username, transaction);
    await db.rows('UPDATE users SET password_hash = $2, password_changed_at = $3 WHERE id = $1 RETURNING id', [user.id, passwordHash, now], transaction);
    return { id: user.id, revokedSessions: user.sessions };
  });
}

/** Marks a user inactive (login and refresh refused); every session ends (trigger). One transaction. */
export async function deactivateUser(db: Database, username: string): Promise<{ id: number; revokedSessions: number }> {
  return db.sequelize.transaction(async (transaction) => {
    const user = await lockUser(db, username, transaction);
    await db.rows('UPDATE users SET is_active = false WHERE id = $1 AND is_active RETURNING id', [user.id], transaction);
    return { id: user.id, revokedSessions: user.sessions };
  });
}

export interface DjangoUser {
  id: number;
  username: string;
  password: string;
  is_active: boolean;
}

export interface ImportResult {
  created: number;
  skipped: string[];
}

/**
 * Imports Django auth_user rows with their ids and password hashes unchanged. Existing usernames or ids
 * are skipped, not overwritten. One transaction: a failure imports nothing.
 */
export async function importUsers(db: Database, users: readonly DjangoUser[]): Promise<ImportResult> {
  return db.sequelize.transaction(async (transaction) => {
    const skipped: string[] = [];
    let created = 0;
    for (const u of users) {
      const [row] = await db.rows<{ id: number }>(
        `INSERT INTO users (id, username, password_hash, is_active) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING RETURNING id`,
        [u.id, normalizeUsername(u.username), u.password, u.is_active],
        transaction,
      );
      if (row) created += 1;
      else skipped.push(u.username);
    }
    // Explicit ids bypass the identity sequence; move it past them so createuser does not collide.
    await db.rows(
      `SELECT setval(pg_get_serial_sequence('users', 'id'), GREATEST((SELECT COALESCE(MAX(id), 0) FROM users), 1),
              (SELECT COUNT(*) > 0 FROM users))`,
      [],
      transaction,
    );
    return { created, skipped };
  });
}
