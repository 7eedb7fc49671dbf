// The claims from the user record as a token carries them: the chosen ones, in order, the groups
// sorted and bounded (a user in many groups gets groups_overage instead), and checked when read.
import { describe, expect, it } from 'vitest';
import { createTokenService, TokenError } from '../../app/auth/tokens';
import { claimValues, GROUPS_CLAIM_MAX_BYTES } from '../../app/auth/user-claims';
import { loadConfig } from '../../app/config';
import { signHs } from '../support/http';

const record = { isStaff: true, isSuperuser: false, groups: ['writers', 'editors'] };

describe('claimValues', () => {
  it('takes the chosen claims only, groups sorted', () => {
    expect(claimValues(record, [])).toEqual({});
    expect(claimValues(record, ['groups', 'is_staff'])).toEqual({ is_staff: true, groups: ['editors', 'writers'] });
    expect(Object.keys(claimValues(record, ['groups', 'is_superuser', 'is_staff']))).toEqual(['is_staff', 'is_superuser', 'groups']);
  });

  it(`carries the groups while their JSON fits in ${GROUPS_CLAIM_MAX_BYTES} bytes, else says groups_overage`, () => {
    // ["g000…", …]: each name of 18 bytes costs 21 with its quotes and comma.
    const names = (n: number) => Array.from({ length: n }, (_, i) => `g${String(i).padStart(17, '0')}`);
    const fits = Math.floor((GROUPS_CLAIM_MAX_BYTES - 1) / 21);
    expect(claimValues({ ...record, groups: names(fits) }, ['groups']).groups).toHaveLength(fits);
    expect(claimValues({ ...record, groups: names(fits + 1) }, ['groups'])).toEqual({ groups_overage: true });
    // Multi-byte names count in bytes.
    expect(claimValues({ ...record, groups: ['é'.repeat(600)] }, ['groups'])).toEqual({ groups_overage: true });
  });
});

describe('user tokens with claims', () => {
  const key = 'unit-test-signing-key-0123456789abcdef';
  const { config } = loadConfig({ DATABASE_URL: 'postgres://x/y', SIGNING_KEY: key });
  const tokens = createTokenService(config.jwt, Date.now);
  const base = () => ({ token_type: 'access', exp: Math.floor(Date.now() / 1000) + 60, iat: Math.floor(Date.now() / 1000), jti: 'j', user_id: 1 });

  it('are signed with the claims after simplejwt\'s and ours, and verify', () => {
    const { token } = tokens.sign('access', 1, Date.now(), { sid: 's', username: 'u', claims: { is_staff: true, groups: ['a'] } });
    expect(tokens.verify(token, 'access')).toMatchObject({ is_staff: true, groups: ['a'] });
  });

  it('are refused when a claim has the wrong type', () => {
    for (const over of [{ is_staff: 'yes' }, { is_superuser: 1 }, { groups: 'a' }, { groups: [1] }, { groups: ['x'.repeat(151)] }, { groups_overage: 'true' }]) {
      expect(() => tokens.verify(signHs({ ...base(), ...over }, key), 'access'), JSON.stringify(over)).toThrow(TokenError);
    }
  });
});
