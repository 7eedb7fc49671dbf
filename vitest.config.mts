import { defineConfig } from 'vitest/config';

// Three projects, all run by `npm test`: unit (no I/O), integration (a real Postgres from
// testcontainers, the app over HTTP) and e2e (the docker compose stack, through nginx). Files run one
// at a time: the e2e suite measures things (zero failed requests during a reload) that a
// neighbour hammering the same two cores would only blur.
export default defineConfig({
  test: {
    fileParallelism: false,
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
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          testTimeout: 180_000,
          hookTimeout: 600_000,
        },
      },
    ],
  },
});
