// Revocation state, in memory in every worker, so the guard rejects revoked access tokens with no
// database query: revoked families (an access token's `sid`), per-user cutoffs ("issued before
// T are void") and per-client cutoffs (a machine client's secret rotated, or the client deleted).
// Fed by Postgres LISTEN/NOTIFY on one connection per worker (the triggers of migrations 0002 and
// 0006), and reloaded in full on start and on every reconnect. The connection is watched
// by a round-trip every few seconds: a half-open connection (a NAT or firewall that forgot it, a
// failover) would otherwise look alive to TCP for hours while every notification is lost.
import pg from 'pg';
import type { Logger } from 'pino';
import type { Claims, Clock } from './tokens';

export const REVOCATION_CHANNEL = 'auth_revocations';

export interface RevocationCheck {
  isRevoked(claims: Claims, userId: number): boolean;
  /** Whether a machine client's access token issued at `iat` (seconds) is void. */
  isClientRevoked(clientId: string, iat: number): boolean;
}

// Room for the clock of whoever stamped a revocation (an operator's plain SQL uses the database's)
// to differ from this worker's, when the stamps are compared with our clock.
const CLOCK_SKEW_MARGIN_MS = 60_000;

/**
 * How long a revocation matters: the longest an access token issued before it stays valid (its
 * lifetime plus LEEWAY), with room for clock skew. The reload reads back this far; flushexpiredtokens
 * keeps this much.
 */
export const revocationWindowMs = (jwt: { accessTokenLifetime: number; leeway: number }): number =>
  (jwt.accessTokenLifetime + jwt.leeway) * 1000 + CLOCK_SKEW_MARGIN_MS;

// The reload's reads. $1 our clock, $2 the window in seconds. token_families_revoked_at_idx
// (migration 0005) makes the first read the revoked few, never the whole table.
const SINCE = "least($1::timestamptz, now()) - make_interval(secs => $2)";
export const RELOAD_FAMILIES = `SELECT id FROM token_families WHERE revoked_at > ${SINCE}`;
export const RELOAD_CUTOFFS = `SELECT user_id, max(not_before) AS not_before FROM user_revocations WHERE not_before > ${SINCE} GROUP BY user_id`;
export const RELOAD_CLIENT_CUTOFFS = `SELECT client_id, max(not_before) AS not_before FROM client_revocations WHERE not_before > ${SINCE} GROUP BY client_id`;

export class RevocationStore implements RevocationCheck {
  private families = new Map<string, number>(); // sid → keep until (ms, our clock)
  private cutoffs = new Map<number, { notBefore: number; keepUntil: number }>(); // user id → not before (s)
  private clientCutoffs = new Map<string, { notBefore: number; keepUntil: number }>(); // client id → not before (s)

  /**
   * `windowMs`: how long an entry matters (revocationWindowMs). Entries are kept for it from when this
   * worker learned of them, on its own clock: no clock of another host decides when one is forgotten.
   */
  constructor(
    private readonly windowMs: number,
    private readonly clock: Clock,
  ) {}

  isRevoked(claims: Claims, userId: number): boolean {
    if (typeof claims.sid === 'string' && this.families.has(claims.sid)) return true;
    const cutoff = this.cutoffs.get(userId)?.notBefore;
    // A token without iat cannot show it was issued after the cutoff.
    return cutoff !== undefined && !(typeof claims.iat === 'number' && claims.iat >= cutoff);
  }

  isClientRevoked(clientId: string, iat: number): boolean {
    const cutoff = this.clientCutoffs.get(clientId)?.notBefore;
    return cutoff !== undefined && !(iat >= cutoff);
  }

  revokeFamily(id: string): void {
    this.families.set(id, this.clock() + this.windowMs);
  }

  cutUser(userId: number, notBeforeSeconds: number): void {
    // Whole seconds, as iat: a token issued in the cutoff's own second survives it (its family's
    // revocation, which is exact, covers it).
    const notBefore = Math.floor(notBeforeSeconds);
    const known = this.cutoffs.get(userId);
    if (!known || notBefore > known.notBefore) this.cutoffs.set(userId, { notBefore, keepUntil: this.clock() + this.windowMs });
  }

  cutClient(clientId: string, notBeforeSeconds: number): void {
    // The trigger's cutoff covers its own second (migration 0006): tokens of that second are void.
    const notBefore = Math.floor(notBeforeSeconds);
    const known = this.clientCutoffs.get(clientId);
    if (!known || notBefore > known.notBefore) this.clientCutoffs.set(clientId, { notBefore, keepUntil: this.clock() + this.windowMs });
  }

  /** Applies one notification payload: "f:<family id>:<epoch s>", "u:<user id>:<epoch s>" or "c:<client id>:<epoch s>". */
  apply(payload: string): boolean {
    const [kind, id, epoch, ...rest] = payload.split(':');
    const at = Number(epoch);
    if (!id || !Number.isFinite(at) || rest.length > 0) return false;
    if (kind === 'f') this.revokeFamily(id);
    else if (kind === 'u' && /^\d+$/.test(id)) this.cutUser(Number(id), at);
    else if (kind === 'c') this.cutClient(id, at);
    else return false;
    return true;
  }

  replace(families: Iterable<string>, cutoffs: Iterable<[number, number]>, clientCutoffs: Iterable<[string, number]> = []): void {
    this.families = new Map();
    for (const id of families) this.revokeFamily(id);
    this.cutoffs = new Map();
    for (const [userId, seconds] of cutoffs) this.cutUser(userId, seconds);
    this.clientCutoffs = new Map();
    for (const [clientId, seconds] of clientCutoffs) this.cutClient(clientId, seconds);
  }

  /** Forgets entries kept for their window: every token they could stop has expired. */
  prune(): void {
    const now = this.clock();
    for (const [id, keepUntil] of this.families) if (keepUntil < now) this.families.delete(id);
    for (const [userId, { keepUntil }] of this.cutoffs) if (keepUntil < now) this.cutoffs.delete(userId);
    for (const [clientId, { keepUntil }] of this.clientCutoffs) if (keepUntil < now) this.clientCutoffs.delete(clientId);
  }

  /** Machine clients with a cutoff in force. */
  get clients(): number {
    return this.clientCutoffs.size;
  }

  get size(): { families: number; users: number } {
    return { families: this.families.size, users: this.cutoffs.size };
  }
}

export interface FeedOptions {
  databaseUrl: string;
  store: RevocationStore;
  windowMs: number;
  clock: Clock;
  logger: Logger;
  /** Tag for pg_stat_activity (default "koa-auth-stack revocations"). */
  applicationName?: string;
  /** Delay before reconnecting after the connection is lost (it doubles, up to maxReconnectDelayMs). */
  reconnectDelayMs?: number;
  /**
   * The longest wait between two attempts (2 s by default). It bounds how long a worker stays off
   * the feed once the database is back, a failover included, however long the outage was.
   */
  maxReconnectDelayMs?: number;
  /**
   * Interval of the round-trip on the LISTEN connection; a round-trip still unanswered at the next
   * one means the connection is dead. A dead feed is found within two intervals (10 s by default).
   */
  heartbeatMs?: number;
}

export interface RevocationFeed {
  /** Resolves once the state is loaded for the first time. */
  ready: Promise<void>;
  connected(): boolean;
  /** The Postgres backend pid of the LISTEN connection, when connected. */
  backendPid(): number | undefined;
  /** When (clock ms) the connection last answered: its load, a round-trip or a notification. */
  lastContact(): number | undefined;
  stop(): Promise<void>;
}

export function startRevocationFeed(options: FeedOptions): RevocationFeed {
  const { store, logger, clock, windowMs } = options;
  const firstDelay = options.reconnectDelayMs ?? 500;
  const maxDelay = Math.max(firstDelay, options.maxReconnectDelayMs ?? 2_000);
  const heartbeatMs = options.heartbeatMs ?? 5_000;
  let client: pg.Client | undefined;
  let contact: number | undefined;
  let live = false;
  let stopped = false;
  let delay = firstDelay;
  let retryTimer: NodeJS.Timeout | undefined;
  let markReady!: () => void;
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  const pruneTimer = setInterval(() => store.prune(), 60_000);
  pruneTimer.unref();

  // The round-trip: one at a time on the LISTEN connection; one still out when the next is due
  // means nothing comes back from that connection any more.
  let outstanding = false;
  const heartbeat = setInterval(() => {
    const c = client;
    if (!c || !live) return;
    if (outstanding) {
      lost(c, new Error(`no answer to a round-trip within ${heartbeatMs} ms`));
      return;
    }
    outstanding = true;
    c.query('SELECT 1').then(
      () => {
        if (client !== c) return;
        outstanding = false;
        contact = clock();
      },
      () => {}, // a failed query also ends the connection: 'error' / 'end' handle it
    );
  }, heartbeatMs);
  heartbeat.unref();

  async function connect(): Promise<void> {
    const c = new pg.Client({
      connectionString: options.databaseUrl,
      application_name: options.applicationName ?? 'koa-auth-stack revocations',
      keepAlive: true,
      connectionTimeoutMillis: 3_000,
    });
    client = c;
    // Notifications that arrive while the snapshot loads are held and applied after it, so none is
    // lost to the replace.
    let held: string[] | undefined = [];
    c.on('notification', (msg) => {
      if (msg.channel !== REVOCATION_CHANNEL || !msg.payload) return;
      contact = clock();
      if (held) held.push(msg.payload);
      else store.apply(msg.payload);
    });
    c.on('error', (err) => lost(c, err));
    c.on('end', () => lost(c, new Error('connection ended')));
    await c.connect();
    // A standby still in recovery (the name moved before the promotion finished) gets no NOTIFY from
    // the primary: not a feed. It refuses LISTEN too (25006); asking first says why.
    const { rows: [server] } = await c.query<{ recovery: boolean }>('SELECT pg_is_in_recovery() AS recovery');
    if (server?.recovery) throw new Error('the database is a standby in recovery: no notification reaches it');
    await c.query(`LISTEN ${REVOCATION_CHANNEL}`);
    // Back a window from the earlier of two clocks, ours and the database's: a revocation is stamped by
    // one or the other (the app's, or an operator's plain SQL), and either may run behind.
    const since = [new Date(clock()), windowMs / 1000];
    const families = await c.query<{ id: string }>(RELOAD_FAMILIES, since);
    const users = await c.query<{ user_id: number; not_before: Date }>(RELOAD_CUTOFFS, since);
    const clients = await c.query<{ client_id: string; not_before: Date }>(RELOAD_CLIENT_CUTOFFS, since);
    store.replace(
      families.rows.map((r) => r.id),
      users.rows.map((r) => [r.user_id, r.not_before.getTime() / 1000]),
      clients.rows.map((r) => [r.client_id, r.not_before.getTime() / 1000]),
    );
    for (const payload of held) store.apply(payload);
    held = undefined;
    live = true;
    outstanding = false;
    contact = clock();
    delay = firstDelay;
    logger.info({ ...store.size, clients: store.clients }, 'revocation state loaded');
    markReady();
  }

  function lost(c: pg.Client, err: Error): void {
    if (client !== c || stopped) return;
    client = undefined;
    live = false;
    logger.warn({ err: err.message }, 'revocation feed lost its connection; reconnecting');
    void close(c);
    schedule();
  }

  // end() waits for the server's goodbye, which a dead connection never sends: after a moment the
  // socket goes anyway.
  async function close(c: pg.Client): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([c.end().catch(() => {}), new Promise((resolve) => (timer = setTimeout(resolve, 1_000)))]);
    clearTimeout(timer);
    (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
  }

  /** Sets the next attempt; returns its delay (ms). */
  function schedule(): number | undefined {
    if (stopped || retryTimer) return undefined;
    const wait = delay;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      attempt();
    }, wait);
    delay = Math.min(delay * 2, maxDelay);
    return wait;
  }

  function attempt(): void {
    connect().catch((err: Error) => {
      const c = client;
      client = undefined;
      live = false;
      if (c) void close(c);
      const retryInMs = schedule();
      if (!stopped) logger.warn({ err: err.message, retry_in_ms: retryInMs }, 'revocation feed cannot connect yet');
    });
  }

  attempt();

  return {
    ready,
    connected: () => live,
    // pg sets processID once connected; @types/pg does not declare it.
    backendPid: () => (live ? (client as unknown as { processID?: number } | undefined)?.processID : undefined),
    lastContact: () => contact,
    async stop() {
      stopped = true;
      clearTimeout(retryTimer);
      clearInterval(pruneTimer);
      clearInterval(heartbeat);
      const c = client;
      client = undefined;
      if (c) await close(c);
    },
  };
}
