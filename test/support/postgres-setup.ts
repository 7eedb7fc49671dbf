// One Postgres container for the integration project; each test file makes its own database in it.
import { PostgreSqlContainer, type StartedPostgreSqlContainer } from '@testcontainers/postgresql';
import type { TestProject } from 'vitest/node';
import { images } from './images';

declare module 'vitest' {
  export interface ProvidedContext {
    postgresAdminUrl: string;
  }
}

export default async function setup(project: TestProject) {
  const container: StartedPostgreSqlContainer = await new PostgreSqlContainer(images().POSTGRES_IMAGE)
    .withCommand(['postgres', '-c', 'max_connections=300', '-c', 'fsync=off'])
    .start();
  project.provide('postgresAdminUrl', container.getConnectionUri());
  return async () => {
    await container.stop();
  };
}
