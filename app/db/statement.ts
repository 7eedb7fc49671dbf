// Hand-written SQL with named parameters: the text writes `${p.now}`, the call passes `{ now }`. pg
// takes positional $n; the builder numbers each name once, in the order the text first uses it, so
// no one counts to ten by hand.
export interface Statement<P> {
  readonly text: string;
  values(params: P): unknown[];
}

/**
 * The placeholders a statement's text may use: one per name its parameters declare (not the index
 * signature a `Record<string, unknown>` base brings), so a misspelled name does not compile.
 */
export type Placeholders<P> = { readonly [K in keyof P as string extends K ? never : K & string]: string };

export function statement<P extends Record<string, unknown>>(write: (p: Placeholders<P>) => string): Statement<P> {
  const names: string[] = [];
  const placeholders = new Proxy({} as Placeholders<P>, {
    get(_, name) {
      if (typeof name !== 'string') throw new TypeError('a parameter is named by a string');
      const at = names.includes(name) ? names.indexOf(name) : names.push(name) - 1;
      return `$${at + 1}`;
    },
  });
  const text = write(placeholders);
  return { text, values: (params) => names.map((name) => params[name]) };
}
