// The keys tokens are signed and verified with. One active key signs; every key in the set verifies.
import type { Algorithm } from 'jsonwebtoken';
import type { JwtSettings } from '../config';

export interface Key {
  /** The JWT header's `kid`; undefined for a key configured without one (tokens then carry no kid). */
  kid: string | undefined;
  alg: Algorithm;
  signWith: string | Buffer;
  verifyWith: string | Buffer;
}

export interface KeySet {
  active: Key;
  /** The algorithms tokens may be verified with: exactly those of the configured keys. */
  algorithms: Algorithm[];
  /** The key a token's header names, or undefined: an unknown kid is never guessed at. */
  find(kid: unknown): Key | undefined;
}

export function keySetFromSettings(jwt: Pick<JwtSettings, 'algorithm' | 'signingKey'>): KeySet {
  const active: Key = { kid: undefined, alg: jwt.algorithm, signWith: jwt.signingKey, verifyWith: jwt.signingKey };
  return {
    active,
    algorithms: [active.alg],
    find: (kid) => (kid === undefined ? active : undefined),
  };
}
