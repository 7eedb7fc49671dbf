import { defineConfig } from 'vitest/config';

// Three projects, all run by `npm test`: unit (no I/O), integration (a real Postgres from
// testcontainers, the app over HTTP) and e2e (the docker compose stack, through nginx).
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/support/postgres-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
