// Counts and times every answered request by method, route template and status. Placed outside the
// error handler, so it sees the final status; it records before Koa writes the response, so a client
// that has its answer is already counted (a scrape right after N requests shows N).
import type { Middleware } from 'koa';

export interface RequestRecorder {
  request(method: string, route: string, status: number, seconds: number): void;
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/**
 * The label for a matched route: its template, never the raw path (bounded cardinality). The API's
 * public paths end in a slash, as simplejwt's do, and the router matches both spellings of the one
 * template, so API templates are labelled with the slash. Unmatched paths share one label.
 */
export function routeLabel(template: unknown): string {
  if (typeof template !== 'string') return 'unmatched';
  return template.startsWith('/api/') && !template.endsWith('/') ? `${template}/` : template;
}

export function requestMetrics(recorder: RequestRecorder): Middleware {
  // Each template's label, made once (the router's templates are a fixed set).
  const labels = new Map<unknown, string>();
  const labelOf = (template: unknown): string => {
    let label = labels.get(template);
    if (label === undefined) labels.set(template, (label = routeLabel(template)));
    return label;
  };
  return async function measure(ctx, next) {
    const started = performance.now();
    try {
      await next();
    } finally {
      // @koa/router leaves the matched layer's path here; its types declare it on RouterContext only.
      const template = (ctx as { _matchedRoute?: unknown })._matchedRoute;
      const method = METHODS.has(ctx.method) ? ctx.method : 'other';
      recorder.request(method, typeof template === 'string' ? labelOf(template) : 'unmatched', ctx.status, (performance.now() - started) / 1000);
    }
  };
}
