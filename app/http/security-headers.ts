// The headers every answer of the app carries, Koa's and the ones Node's server writes itself (a
// missing Host, a malformed request). nginx, in front, replaces them with its own set.
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'same-origin',
};
