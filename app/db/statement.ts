// Hand-written SQL with named parameters: the text writes `${p.now}`, the call passes `{ now }`. pg
// takes positional $n; the builder numbers each name once, in the order the text first uses it, so
// no one counts to ten by hand.
export interface Statement<P> {
  readonly text: string;
  values(params: P): unknown[];
}

export function statement<P extends Record<string, unknown>>(write: (p: { readonly [K in keyof P & string]: string }) => string): Statement<P> {
  const names: string[] = [];
  const placeholders = new Proxy({} as { readonly [K in keyof P & string]: string }, {
    get(_, name) {
      if (typeof name !== 'string') throw new TypeError('a parameter is named by a string');
      const at = names.includes(name) ? names.indexOf(name) : names.push(name) - 1;
      return `$${at + 1}`;
    },
  });
  const text = write(placeholders);
  return { text, values: (params) => names.map((name) => params[name]) };
}
