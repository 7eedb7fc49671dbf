// The data model: users (with their groups), their refresh-token families (one per login) and the
// families' refresh tokens, the per-user revocation cutoffs, the throttle records, and the machine
// clients with their per-client cutoffs; with the associations and the
// scopes the domain code asks for. The tables themselves come from the SQL migrations.
//
// Models are defined per Sequelize instance (not as module-level classes), because one process may
// hold several databases at once (the tests run several "workers" side by side).
import {
  DataTypes,
  Op,
  type BelongsToManyAddAssociationMixin,
  type BelongsToManyRemoveAssociationMixin,
  type HasManyCountAssociationsMixin,
  type Model,
  type Optional,
  type Sequelize,
} from 'sequelize';

export interface UserAttributes {
  id: number;
  username: string;
  passwordHash: string;
  isActive: boolean;
  lastLogin: Date | null;
  passwordChangedAt: Date;
  dateJoined: Date;
  /** Moves with every password change, deactivation and logout-all (migration 0005). */
  tokenGeneration: number;
  /** Django's flags (migration 0006): access tokens carry them with ACCESS_TOKEN_CLAIMS. */
  isStaff: boolean;
  isSuperuser: boolean;
}
type UserCreation = Optional<
  UserAttributes,
  'id' | 'isActive' | 'lastLogin' | 'passwordChangedAt' | 'dateJoined' | 'tokenGeneration' | 'isStaff' | 'isSuperuser'
>;
export interface UserRow extends Model<UserAttributes, UserCreation>, UserAttributes {
  families?: TokenFamilyRow[];
  groups?: GroupRow[];
  countFamilies: HasManyCountAssociationsMixin;
  addGroup: BelongsToManyAddAssociationMixin<GroupRow, number>;
  removeGroup: BelongsToManyRemoveAssociationMixin<GroupRow, number>;
}

/** Django's auth_group: a named set of users (migration 0006). */
export interface GroupAttributes {
  id: number;
  name: string;
}
export interface GroupRow extends Model<GroupAttributes, Optional<GroupAttributes, 'id'>>, GroupAttributes {}
export interface UserGroupAttributes {
  userId: number;
  groupId: number;
}
export interface UserGroupRow extends Model<UserGroupAttributes>, UserGroupAttributes {}

/** A machine client (OAuth 2.0 client credentials): its secret only as a hash. */
export interface OAuthClientAttributes {
  clientId: string;
  /** What ops call it (the CLI's NAME); unique. */
  name: string;
  secretHash: string;
  /** The scopes it may be granted. */
  scopes: string[];
  createdAt: Date;
  secretChangedAt: Date;
}
export interface OAuthClientRow extends Model<OAuthClientAttributes>, OAuthClientAttributes {}

export interface ClientRevocationAttributes {
  id: number;
  clientId: string;
  notBefore: Date;
  reason: string;
}
export interface ClientRevocationRow
  extends Model<ClientRevocationAttributes, Optional<ClientRevocationAttributes, 'id'>>,
    ClientRevocationAttributes {}

export interface TokenFamilyAttributes {
  id: string;
  userId: number;
  createdAt: Date;
  revokedAt: Date | null;
  revokeReason: string | null;
  /** The session's absolute end: no refresh token of the family outlives it. */
  expiresAt: Date;
  lastUsedAt: Date;
  loginUserAgent: string;
  loginIp: string;
  lastUserAgent: string;
  lastIp: string;
  /** When the session's end (it reached it, unrevoked) was announced as an event (migration 0007). */
  endAnnouncedAt: Date | null;
}
type TokenFamilyCreation = Optional<
  TokenFamilyAttributes,
  'revokedAt' | 'revokeReason' | 'loginUserAgent' | 'loginIp' | 'lastUserAgent' | 'lastIp' | 'endAnnouncedAt'
> & {
  /** Nested create through the association (TokenFamily.create(…, { include: ['refreshTokens'] })). */
  refreshTokens?: Optional<RefreshTokenCreation, 'familyId'>[];
};
export interface TokenFamilyRow extends Model<TokenFamilyAttributes, TokenFamilyCreation>, TokenFamilyAttributes {
  user?: UserRow;
  refreshTokens?: RefreshTokenRow[];
}

export interface RefreshTokenAttributes {
  jti: string;
  familyId: string;
  parentJti: string | null;
  createdAt: Date;
  expiresAt: Date;
  rotatedAt: Date | null;
  revokedAt: Date | null;
}
type RefreshTokenCreation = Optional<RefreshTokenAttributes, 'parentJti' | 'rotatedAt' | 'revokedAt'>;
export interface RefreshTokenRow extends Model<RefreshTokenAttributes, RefreshTokenCreation>, RefreshTokenAttributes {
  family?: TokenFamilyRow;
}

export interface UserRevocationAttributes {
  id: number;
  userId: number;
  notBefore: Date;
  reason: string;
}
export interface UserRevocationRow
  extends Model<UserRevocationAttributes, Optional<UserRevocationAttributes, 'id'>>,
    UserRevocationAttributes {}

export interface ThrottleAttributes {
  /** A hash: neither usernames nor addresses are stored in clear. */
  key: string;
  count: number;
  /** When the current window began (a refresh window; a run of login attempts; an account budget's window). */
  startedAt: Date;
  /** The last counted attempt. */
  updatedAt: Date;
  blockedUntil: Date | null;
}
export interface ThrottleRow extends Model<ThrottleAttributes, Optional<ThrottleAttributes, 'blockedUntil'>>, ThrottleAttributes {}
export interface KnownAddressAttributes {
  /** A hash of the account and the address: neither is stored in clear. */
  key: string;
  /** The last login from there. */
  seenAt: Date;
}
export interface KnownAddressRow extends Model<KnownAddressAttributes>, KnownAddressAttributes {}

export type WebhookStatus = 'pending' | 'delivered' | 'failed';
/** One event for one receiver: the transactional outbox (migration 0007, app/events/). */
export interface WebhookOutboxAttributes {
  id: string; // bigint: pg returns it as a string
  messageId: string;
  endpoint: string;
  type: string;
  userId: number | null;
  /** Whose events go out in order ('user:1', 'client:…'); null: not ordered. */
  subject: string | null;
  body: string;
  createdAt: Date;
  status: WebhookStatus;
  attempts: number;
  nextAttemptAt: Date;
  retryFrom: Date;
  lastAttemptAt: Date | null;
  lastError: string | null;
  deliveredAt: Date | null;
}
type WebhookOutboxCreation = Optional<
  WebhookOutboxAttributes,
  'id' | 'status' | 'attempts' | 'lastAttemptAt' | 'lastError' | 'deliveredAt'
>;
export interface WebhookOutboxRow extends Model<WebhookOutboxAttributes, WebhookOutboxCreation>, WebhookOutboxAttributes {}

export type Models = ReturnType<typeof defineModels>;

export function defineModels(sequelize: Sequelize) {
  // Timestamps are ours, not Sequelize's: every time written is the caller's `now` (an injectable
  // clock), never the ORM's own reading of the wall clock.
  const common = { timestamps: false, underscored: true } as const;

  const User = sequelize.define<UserRow>(
    'User',
    {
      id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
      username: { type: DataTypes.STRING(150), allowNull: false, unique: true },
      passwordHash: { type: DataTypes.STRING(255), allowNull: false },
      isActive: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: true },
      lastLogin: { type: DataTypes.DATE, allowNull: true },
      passwordChangedAt: { type: DataTypes.DATE, allowNull: false, defaultValue: DataTypes.NOW },
      dateJoined: { type: DataTypes.DATE, allowNull: false, defaultValue: DataTypes.NOW },
      tokenGeneration: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
      isStaff: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false },
      isSuperuser: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false },
    },
    { ...common, tableName: 'users', scopes: { active: { where: { isActive: true } } } },
  );

  const TokenFamily = sequelize.define<TokenFamilyRow>(
    'TokenFamily',
    {
      id: { type: DataTypes.UUID, primaryKey: true },
      userId: { type: DataTypes.INTEGER, allowNull: false },
      createdAt: { type: DataTypes.DATE, allowNull: false },
      revokedAt: { type: DataTypes.DATE, allowNull: true },
      revokeReason: { type: DataTypes.STRING(32), allowNull: true },
      expiresAt: { type: DataTypes.DATE, allowNull: false },
      lastUsedAt: { type: DataTypes.DATE, allowNull: false },
      loginUserAgent: { type: DataTypes.STRING(512), allowNull: false, defaultValue: '' },
      loginIp: { type: DataTypes.STRING(64), allowNull: false, defaultValue: '' },
      lastUserAgent: { type: DataTypes.STRING(512), allowNull: false, defaultValue: '' },
      lastIp: { type: DataTypes.STRING(64), allowNull: false, defaultValue: '' },
      endAnnouncedAt: { type: DataTypes.DATE, allowNull: true },
    },
    { ...common, tableName: 'token_families', scopes: { live: { where: { revokedAt: null } } } },
  );

  const RefreshToken = sequelize.define<RefreshTokenRow>(
    'RefreshToken',
    {
      jti: { type: DataTypes.STRING(64), primaryKey: true },
      familyId: { type: DataTypes.UUID, allowNull: false },
      parentJti: { type: DataTypes.STRING(64), allowNull: true },
      createdAt: { type: DataTypes.DATE, allowNull: false },
      expiresAt: { type: DataTypes.DATE, allowNull: false },
      rotatedAt: { type: DataTypes.DATE, allowNull: true },
      revokedAt: { type: DataTypes.DATE, allowNull: true },
    },
    { ...common, tableName: 'refresh_tokens' },
  );

  // No association: a deleted user's cutoffs must outlive the user (migration 0002).
  const UserRevocation = sequelize.define<UserRevocationRow>(
    'UserRevocation',
    {
      id: { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true },
      userId: { type: DataTypes.INTEGER, allowNull: false },
      notBefore: { type: DataTypes.DATE, allowNull: false },
      reason: { type: DataTypes.STRING(32), allowNull: false },
    },
    { ...common, tableName: 'user_revocations' },
  );

  const Throttle = sequelize.define<ThrottleRow>(
    'Throttle',
    {
      key: { type: DataTypes.CHAR(64), primaryKey: true },
      count: { type: DataTypes.INTEGER, allowNull: false },
      startedAt: { type: DataTypes.DATE, allowNull: false },
      updatedAt: { type: DataTypes.DATE, allowNull: false },
      blockedUntil: { type: DataTypes.DATE, allowNull: true },
    },
    { ...common, tableName: 'auth_throttle' },
  );

  const KnownAddress = sequelize.define<KnownAddressRow>(
    'KnownAddress',
    {
      key: { type: DataTypes.CHAR(64), primaryKey: true },
      seenAt: { type: DataTypes.DATE, allowNull: false },
    },
    { ...common, tableName: 'auth_known_addresses' },
  );

  const WebhookOutbox = sequelize.define<WebhookOutboxRow>(
    'WebhookOutbox',
    {
      id: { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true },
      messageId: { type: DataTypes.STRING(64), allowNull: false },
      endpoint: { type: DataTypes.CHAR(16), allowNull: false },
      type: { type: DataTypes.STRING(64), allowNull: false },
      userId: { type: DataTypes.INTEGER, allowNull: true },
      subject: { type: DataTypes.STRING(80), allowNull: true },
      body: { type: DataTypes.TEXT, allowNull: false },
      createdAt: { type: DataTypes.DATE, allowNull: false },
      status: { type: DataTypes.STRING(16), allowNull: false, defaultValue: 'pending' },
      attempts: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
      nextAttemptAt: { type: DataTypes.DATE, allowNull: false },
      retryFrom: { type: DataTypes.DATE, allowNull: false },
      lastAttemptAt: { type: DataTypes.DATE, allowNull: true },
      lastError: { type: DataTypes.STRING(512), allowNull: true },
      deliveredAt: { type: DataTypes.DATE, allowNull: true },
    },
    { ...common, tableName: 'webhook_outbox', scopes: { pending: { where: { status: 'pending' } } } },
  );

  const Group = sequelize.define<GroupRow>(
    'Group',
    {
      id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
      name: { type: DataTypes.STRING(150), allowNull: false, unique: true },
    },
    { ...common, tableName: 'groups' },
  );

  const UserGroup = sequelize.define<UserGroupRow>(
    'UserGroup',
    {
      userId: { type: DataTypes.INTEGER, primaryKey: true },
      groupId: { type: DataTypes.INTEGER, primaryKey: true },
    },
    { ...common, tableName: 'user_groups' },
  );

  const OAuthClient = sequelize.define<OAuthClientRow>(
    'OAuthClient',
    {
      clientId: { type: DataTypes.STRING(64), primaryKey: true },
      name: { type: DataTypes.STRING(150), allowNull: false, unique: true },
      secretHash: { type: DataTypes.STRING(128), allowNull: false },
      scopes: { type: DataTypes.ARRAY(DataTypes.STRING(128)), allowNull: false, defaultValue: [] },
      createdAt: { type: DataTypes.DATE, allowNull: false },
      secretChangedAt: { type: DataTypes.DATE, allowNull: false },
    },
    { ...common, tableName: 'oauth_clients' },
  );

  // No association: a deleted client's cutoffs must outlive it (migration 0006).
  const ClientRevocation = sequelize.define<ClientRevocationRow>(
    'ClientRevocation',
    {
      id: { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true },
      clientId: { type: DataTypes.STRING(64), allowNull: false },
      notBefore: { type: DataTypes.DATE, allowNull: false },
      reason: { type: DataTypes.STRING(32), allowNull: false },
    },
    { ...common, tableName: 'client_revocations' },
  );

  // A user has families (one per login); a family has refresh tokens. The foreign keys and their
  // ON DELETE CASCADE are the migrations'.
  User.hasMany(TokenFamily, { as: 'families', foreignKey: 'userId' });
  TokenFamily.belongsTo(User, { as: 'user', foreignKey: 'userId' });
  TokenFamily.hasMany(RefreshToken, { as: 'refreshTokens', foreignKey: 'familyId' });
  RefreshToken.belongsTo(TokenFamily, { as: 'family', foreignKey: 'familyId' });
  // Users and groups, many to many through user_groups (Django's User.groups).
  User.belongsToMany(Group, { through: UserGroup, as: 'groups', foreignKey: 'userId', otherKey: 'groupId' });
  Group.belongsToMany(User, { through: UserGroup, as: 'users', foreignKey: 'groupId', otherKey: 'userId' });

  // Not rotated and not revoked: the newest token of its chain.
  RefreshToken.addScope('current', { where: { rotatedAt: null, revokedAt: null } });
  // Usable at `now`: current, unexpired, in a live family (not past its session's end) of an active user. The rotation statement
  // in families.ts says the same in SQL; test/integration/models.test.ts holds the two together.
  RefreshToken.addScope('usable', (now: Date) => ({
    where: { rotatedAt: null, revokedAt: null, expiresAt: { [Op.gt]: now } },
    include: [
      {
        model: TokenFamily.scope('live'),
        as: 'family',
        required: true,
        where: { expiresAt: { [Op.gt]: now } },
        attributes: ['id', 'userId'],
        include: [{ model: User.scope('active'), as: 'user', required: true, attributes: ['id', 'username'] }],
      },
    ],
  }));
  // Past its expiry at `now`: refused whatever its state, and due for flushexpiredtokens.
  RefreshToken.addScope('expired', (now: Date) => ({ where: { expiresAt: { [Op.lte]: now } } }));

  return { User, TokenFamily, RefreshToken, UserRevocation, Throttle, KnownAddress, Group, UserGroup, OAuthClient, ClientRevocation, WebhookOutbox };
}
