// Machine clients (OAuth 2.0 client credentials, RFC 6749 §4.4): services that call the API with no
// user. Each has a name (what ops call it), a random client id, the scopes it may be granted, and a
// secret shown once and kept only as a hash.
//
// The secret's hash is SHA-256, not argon2id as for passwords: a secret is 256 random bits, so no
// guessing attack on a stolen hash can succeed however fast the hash is (a slow hash only helps
// secrets that people choose), and a fast one keeps the token endpoint from being a CPU sink that
// anyone can fill with wrong secrets. The comparison takes constant time.
//
// Deleting a client or giving it a new secret voids its access tokens at once: the table's trigger
// (migration 0006) writes a per-client cutoff, and the revocation feed carries it to every worker.
// A grant reads the client FOR SHARE while it checks the secret and signs, so a rotation or a
// deletion (which lock the row FOR UPDATE) waits for grants in flight and stamps its cutoff after
// their tokens' iat; a new secret then commits only once the clock is past the cutoff second, so no
// token of the new secret falls before it.
//
// Events: each change and each grant can be recorded inside its transaction (`record`), for an
// outbox of security events (issue 18).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Op, UniqueConstraintError, type Transaction } from 'sequelize';
import type { Database } from '../db/database';
import type { OAuthClientRow } from '../db/models';
import type { Clock, IssuedToken } from './tokens';

export class ClientError extends Error {
  override name = 'ClientError';
}

// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]{1,128}$/;
export const MAX_SCOPES = 64;
// Names as Django's usernames allow, so ops can type them: letters, digits and @ . + - _.
const CLIENT_NAME = /^[\p{L}\p{M}\p{N}_.@+-]{1,150}$/u;
const HASH_PREFIX = 'sha256$';

export const isScopeToken = (s: string): boolean => SCOPE_TOKEN.test(s);

/** Scopes as the CLI takes them ("a,b" or "a b"), checked against RFC 6749's grammar, without repeats. */
export function parseScopes(raw: string): string[] {
  const scopes = [...new Set(raw.split(/[\s,]+/).filter(Boolean))];
  const bad = scopes.find((s) => !isScopeToken(s));
  if (bad !== undefined) throw new ClientError(`"${bad}" is not a scope: printable ASCII without spaces, quotes or backslashes, at most 128 characters`);
  if (scopes.length > MAX_SCOPES) throw new ClientError(`a client has at most ${MAX_SCOPES} scopes`);
  return scopes;
}

function validateName(raw: string): string {
  const name = raw.trim().normalize('NFKC');
  if (!CLIENT_NAME.test(name)) throw new ClientError('a client name is 1 to 150 letters, digits and the characters @ . + - _');
  return name;
}

/** 128 random bits, base64url: no character a form or Basic header needs to escape. */
const newClientId = (): string => randomBytes(16).toString('base64url');
/** 256 random bits, base64url. */
const newSecret = (): string => randomBytes(32).toString('base64url');

export function hashSecret(secret: string): string {
  return HASH_PREFIX + createHash('sha256').update(secret, 'utf8').digest('base64url');
}

/** Whether `secret` is the one `stored` hashes; constant time in the secret. */
export function secretMatches(secret: string, stored: string): boolean {
  if (!stored.startsWith(HASH_PREFIX)) return false;
  const expected = Buffer.from(stored.slice(HASH_PREFIX.length), 'base64url');
  const actual = createHash('sha256').update(secret, 'utf8').digest();
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

export interface ClientSummary {
  clientId: string;
  name: string;
  scopes: string[];
  createdAt: Date;
  secretChangedAt: Date;
}

const summary = (c: OAuthClientRow): ClientSummary => ({
  clientId: c.clientId,
  name: c.name,
  scopes: [...c.scopes],
  createdAt: c.createdAt,
  secretChangedAt: c.secretChangedAt,
});

/** What happened to a client, for whoever records security events (issue 18), inside its transaction. */
export type ClientEvent =
  | { type: 'client.created'; client: ClientSummary }
  | { type: 'client.secret_rotated'; client: ClientSummary }
  | { type: 'client.deleted'; client: ClientSummary }
  | { type: 'client.token_issued'; client: ClientSummary; jti: string; scopes: string[]; expiresAt: Date };

export type RecordEvent = (event: ClientEvent, transaction: Transaction) => Promise<void>;

export interface NewClient {
  client: ClientSummary;
  /** Shown once: only its hash is kept. */
  secret: string;
}

export async function createClient(
  db: Database,
  input: { name: string; scopes: readonly string[]; now: Date },
  record?: RecordEvent,
): Promise<NewClient> {
  const name = validateName(input.name);
  const scopes = parseScopes(input.scopes.join(','));
  const secret = newSecret();
  try {
    return await db.sequelize.transaction(async (transaction) => {
      const row = await db.models.OAuthClient.create(
        { clientId: newClientId(), name, secretHash: hashSecret(secret), scopes, createdAt: input.now, secretChangedAt: input.now },
        { transaction },
      );
      await record?.({ type: 'client.created', client: summary(row) }, transaction);
      return { client: summary(row), secret };
    });
  } catch (err) {
    if (err instanceof UniqueConstraintError) throw new ClientError(`a client named "${name}" exists`);
    throw err;
  }
}

export async function listClients(db: Database): Promise<ClientSummary[]> {
  return (await db.models.OAuthClient.findAll({ order: [['name', 'ASC']] })).map(summary);
}

/**
 * Locks the named client for a change once no grant holds it, and tells the revocation trigger the
 * time from then (`auth.now`, the app's clock, as for users: app/auth/users.ts).
 */
async function lockClient(db: Database, name: string, clock: Clock, transaction: Transaction): Promise<{ row: OAuthClientRow; now: Date }> {
  const row = await db.models.OAuthClient.findOne({ where: { name: name.trim().normalize('NFKC') }, lock: transaction.LOCK.UPDATE, transaction });
  if (!row) throw new ClientError(`no client "${name}"`);
  const now = new Date(clock());
  await db.sequelize.query("SELECT set_config('auth.now', :now, true)", { replacements: { now: now.toISOString() }, transaction });
  return { row, now };
}

/** The cutoff the trigger writes for a change at `now`: the next whole second. */
const cutoffAfter = (now: Date): number => (Math.floor(now.getTime() / 1000) + 1) * 1000;

/** A new secret; the old one stops at once, and so does every access token issued before. */
export async function rotateClientSecret(db: Database, name: string, clock: Clock, record?: RecordEvent): Promise<NewClient> {
  const secret = newSecret();
  return db.sequelize.transaction(async (transaction) => {
    const { row, now } = await lockClient(db, name, clock, transaction);
    await row.update({ secretHash: hashSecret(secret), secretChangedAt: now }, { transaction });
    await record?.({ type: 'client.secret_rotated', client: summary(row) }, transaction);
    // Grants of the new secret can only begin after the commit: from the cutoff second on, their
    // tokens' iat is not before it (test/integration/clients.test.ts holds this).
    const wait = cutoffAfter(now) - clock();
    if (wait > 0) await sleep(wait);
    return { client: summary(row), secret };
  });
}

/** Deletes a client; its access tokens stop at once. */
export async function deleteClient(db: Database, name: string, clock: Clock, record?: RecordEvent): Promise<ClientSummary> {
  return db.sequelize.transaction(async (transaction) => {
    const { row } = await lockClient(db, name, clock, transaction);
    const deleted = summary(row);
    await row.destroy({ transaction });
    await record?.({ type: 'client.deleted', client: deleted }, transaction);
    return deleted;
  });
}

export type Grant =
  | { ok: true; client: ClientSummary; scopes: string[]; token: IssuedToken }
  | { ok: false; error: 'invalid_client' | 'invalid_scope' };

/**
 * The client credentials grant's decision: the client authenticates with its secret, the scopes asked
 * for (all of its own when none) must be its own, and `sign` makes the token. The client row is held
 * FOR SHARE meanwhile (see the top of this file). `requested` is undefined when the request had no
 * scope; an empty list asks for none.
 */
export async function grantClientCredentials(
  db: Database,
  input: { clientId: string; secret: string; requested: readonly string[] | undefined },
  sign: (client: ClientSummary, scopes: string[]) => IssuedToken,
  record?: RecordEvent,
): Promise<Grant> {
  return db.sequelize.transaction(async (transaction) => {
    const row = await db.models.OAuthClient.findByPk(input.clientId, { lock: transaction.LOCK.SHARE, transaction });
    // An unknown client id costs the same hash as a known one.
    const matches = secretMatches(input.secret, row?.secretHash ?? hashSecret(''));
    if (!row || !matches) return { ok: false, error: 'invalid_client' } as const;
    const client = summary(row);
    const scopes = input.requested === undefined ? client.scopes : [...new Set(input.requested)];
    if (!scopes.every((s) => client.scopes.includes(s))) return { ok: false, error: 'invalid_scope' } as const;
    const token = sign(client, scopes);
    await record?.({ type: 'client.token_issued', client, jti: token.jti, scopes, expiresAt: token.expiresAt }, transaction);
    return { ok: true, client, scopes, token } as const;
  });
}

/** Drops per-client cutoffs no token can outlive (flushexpiredtokens), as for users' (families.ts). */
export async function flushClientCutoffs(db: Database, now: Date, revocationWindowMs: number): Promise<number> {
  const horizon = new Date(now.getTime() - revocationWindowMs);
  return db.models.ClientRevocation.destroy({ where: { notBefore: { [Op.lte]: horizon } } });
}

/** Every scope some client may be granted, sorted (the metadata's scopes_supported). */
export async function offeredScopes(db: Database): Promise<string[]> {
  const rows = await db.models.OAuthClient.findAll({ attributes: ['clientId', 'scopes'] });
  return [...new Set(rows.flatMap((r) => r.scopes))].sort();
}
