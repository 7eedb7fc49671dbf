// Claims from the user record (ACCESS_TOKEN_CLAIMS): Django's is_staff and is_superuser and the
// user's group names, put in access tokens at login and at every refresh, so a change reaches the
// next access token. One statement by user id, apart from the refresh's own (families.ts).
//
// Size: an access token travels in every request's Authorization header, and the guard refuses one
// over MAX_TOKEN_LENGTH (4096 characters); nginx's header buffer is 8 KiB. Group names go in while
// their JSON is at most GROUPS_CLAIM_MAX_BYTES (1 KiB: about 40 names of 20 characters); a user in
// more gets `groups_overage: true` and no `groups`, as Microsoft Entra ID does past its limit, and
// requireGroup then asks the database. A token never grows past about 2 KiB this way.
import type { UserClaim } from '../config';
import type { Database } from '../db/database';

export interface UserClaimValues {
  is_staff?: boolean;
  is_superuser?: boolean;
  /** The user's group names, sorted; absent with groups_overage. */
  groups?: string[];
  /** The user is in more groups than a token carries: ask the database (requireGroup does). */
  groups_overage?: true;
}

export const GROUPS_CLAIM_MAX_BYTES = 1024;

export interface UserRecordClaims {
  isStaff: boolean;
  isSuperuser: boolean;
  groups: readonly string[];
}

/** The chosen claims of a user record, in the token's order; the groups within the bound. */
export function claimValues(record: UserRecordClaims, which: readonly UserClaim[]): UserClaimValues {
  const values: UserClaimValues = {};
  if (which.includes('is_staff')) values.is_staff = record.isStaff;
  if (which.includes('is_superuser')) values.is_superuser = record.isSuperuser;
  if (which.includes('groups')) {
    const groups = [...record.groups].sort();
    if (Buffer.byteLength(JSON.stringify(groups)) <= GROUPS_CLAIM_MAX_BYTES) values.groups = groups;
    else values.groups_overage = true;
  }
  return values;
}

// Hand-written, measured: it runs at every refresh. `npm run bench:orm` (paths userClaims and
// rotateClaims; docs/PERFORMANCE.md, "Claims from the user record") put the models' form (the user with
// its groups through the association) at 4× this statement's worker CPU, and a refresh with claims at
// about 2.4× the CPU of one with this statement. test/integration/claims.test.ts holds the two forms
// together.
export const USER_CLAIMS_SQL = `
  SELECT u.is_staff, u.is_superuser,
         coalesce(array_agg(g.name ORDER BY g.name) FILTER (WHERE g.name IS NOT NULL), '{}') AS groups
  FROM users u LEFT JOIN user_groups ug ON ug.user_id = u.id LEFT JOIN groups g ON g.id = ug.group_id
  WHERE u.id = $1 GROUP BY u.id`;

/**
 * The chosen claims of a user, read from the database; undefined (and no query) when none are
 * chosen, or when the user is gone. One statement by user id, beside the refresh's own (families.ts).
 */
export async function loadUserClaims(db: Database, userId: number, which: readonly UserClaim[]): Promise<UserClaimValues | undefined> {
  if (which.length === 0) return undefined;
  const [row] = await db.rows<{ is_staff: boolean; is_superuser: boolean; groups: string[] }>(USER_CLAIMS_SQL, [userId]);
  if (!row) return undefined;
  return claimValues({ isStaff: row.is_staff, isSuperuser: row.is_superuser, groups: row.groups }, which);
}

/** The same claims through the models (the user and its groups association): what the statement must equal. */
export async function loadUserClaimsByModels(db: Database, userId: number, which: readonly UserClaim[]): Promise<UserClaimValues | undefined> {
  const user = await db.models.User.findByPk(userId, {
    attributes: ['id', 'isStaff', 'isSuperuser'],
    include: [{ association: 'groups', attributes: ['name'], through: { attributes: [] } }],
  });
  if (!user) return undefined;
  return claimValues({ isStaff: user.isStaff, isSuperuser: user.isSuperuser, groups: (user.groups ?? []).map((g) => g.name) }, which);
}

/** The user's group names, from the database (requireGroup, when the token does not carry them). */
export async function userGroups(db: Database, userId: number): Promise<string[]> {
  const groups = await db.models.Group.findAll({
    attributes: ['name'],
    include: [{ association: 'users', attributes: [], where: { id: userId }, through: { attributes: [] } }],
  });
  return groups.map((g) => g.name);
}

/** The user's staff flags, from the database (requireClaim, when the token does not carry them). */
export async function userFlags(db: Database, userId: number): Promise<{ is_staff: boolean; is_superuser: boolean; is_active: boolean } | null> {
  const user = await db.models.User.findByPk(userId, { attributes: ['id', 'isStaff', 'isSuperuser', 'isActive'] });
  return user && { is_staff: user.isStaff, is_superuser: user.isSuperuser, is_active: user.isActive };
}
