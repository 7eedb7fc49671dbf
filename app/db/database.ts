// The Sequelize instance (one connection pool per process) and the models on it.
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { DataTypes, Sequelize, type Model, type Optional, type Transaction } from 'sequelize';

export interface UserAttributes {
  id: number;
  username: string;
  passwordHash: string;
  isActive: boolean;
  lastLogin: Date | null;
  passwordChangedAt: Date;
  dateJoined: Date;
}
type UserCreation = Optional<UserAttributes, 'id' | 'isActive' | 'lastLogin' | 'passwordChangedAt' | 'dateJoined'>;
export interface UserRow extends Model<UserAttributes, UserCreation>, UserAttributes {}

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
}
export interface TokenFamilyRow extends Model<TokenFamilyAttributes>, TokenFamilyAttributes {}

export interface RefreshTokenAttributes {
  jti: string;
  familyId: string;
  parentJti: string | null;
  createdAt: Date;
  expiresAt: Date;
  rotatedAt: Date | null;
  revokedAt: Date | null;
}
export interface RefreshTokenRow extends Model<RefreshTokenAttributes>, RefreshTokenAttributes {}

export interface DatabaseOptions {
  url: string;
  poolMax: number;
  /** Tag for pg_stat_activity. */
  applicationName?: string;
}

export type Database = ReturnType<typeof createDatabase>;

export function createDatabase(options: DatabaseOptions) {
  const sequelize = new Sequelize(options.url, {
    dialect: 'postgres',
    logging: false,
    pool: { max: options.poolMax, min: 0, idle: 10_000, acquire: 10_000 },
    dialectOptions: {
      application_name: options.applicationName ?? 'koa-auth-stack',
      // Fail fast when the database is away, so /readyz and the token endpoints answer at once
      // instead of hanging on a dead connection attempt.
      connectionTimeoutMillis: 3_000,
      keepAlive: true,
    },
  });

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
    },
    { ...common, tableName: 'users' },
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
    },
    { ...common, tableName: 'token_families' },
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

  // Hand-written SQL goes straight to pg on a connection from Sequelize's own pool, as a named
  // prepared statement (parsed once per connection): the hot paths skip the ORM's query pipeline.
  const statementNames = new Map<string, string>();
  const nameOf = (sql: string) => {
    let name = statementNames.get(sql);
    if (!name) statementNames.set(sql, (name = `q${createHash('sha1').update(sql).digest('hex').slice(0, 16)}`));
    return name;
  };

  // How many statements this process has sent (hand-written and ORM), for tests that prove a path
  // sends none.
  let statements = 0;
  sequelize.addHook('beforeQuery', () => {
    statements += 1;
  });

  /** A parameterised statement ($1, $2, …) returning its rows; in `transaction` when given. */
  async function rows<T extends object>(sql: string, values: unknown[], transaction?: Transaction): Promise<T[]> {
    statements += 1;
    // A Transaction holds its pg client as `connection`; Sequelize's types leave it out.
    const inTransaction = (transaction as unknown as { connection?: pg.Client } | undefined)?.connection;
    const client = inTransaction ?? ((await sequelize.connectionManager.getConnection({ type: 'write' })) as pg.Client);
    try {
      return (await client.query<T>({ name: nameOf(sql), text: sql, values })).rows;
    } finally {
      if (!inTransaction) await sequelize.connectionManager.releaseConnection(client);
    }
  }

  return {
    sequelize,
    models: { User, TokenFamily, RefreshToken },
    rows,
    statementCount: () => statements,
    close: () => sequelize.close(),
  };
}
