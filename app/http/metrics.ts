// Counts and times every answered request by method, route template and status. requestFrame records
// after the error answer, so it sees the final status, and before Koa writes the response, so a client
// that has its answer is already counted (a scrape right after N requests shows N).
import type { Context } from 'koa';

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

/** Records a request that has its answer (requestFrame's): method, route template, status, time. */
export function requestMetrics(recorder: RequestRecorder): (ctx: Context, seconds: number) => void {
  // Each template's label, made once (the router's templates are a fixed set).
  const labels = new Map<unknown, string>();
  const labelOf = (template: unknown): string => {
    let label = labels.get(template);
    if (label === undefined) labels.set(template, (label = routeLabel(template)));
    return label;
  };
  return function record(ctx, seconds) {
    // @koa/router leaves the matched layer's path here; its types declare it on RouterContext only.
    const template = (ctx as { _matchedRoute?: unknown })._matchedRoute;
    const method = METHODS.has(ctx.method) ? ctx.method : 'other';
    recorder.request(method, typeof template === 'string' ? labelOf(template) : 'unmatched', ctx.status, seconds);
  };
}
