// Revocation state, in memory in every worker, so the guard rejects revoked access tokens with no
// database query: revoked families (an access token's `sid`) and per-user cutoffs ("issued before
// T are void"). Fed by Postgres LISTEN/NOTIFY on one connection per worker (the triggers of
// migration 0002), and reloaded in full on start and on every reconnect. The connection is watched
// by a round-trip every few seconds: a half-open connection (a NAT or firewall that forgot it, a
// failover) would otherwise look alive to TCP for hours while every notification is lost.
import pg from 'pg';
import type { Logger } from 'pino';
import type { Claims, Clock } from './tokens';

export const REVOCATION_CHANNEL = 'auth_revocations';

export interface RevocationCheck {
  isRevoked(claims: Claims, userId: number): boolean;
}

export class RevocationStore implements RevocationCheck {
  private families = new Map<string, number>(); // sid → revoked at (ms)
  private cutoffs = new Map<number, number>(); // user id → not before (s)

  /** `windowMs`: how long an entry matters, the access token lifetime plus leeway. */
  constructor(
    private readonly windowMs: number,
    private readonly clock: Clock,
  ) {}

  isRevoked(claims: Claims, userId: number): boolean {
    if (typeof claims.sid === 'string' && this.families.has(claims.sid)) return true;
    const cutoff = this.cutoffs.get(userId);
    // A token without iat cannot show it was issued after the cutoff.
    return cutoff !== undefined && !(typeof claims.iat === 'number' && claims.iat >= cutoff);
  }

  revokeFamily(id: string, at: number): void {
    this.families.set(id, at);
  }

  cutUser(userId: number, notBeforeSeconds: number): void {
    // Whole seconds, as iat: a token issued in the cutoff's own second survives it (its family's
    // revocation, which is exact, covers it).
    const cutoff = Math.floor(notBeforeSeconds);
    if (cutoff > (this.cutoffs.get(userId) ?? -Infinity)) this.cutoffs.set(userId, cutoff);
  }

  /** Applies one notification payload: "f:<family id>:<epoch s>" or "u:<user id>:<epoch s>". */
  apply(payload: string): boolean {
    const [kind, id, epoch] = payload.split(':');
    const at = Number(epoch);
    if (!id || !Number.isFinite(at)) return false;
    if (kind === 'f') this.revokeFamily(id, at * 1000);
    else if (kind === 'u' && /^\d+$/.test(id)) this.cutUser(Number(id), at);
    else return false;
    return true;
  }

  replace(families: Iterable<[string, number]>, cutoffs: Iterable<[number, number]>): void {
    this.families = new Map(families);
    this.cutoffs = new Map();
    for (const [userId, seconds] of cutoffs) this.cutUser(userId, seconds);
  }

  /** Forgets entries older than the window: every token they could stop has expired. */
  prune(): void {
    const horizon = this.clock() - this.windowMs;
    for (const [id, at] of this.families) if (at < horizon) this.families.delete(id);
    for (const [userId, cutoff] of this.cutoffs) if (cutoff * 1000 < horizon) this.cutoffs.delete(userId);
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
  /** Delay before reconnecting after the connection is lost (it doubles, up to 10 s). */
  reconnectDelayMs?: number;
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
      application_name: 'koa-auth-stack revocations',
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
    await c.query(`LISTEN ${REVOCATION_CHANNEL}`);
    const since = new Date(clock() - windowMs);
    const families = await c.query<{ id: string; revoked_at: Date }>(
      'SELECT id, revoked_at FROM token_families WHERE revoked_at > $1',
      [since],
    );
    const users = await c.query<{ user_id: number; not_before: Date }>(
      'SELECT user_id, max(not_before) AS not_before FROM user_revocations WHERE not_before > $1 GROUP BY user_id',
      [since],
    );
    store.replace(
      families.rows.map((r) => [r.id, r.revoked_at.getTime()]),
      users.rows.map((r) => [r.user_id, r.not_before.getTime() / 1000]),
    );
    for (const payload of held) store.apply(payload);
    held = undefined;
    live = true;
    outstanding = false;
    contact = clock();
    delay = firstDelay;
    logger.info({ ...store.size }, 'revocation state loaded');
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

  function schedule(): void {
    if (stopped || retryTimer) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      attempt();
    }, delay);
    delay = Math.min(delay * 2, 10_000);
  }

  function attempt(): void {
    connect().catch((err: Error) => {
      const c = client;
      client = undefined;
      live = false;
      if (c) void close(c);
      if (!stopped) logger.warn({ err: err.message }, 'revocation feed cannot connect yet');
      schedule();
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
