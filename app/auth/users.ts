// Accounts: who may log in, and the account changes ops make from the CLI.
import { UniqueConstraintError, type Transaction } from 'sequelize';
import type { Database } from '../db/database';
import type { UserRow } from '../db/models';
import { recordEvent } from '../events/outbox';
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

export interface Authenticated {
  id: number;
  username: string;
  /** The user's token generation when the login read it: its session is recorded only if it is still so. */
  generation: number;
}

/**
 * The account for these credentials, or null. Every path spends one password hash, so a response's
 * timing does not tell whether the username exists or is active. (A login is bound by that hash: the
 * models' lookup costs it nothing measurable, see docs/PERFORMANCE.md.)
 */
export async function authenticate(
  db: Database,
  hasher: PasswordHasher,
  username: string,
  password: string,
  options: { updateLastLogin: boolean; now: Date; signal?: AbortSignal },
): Promise<Authenticated | null> {
  const { User } = db.models;
  const user = await User.findOne({
    where: { username: normalizeUsername(username) },
    attributes: ['id', 'username', 'passwordHash', 'isActive', 'tokenGeneration'],
  });
  if (!user) {
    await hasher.burn(password, options.signal);
    return null;
  }
  const result = await hasher.verify(password, user.passwordHash, options.signal);
  if (!result.ok || !user.isActive) return null;
  if (result.needsRehash) {
    // Compare-and-set: a password change that lands meanwhile wins over the upgrade.
    await User.update({ passwordHash: await hasher.hash(password) }, { where: { id: user.id, passwordHash: user.passwordHash } });
  }
  if (options.updateLastLogin) await User.update({ lastLogin: options.now }, { where: { id: user.id } });
  return { id: user.id, username: user.username, generation: user.tokenGeneration };
}

export interface UserSummary {
  id: number;
  username: string;
  isActive: boolean;
}

/** A user by id (for a token that does not name its user), or null when there is none. */
export async function findUserById(db: Database, id: number): Promise<UserSummary | null> {
  const user = await db.models.User.findByPk(id, { attributes: ['id', 'username', 'isActive'] });
  return user && { id: user.id, username: user.username, isActive: user.isActive };
}

export async function createUser(
  db: Database,
  hasher: PasswordHasher,
  input: { username: string; password: string; isActive: boolean },
): Promise<{ id: number; username: string }> {
  const username = validateUsername(input.username);
  validatePassword(input.password);
  const passwordHash = await hasher.hash(input.password);
  try {
    return await db.sequelize.transaction(async (transaction) => {
      const user = await db.models.User.create({ username, passwordHash, isActive: input.isActive }, { transaction });
      await recordEvent(db, transaction, {
        type: 'user.created',
        at: user.dateJoined,
        user: { id: user.id, username: user.username },
        details: { is_active: user.isActive, imported: false },
      });
      return { id: user.id, username: user.username };
    });
  } catch (err) {
    if (err instanceof UniqueConstraintError) throw new UserError(`the username "${username}" is taken`);
    throw err;
  }
}

/**
 * The user, locked for the change, with the number of sessions (live families) it has. The change
 * itself ends them: the triggers on users (migrations 0002, 0005) revoke the families, void the access
 * tokens and move the generation, for this CLI and for an operator's plain SQL alike. The transaction
 * tells them the time (`auth.now`), so their stamps and the tokens' iat come from one clock, the app's.
 */
async function lockUser(db: Database, username: string, now: Date, transaction: Transaction): Promise<{ user: UserRow; sessions: number }> {
  await db.sequelize.query("SELECT set_config('auth.now', :now, true)", { replacements: { now: now.toISOString() }, transaction });
  const user = await db.models.User.findOne({
    where: { username: normalizeUsername(username.trim()) },
    lock: transaction.LOCK.UPDATE,
    transaction,
  });
  if (!user) throw new UserError(`no user "${username}"`);
  return { user, sessions: await user.countFamilies({ scope: 'live', transaction }) };
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
    const { user, sessions } = await lockUser(db, username, now, transaction);
    await user.update({ passwordHash, passwordChangedAt: now }, { transaction });
    await recordEvent(db, transaction, { type: 'user.password_changed', at: now, user: { id: user.id, username: user.username }, details: { sessions } });
    return { id: user.id, revokedSessions: sessions };
  });
}

/** Marks a user inactive (login and refresh refused); every session ends (trigger). One transaction. */
export async function deactivateUser(db: Database, username: string, now: Date): Promise<{ id: number; revokedSessions: number }> {
  return db.sequelize.transaction(async (transaction) => {
    const { user, sessions } = await lockUser(db, username, now, transaction);
    const wasActive = user.isActive;
    await user.update({ isActive: false }, { transaction }); // no statement when it is inactive already
    if (wasActive) {
      await recordEvent(db, transaction, { type: 'user.deactivated', at: now, user: { id: user.id, username: user.username }, details: { sessions } });
    }
    return { id: user.id, revokedSessions: sessions };
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
  const { User } = db.models;
  return db.sequelize.transaction(async (transaction) => {
    const skipped: string[] = [];
    let created = 0;
    for (const u of users) {
      try {
        // A savepoint per row: a row that collides is skipped and the import goes on.
        await db.sequelize.transaction({ transaction }, async (savepoint) => {
          const user = await User.create(
            { id: u.id, username: normalizeUsername(u.username), passwordHash: u.password, isActive: u.is_active },
            { transaction: savepoint },
          );
          await recordEvent(db, savepoint, {
            type: 'user.created',
            at: user.dateJoined,
            user: { id: user.id, username: user.username },
            details: { is_active: user.isActive, imported: true },
          });
        });
        created += 1;
      } catch (err) {
        if (!(err instanceof UniqueConstraintError)) throw err;
        skipped.push(u.username);
      }
    }
    // Explicit ids bypass the identity sequence; move it past them so createuser does not collide.
    // (Sequence upkeep has no model form.)
    await db.sequelize.query(
      `SELECT setval(pg_get_serial_sequence('users', 'id'), GREATEST((SELECT COALESCE(MAX(id), 0) FROM users), 1),
              (SELECT COUNT(*) > 0 FROM users))`,
      { transaction },
    );
    return { created, skipped };
  });
}
