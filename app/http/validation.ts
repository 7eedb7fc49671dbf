// Request validation with zod, answering as DRF does: a CharField's rules and messages, and 400
// `{field: [messages]}` in field order. The same schemas describe the requests in the OpenAPI
// document (app/http/openapi.ts), so the documentation cannot drift from what is enforced.
import { z } from 'zod';
import type { Fields } from './body';
import { validationError } from './errors';

const SURROGATE = /[\uD800-\uDFFF]/;

/** DRF's CharField (trim_whitespace, allow_blank=False): numbers read as text; bools, lists, objects do not. */
export const charField = z.preprocess(
  (value) => (typeof value === 'number' && Number.isFinite(value) ? String(value) : value),
  z
    .string({
      error: (issue) =>
        issue.input === undefined ? 'This field is required.' : issue.input === null ? 'This field may not be null.' : 'Not a valid string.',
    })
    .trim()
    // A refinement, not .min(): zod runs length checks on anything with a length (a list, say) after
    // a type failure, where DRF stops. The documents still say minLength 1.
    .refine((s) => s.length > 0, { error: 'This field may not be blank.', abort: true })
    .refine((s) => !s.includes('\0'), 'Null characters are not allowed.')
    .superRefine((s, ctx) => {
      // A lone surrogate: valid JSON (\ud800), but not a character.
      const surrogate = SURROGATE.exec(s);
      if (surrogate) {
        const code = surrogate[0].charCodeAt(0).toString(16).toUpperCase();
        ctx.addIssue({ code: 'custom', message: `Surrogate characters are not allowed: U+${code}.` });
      }
    })
    .meta({ minLength: 1 }),
);

/** DRF's ChoiceField message for a value outside `choices`. */
export const choiceField = <const T extends readonly [string, ...string[]]>(choices: T) =>
  z.enum(choices, { error: (issue) => `"${String(issue.input)}" is not a valid choice.` });

/**
 * The fields `schema` declares, parsed from `data`, or DRF's 400 with every field's errors in the
 * schema's field order. Only own properties are read: `toString` or `__proto__` in a body are fields
 * like any other, never the prototype's.
 */
export function validated<S extends z.ZodObject>(schema: S, data: Fields): z.output<S> {
  const own: Fields = Object.assign(Object.create(null) as Fields, data);
  const result = schema.safeParse(own);
  if (result.success) return result.data;
  const byField = new Map<string, string[]>(Object.keys(schema.shape).map((name) => [name, []]));
  for (const issue of result.error.issues) byField.get(String(issue.path[0]))?.push(issue.message);
  throw validationError(Object.fromEntries([...byField].filter(([, messages]) => messages.length > 0)));
}
