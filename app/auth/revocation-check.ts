// Whether an access token (a user's, or a machine client's) was revoked, for the guard and the
// verify endpoint. From memory, with no query, while the revocation feed vouches for it
// (revocations.ts: loaded, and heard from within its liveness bound). A feed that stays down while
// the database is up (connection slots used up, a partition of new connections only) would otherwise
// leave the worker trusting memory that misses every revocation made since, with nothing routing
// requests around it. Past the bound, the token's family and its user's cutoff (a client's token:
// its client's cutoff) are read from the database instead: each answer kept for a second, one read
// in flight per key, and what they find added to memory. If the database does not answer either,
// memory answers, as through any database outage (README, "Security, beyond simplejwt": no
// revocation can be made without the database).
import type { Logger } from 'pino';
import type { Database } from '../db/database';
import type { UnvouchedSource } from '../metrics/worker';
import type { RevocationCheck, RevocationFeed, RevocationStore } from './revocations';

/** How long a database answer stands for later checks of the same family or user. */
export const LOOKUP_TTL_MS = 1_000;
/** A read slower than this counts as the database not answering. */
export const LOOKUP_TIMEOUT_MS = 2_000;
/** After a read failed, checks answer from memory this long before the database is asked again. */
export const UNAVAILABLE_BACKOFF_MS = 1_000;

/** Reads the revocation state of one family or one user, for a feed that cannot vouch for memory. */
export interface RevocationLookup {
  /** Whether the family is revoked (false when the database does not know it). */
  familyRevoked(familyId: string): Promise<boolean>;
  /** The user's latest cutoff, in epoch seconds, if there is one. */
  userCutoff(userId: number): Promise<number | undefined>;
  /** A machine client's latest cutoff, in epoch seconds, if there is one. */
  clientCutoff(clientId: string): Promise<number | undefined>;
}

// Families are UUIDs (migration 0001); any other sid names none, and is not worth a query that fails.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function databaseLookup(db: Database): RevocationLookup {
  const { TokenFamily, UserRevocation, ClientRevocation } = db.models;
  return {
    async familyRevoked(familyId) {
      if (!UUID.test(familyId)) return false;
      const family = await TokenFamily.findByPk(familyId, { attributes: ['revokedAt'] });
      return family?.revokedAt != null;
    },
    async userCutoff(userId) {
      const latest = await UserRevocation.max<Date | null, InstanceType<typeof UserRevocation>>('notBefore', { where: { userId } });
      return latest ? new Date(latest).getTime() / 1000 : undefined;
    },
    async clientCutoff(clientId) {
      const latest = await ClientRevocation.max<Date | null, InstanceType<typeof ClientRevocation>>('notBefore', { where: { clientId } });
      return latest ? new Date(latest).getTime() / 1000 : undefined;
    },
  };
}

export interface RevocationCheckDeps {
  store: RevocationStore;
  feed: Pick<RevocationFeed, 'current'>;
  lookup: RevocationLookup;
  logger: Logger;
  /** Counts every check made while the feed could not vouch for memory. */
  onUnvouched?: (source: UnvouchedSource) => void;
  /** Elapsed time (ms) for the cache and the backoff; performance.now by default. */
  monotonic?: () => number;
}

/** Keeps each key's answer for `ttlMs` after it came, and shares one read in flight per key. */
function briefCache<K, V>(ttlMs: number, now: () => number) {
  const entries = new Map<K, { until: number; value: Promise<V> }>();
  return (key: K, read: () => Promise<V>): Promise<V> => {
    const t = now();
    const hit = entries.get(key);
    if (hit && hit.until > t) return hit.value;
    // A feed down for long sees many tokens: drop the answers that have had their second.
    if (entries.size >= 10_000) for (const [k, e] of entries) if (e.until <= t) entries.delete(k);
    const entry = { until: Infinity, value: read() };
    entries.set(key, entry);
    entry.value.then(
      () => (entry.until = now() + ttlMs),
      () => entries.get(key) === entry && entries.delete(key), // a failure is not an answer
    );
    return entry.value;
  };
}

function within<T>(ms: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

export function createRevocationCheck(deps: RevocationCheckDeps): RevocationCheck {
  const { store, feed, lookup, logger } = deps;
  const now = deps.monotonic ?? (() => performance.now());
  const families = briefCache<string, boolean>(LOOKUP_TTL_MS, now);
  const cutoffs = briefCache<number, number | undefined>(LOOKUP_TTL_MS, now);
  const clientCutoffs = briefCache<string, number | undefined>(LOOKUP_TTL_MS, now);
  let unavailableUntil = -Infinity;
  // What answers now, logged when it changes.
  let mode: 'memory' | 'database' | 'unavailable' = 'memory';

  /**
   * Past the feed's bound: `read` brings what the database knows into memory, then memory answers. If
   * the database does not answer, memory answers alone, and for a moment nothing more is asked of it.
   */
  async function fromDatabase(read: () => Promise<void>, answer: () => boolean): Promise<boolean> {
    if (now() < unavailableUntil) {
      deps.onUnvouched?.('memory');
      return false;
    }
    try {
      await within(LOOKUP_TIMEOUT_MS, read());
    } catch (err) {
      unavailableUntil = now() + UNAVAILABLE_BACKOFF_MS;
      if (mode !== 'unavailable') {
        logger.error({ err: (err as Error).message }, 'revocation feed and database both unreachable: checking revocations from memory alone');
      }
      mode = 'unavailable';
      deps.onUnvouched?.('memory');
      return false;
    }
    if (mode !== 'database') logger.warn('revocation feed silent past its bound: checking revocations in the database');
    mode = 'database';
    deps.onUnvouched?.('database');
    return answer();
  }

  /** Whether memory can answer "not revoked" alone: the feed vouches for it. */
  function vouched(): boolean {
    if (!feed.current()) return false;
    if (mode !== 'memory') {
      logger.info('revocation feed current again: checking revocations in memory');
      mode = 'memory';
    }
    return true;
  }

  return {
    isRevoked(claims, userId) {
      if (store.isRevoked(claims, userId)) return true;
      if (vouched()) return false;
      const sid = typeof claims.sid === 'string' ? claims.sid : undefined;
      return fromDatabase(
        async () => {
          const [familyRevoked, cutoff] = await Promise.all([
            sid === undefined ? false : families(sid, () => lookup.familyRevoked(sid)),
            cutoffs(userId, () => lookup.userCutoff(userId)),
          ]);
          // Revocations are never undone: what the database shows joins memory for good.
          if (familyRevoked && sid !== undefined) store.revokeFamily(sid);
          if (cutoff !== undefined) store.cutUser(userId, cutoff);
        },
        () => store.isRevoked(claims, userId),
      );
    },
    isClientRevoked(clientId, iat) {
      if (store.isClientRevoked(clientId, iat)) return true;
      if (vouched()) return false;
      return fromDatabase(
        async () => {
          const cutoff = await clientCutoffs(clientId, () => lookup.clientCutoff(clientId));
          if (cutoff !== undefined) store.cutClient(clientId, cutoff);
        },
        () => store.isClientRevoked(clientId, iat),
      );
    },
  };
}
