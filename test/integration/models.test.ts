// The data layer: the models' associations load, the scopes return what they claim, and the
// hand-written refresh statements (families.ts) agree with the "usable" scope they stand in for.
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as families from '../../app/auth/families';
import { deactivateUser, findUserById } from '../../app/auth/users';
import { decodeJwt } from '../support/http';
import { startTestApp, type TestApp } from '../support/test-app';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(() => t.stop());

const HOUR = 3_600_000;
let n = 0;

interface TokenState {
  rotated: boolean;
  revoked: boolean;
  /** Milliseconds from `now` to the token's expiry (0: it expires exactly now). */
  expiresIn: number;
  familyRevoked: boolean;
  /** The session's absolute end (SESSION_MAX_LIFETIME) has passed. */
  sessionEnded: boolean;
  userActive: boolean;
}

/** A user, a family and one refresh token in the given state, written through the models. */
async function tokenIn(state: TokenState, now: Date): Promise<{ jti: string; userId: number; familyId: string }> {
  const { User, TokenFamily } = t.db.models;
  const past = new Date(now.getTime() - HOUR);
  // Created inactive rather than deactivated: the trigger would revoke the family too.
  const user = await User.create({ username: `state-${n++}`, passwordHash: 'unused', isActive: state.userActive });
  const jti = randomUUID();
  const family = await TokenFamily.create(
    {
      id: randomUUID(),
      userId: user.id,
      createdAt: past,
      revokedAt: state.familyRevoked ? past : null,
      revokeReason: state.familyRevoked ? 'logout' : null,
      expiresAt: state.sessionEnded ? past : new Date(now.getTime() + 2 * HOUR),
      lastUsedAt: past,
      refreshTokens: [
        {
          jti,
          createdAt: past,
          expiresAt: new Date(now.getTime() + state.expiresIn),
          rotatedAt: state.rotated ? past : null,
          revokedAt: state.revoked ? past : null,
        },
      ],
    },
    { include: [{ association: 'refreshTokens' }] },
  );
  return { jti, userId: user.id, familyId: family.id };
}

const USABLE: TokenState = { rotated: false, revoked: false, expiresIn: HOUR, familyRevoked: false, sessionEnded: false, userActive: true };
const STATES: Record<string, TokenState> = {
  usable: USABLE,
  rotated: { ...USABLE, rotated: true },
  revoked: { ...USABLE, revoked: true },
  expired: { ...USABLE, expiresIn: -HOUR },
  expiresNow: { ...USABLE, expiresIn: 0 },
  familyRevoked: { ...USABLE, familyRevoked: true },
  sessionEnded: { ...USABLE, sessionEnded: true },
  userInactive: { ...USABLE, userActive: false },
};
const CLIENT = { userAgent: 'models-test', ip: '127.0.0.1' };

describe('scopes', () => {
  it('RefreshToken usable/expired/current, TokenFamily live and User active return what they claim', async () => {
    const { RefreshToken, TokenFamily, User } = t.db.models;
    const now = new Date();
    const made = new Map<string, string>(); // jti → state name
    const byFamily = new Map<string, string>();
    const byUser = new Map<number, string>();
    for (const [name, state] of Object.entries(STATES)) {
      const { jti, familyId, userId } = await tokenIn(state, now);
      made.set(jti, name);
      byFamily.set(familyId, name);
      byUser.set(userId, name);
    }
    const jtis = [...made.keys()];
    const names = (rows: { jti: string }[]) => rows.map((r) => made.get(r.jti)).sort();

    const usable = await RefreshToken.scope({ method: ['usable', now] }).findAll({ where: { jti: jtis } });
    expect(names(usable)).toEqual(['usable']);
    // The scope brings the family and its user along (the refresh endpoint needs the username).
    expect(usable[0]!.family!.user!.username).toMatch(/^state-/);
    expect(names(await RefreshToken.scope({ method: ['expired', now] }).findAll({ where: { jti: jtis } }))).toEqual(['expired', 'expiresNow']);
    expect(names(await RefreshToken.scope('current').findAll({ where: { jti: jtis } }))).toEqual(
      ['usable', 'expired', 'expiresNow', 'familyRevoked', 'sessionEnded', 'userInactive'].sort(),
    );
    const live = await TokenFamily.scope('live').findAll({ where: { id: [...byFamily.keys()] } });
    expect(live.map((f) => byFamily.get(f.id)).sort()).toEqual(Object.keys(STATES).filter((s) => s !== 'familyRevoked').sort());
    const active = await User.scope('active').findAll({ where: { id: [...byUser.keys()] } });
    expect(active.map((u) => byUser.get(u.id)).sort()).toEqual(Object.keys(STATES).filter((s) => s !== 'userInactive').sort());
  });

  it('the hand-written refresh statements accept exactly the tokens the "usable" scope holds', async () => {
    const { RefreshToken } = t.db.models;
    const state = fc.record({
      rotated: fc.boolean(),
      revoked: fc.boolean(),
      expiresIn: fc.constantFrom(-HOUR, -1, 0, 1, HOUR),
      familyRevoked: fc.boolean(),
      sessionEnded: fc.boolean(),
      userActive: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(state, async (s) => {
        const now = new Date();
        const { jti, userId } = await tokenIn(s, now);
        const inScope = (await RefreshToken.scope({ method: ['usable', now] }).count({ where: { jti } })) === 1;
        const ref = { jti, userId };
        expect((await families.use(t.db, ref, now, CLIENT)).ok).toBe(inScope);
        const next = { jti: randomUUID(), expiresAt: new Date(now.getTime() + HOUR) };
        expect((await families.rotate(t.db, ref, next, { blacklistOld: true, now, client: CLIENT })).ok).toBe(inScope);
      }),
      { numRuns: 60 },
    );
  });
});

describe('associations', () => {
  it('a user has families, a family has refresh tokens, and each belongs to its owner', async () => {
    const { User, RefreshToken } = t.db.models;
    const id = await t.user('assoc', 'assoc-password-1');
    const first = await t.login('assoc', 'assoc-password-1');
    const second = await t.login('assoc', 'assoc-password-1');
    const rotated = (await t.post('/api/token/refresh/', { refresh: first.refresh })).json;
    const jti = (token: string) => decodeJwt(token).payload.jti as string;
    const sid = (token: string) => decodeJwt(token).payload.sid as string;

    const user = await User.findByPk(id, { include: [{ association: 'families', include: [{ association: 'refreshTokens' }] }] });
    const byFamily = new Map(user!.families!.map((f) => [f.id, f.refreshTokens!.map((r) => r.jti).sort()]));
    expect(byFamily).toEqual(
      new Map([
        [sid(first.access), [jti(first.refresh), jti(rotated.refresh)].sort()],
        [sid(second.access), [jti(second.refresh)]],
      ]),
    );
    const token = await RefreshToken.findByPk(jti(rotated.refresh), { include: [{ association: 'family', include: [{ association: 'user' }] }] });
    expect(token!.parentJti).toBe(jti(first.refresh));
    expect(token!.family!.id).toBe(sid(first.access));
    expect(token!.family!.user!.username).toBe('assoc');
    expect(await user!.countFamilies({ scope: 'live' })).toBe(2);
  });
});

describe('findUserById', () => {
  it('returns id, username and whether the user is active; null for no such user', async () => {
    const id = await t.user('lookup', 'lookup-password-1');
    expect(await findUserById(t.db, id)).toEqual({ id, username: 'lookup', isActive: true });
    await deactivateUser(t.db, 'lookup', new Date());
    expect(await findUserById(t.db, id)).toEqual({ id, username: 'lookup', isActive: false });
    expect(await findUserById(t.db, 2_000_000_000)).toBeNull();
  });
});
