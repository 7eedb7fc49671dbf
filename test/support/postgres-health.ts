// A health check for Postgres test containers that cannot crash the server it checks. The default
// one of testcontainers' PostgreSqlContainer is a shell (`CMD-SHELL … pg_isready`) with a 1 s
// timeout: on a busy machine Docker kills the shell at the timeout, the orphaned pg_isready is
// adopted by PID 1 — Postgres itself — and when it dies of SIGPIPE the postmaster takes it for a
// crashed backend and restarts every connection (docker-compose.yml has the same note). No shell
// here, so nothing is left behind, and a timeout a loaded machine can meet.
import type { GenericContainer } from 'testcontainers';

type HealthCheck = Parameters<GenericContainer['withHealthCheck']>[0];

export const postgresHealthCheck = (username: string, database: string): HealthCheck => ({
  test: ['CMD', 'pg_isready', '--host', 'localhost', '--username', username, '--dbname', database],
  interval: 1_000,
  timeout: 10_000,
  retries: 300,
});
