// GET /api/docs/: Swagger UI for the OpenAPI document, served from swagger-ui-dist in node_modules
// (nothing from a CDN, nothing fetched from outside). The page has its own Content-Security-Policy,
// allowing exactly what it uses: its own scripts and styles, data: images (the stylesheet's icons)
// and requests to this origin (the schema, "try it out").
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type Router from '@koa/router';
import type { Context } from 'koa';
import getAbsoluteFSPath from 'swagger-ui-dist/absolute-path.js';
import { endpoint } from './endpoint';
import { notFound } from './errors';

export const DOCS_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const PAGE = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>koa-auth-stack API</title>
<link rel="stylesheet" href="/api/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="/api/docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/api/docs/swagger-ui-bundle.js"></script>
<script src="/api/docs/init.js"></script>
</body>
</html>
`;

// A script file, not an inline one, so the policy needs no 'unsafe-inline'.
const INIT = `window.ui = SwaggerUIBundle({ url: '/api/schema/', dom_id: '#swagger-ui', tryItOutEnabled: false, presets: [SwaggerUIBundle.presets.apis] });\n`;

interface Asset {
  type: string;
  body: Buffer;
}

function loadAssets(): Map<string, Asset> {
  const dist = getAbsoluteFSPath();
  const file = (name: string, type: string): [string, Asset] => [name, { type, body: readFileSync(path.join(dist, name)) }];
  return new Map([
    file('swagger-ui-bundle.js', 'text/javascript; charset=utf-8'),
    file('swagger-ui.css', 'text/css; charset=utf-8'),
    file('favicon-32x32.png', 'image/png'),
    ['init.js', { type: 'text/javascript; charset=utf-8', body: Buffer.from(INIT) }],
  ]);
}

const MAX_AGE_SECONDS = 3600;

export function docsRoutes(router: Router): void {
  const assets = loadAssets(); // read once, at start: a missing package fails the start, not a request
  const send = (ctx: Context, type: string, body: Buffer | string) => {
    ctx.set('Content-Security-Policy', DOCS_CSP);
    ctx.set('Cache-Control', `public, max-age=${MAX_AGE_SECONDS}`);
    ctx.type = type;
    ctx.body = body;
  };
  router.all('/api/docs', endpoint({ GET: (ctx) => send(ctx, 'text/html; charset=utf-8', PAGE) }));
  router.all(
    '/api/docs/:asset',
    endpoint({
      GET: (ctx) => {
        const asset = assets.get(String(ctx.params.asset));
        if (!asset) throw notFound();
        send(ctx, asset.type, asset.body);
      },
    }),
  );
}
