// One Postgres container for the integration project; each test file makes its own database in it.
import { PostgreSqlContainer, type StartedPostgreSqlContainer } from '@testcontainers/postgresql';
import type { TestProject } from 'vitest/node';
import { images } from './images';
import { postgresHealthCheck } from './postgres-health';

declare module 'vitest' {
  export interface ProvidedContext {
    postgresAdminUrl: string;
  }
}

export default async function setup(project: TestProject) {
  // PostgreSqlContainer's defaults: user, password and database "test".
  const container: StartedPostgreSqlContainer = await new PostgreSqlContainer(images().POSTGRES_IMAGE)
    .withHealthCheck(postgresHealthCheck('test', 'test'))
    .withCommand(['postgres', '-c', 'max_connections=300', '-c', 'fsync=off'])
    .start();
  project.provide('postgresAdminUrl', container.getConnectionUri());
  return async () => {
    await container.stop();
  };
}
