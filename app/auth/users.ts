// Accounts: who may log in, and the account changes ops make from the CLI.
import { UniqueConstraintError, type Transaction } from 'sequelize';
import type { Database } from '../db/database';
import type { UserRow } from '../db/models';
import { recordEvent } from '../events/outbox';
import { summarize, type PasswordHasher } from './passwords';

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

/** The account a login names, as the login read it (logins.ts, beginLogin): what checking its password needs. */
export interface LoginAccount {
  id: number;
  username: string;
  passwordHash: string;
  isActive: boolean;
  tokenGeneration: number;
}

/**
 * The account for these credentials, or null: `account` is the one the username names, or null when
 * there is none. Every failing path spends at least one password hash at our parameters and is held
 * to the hasher's failure floor (FAILED_LOGIN_MIN_TIME), so a response's timing does not tell whether
 * the username exists, is active, or still has a hash imported from Django.
 */
export async function authenticate(
  db: Database,
  hasher: PasswordHasher,
  account: LoginAccount | null,
  password: string,
  options: { signal?: AbortSignal },
): Promise<Authenticated | null> {
  if (!account) {
    await hasher.burn(password, options.signal);
    return null;
  }
  // An inactive account fails like a wrong password, even with the right one: same work, same time.
  const result = await hasher.verify(password, account.passwordHash, { signal: options.signal, refuse: !account.isActive });
  if (!result.ok) return null;
  if (result.needsRehash) {
    // Compare-and-set: a password change that lands meanwhile wins over the upgrade.
    await db.models.User.update({ passwordHash: await hasher.hash(password) }, { where: { id: account.id, passwordHash: account.passwordHash } });
  }
  return { id: account.id, username: account.username, generation: account.tokenGeneration };
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
  is_staff?: boolean;
  is_superuser?: boolean;
  /** Group names (a dump's group ids resolved through its auth.group rows, or natural keys). */
  groups?: string[];
}

export interface ImportResult {
  created: number;
  skipped: string[];
  /** Imported users by Django hasher (argon2, pbkdf2_sha256, …, unusable, unsupported (crypt)). */
  byKind: Record<string, number>;
  /** Imported users whose hash is one fast digest (md5, sha1, unsalted_*): stored wrapped in argon2id
   *  and upgraded at their next login, but the digest was weak wherever it was kept before. */
  weak: string[];
  /** Imported users no password can log in as (Django's unusable password, a format we do not verify). */
  unusable: string[];
  /** Groups that did not exist before. */
  groupsCreated: number;
}

const GROUP_NAME_MAX_LENGTH = 150; // Django's auth_group.name

export function validateGroupName(raw: string): string {
  const name = raw.trim();
  if (name.length === 0 || name.length > GROUP_NAME_MAX_LENGTH || /\p{Cc}/u.test(name)) {
    throw new UserError(`a group name is 1 to ${GROUP_NAME_MAX_LENGTH} characters, no control characters`);
  }
  return name;
}

/** The ids of the named groups, creating those that do not exist; and how many were created. */
async function ensureGroups(db: Database, names: readonly string[], transaction: Transaction): Promise<{ ids: Map<string, number>; created: number }> {
  const { Group } = db.models;
  const wanted = [...new Set(names)];
  if (wanted.length === 0) return { ids: new Map(), created: 0 };
  const before = await Group.count({ where: { name: wanted }, transaction });
  await Group.bulkCreate(wanted.map((name) => ({ name })), { ignoreDuplicates: true, transaction });
  const rows = await Group.findAll({ where: { name: wanted }, attributes: ['id', 'name'], transaction });
  return { ids: new Map(rows.map((g) => [g.name, g.id])), created: wanted.length - before };
}

/**
 * Imports Django auth_user rows with their ids and password hashes, which keep working (and become
 * argon2id at each user's next login); weak digests are stored wrapped in argon2id (hasher.forStorage),
 * hashed before the transaction begins. Existing usernames or ids are skipped, not overwritten. One
 * transaction: a failure imports nothing.
 */
export async function importUsers(
  db: Database,
  hasher: PasswordHasher,
  users: readonly DjangoUser[],
  options: { groups?: readonly string[] } = {},
): Promise<ImportResult> {
  const { User, UserGroup } = db.models;
  const stored = await Promise.all(users.map((u) => hasher.forStorage(u.password)));
  return db.sequelize.transaction(async (transaction) => {
    const result: ImportResult = { created: 0, skipped: [], byKind: {}, weak: [], unusable: [], groupsCreated: 0 };
    // Every group the file names (its auth.group rows too), so a dump's empty groups come along.
    const groups = await ensureGroups(db, [...(options.groups ?? []), ...users.flatMap((u) => u.groups ?? [])].map(validateGroupName), transaction);
    result.groupsCreated = groups.created;
    for (const [i, u] of users.entries()) {
      try {
        // A savepoint per row: a row that collides is skipped and the import goes on.
        await db.sequelize.transaction({ transaction }, async (savepoint) => {
          const user = await User.create(
            {
              id: u.id,
              username: normalizeUsername(u.username),
              passwordHash: stored[i]!,
              isActive: u.is_active,
              isStaff: u.is_staff ?? false,
              isSuperuser: u.is_superuser ?? false,
            },
            { transaction: savepoint },
          );
          const memberships = [...new Set(u.groups ?? [])].map((name) => ({ userId: u.id, groupId: groups.ids.get(validateGroupName(name))! }));
          if (memberships.length > 0) await UserGroup.bulkCreate(memberships, { transaction: savepoint });
          await recordEvent(db, savepoint, {
            type: 'user.created',
            at: user.dateJoined,
            user: { id: user.id, username: user.username },
            details: { is_active: user.isActive, imported: true },
          });
        });
      } catch (err) {
        if (!(err instanceof UniqueConstraintError)) throw err;
        result.skipped.push(u.username);
        continue;
      }
      result.created += 1;
      const summary = summarize(u.password);
      result.byKind[summary.kind] = (result.byKind[summary.kind] ?? 0) + 1;
      if (summary.weak) result.weak.push(u.username);
      if (!summary.usable) result.unusable.push(u.username);
    }
    // Explicit ids bypass the identity sequence; move it past them so createuser does not collide.
    // (Sequence upkeep has no model form.)
    await db.sequelize.query(
      `SELECT setval(pg_get_serial_sequence('users', 'id'), GREATEST((SELECT COALESCE(MAX(id), 0) FROM users), 1),
              (SELECT COUNT(*) > 0 FROM users))`,
      { transaction },
    );
    return result;
  });
}

/** The user by username, locked for a change to its record. */
async function userForChange(db: Database, username: string, transaction: Transaction): Promise<UserRow> {
  const user = await db.models.User.findOne({ where: { username: normalizeUsername(username.trim()) }, lock: transaction.LOCK.UPDATE, transaction });
  if (!user) throw new UserError(`no user "${username}"`);
  return user;
}

/**
 * Puts a user in a group (created if need be). The user's access tokens carry the change from their
 * next login or refresh (ACCESS_TOKEN_CLAIMS=groups); requireGroup without the claim sees it at once.
 */
export async function addToGroup(db: Database, username: string, group: string): Promise<{ groupCreated: boolean; added: boolean }> {
  const name = validateGroupName(group);
  return db.sequelize.transaction(async (transaction) => {
    const user = await userForChange(db, username, transaction);
    const { ids, created } = await ensureGroups(db, [name], transaction);
    const [, added] = await db.models.UserGroup.findOrCreate({ where: { userId: user.id, groupId: ids.get(name)! }, transaction });
    return { groupCreated: created > 0, added };
  });
}

/** Takes a user out of a group; false when the user was not in it. */
export async function removeFromGroup(db: Database, username: string, group: string): Promise<boolean> {
  const name = validateGroupName(group);
  return db.sequelize.transaction(async (transaction) => {
    const user = await userForChange(db, username, transaction);
    const found = await db.models.Group.findOne({ where: { name }, transaction });
    if (!found) throw new UserError(`no group "${name}"`);
    return (await db.models.UserGroup.destroy({ where: { userId: user.id, groupId: found.id }, transaction })) > 0;
  });
}

/** Sets Django's is_staff and is_superuser flags (either or both). */
export async function setStaff(
  db: Database,
  username: string,
  flags: { isStaff?: boolean; isSuperuser?: boolean },
): Promise<{ isStaff: boolean; isSuperuser: boolean }> {
  return db.sequelize.transaction(async (transaction) => {
    const user = await userForChange(db, username, transaction);
    await user.update(flags, { transaction });
    return { isStaff: user.isStaff, isSuperuser: user.isSuperuser };
  });
}
