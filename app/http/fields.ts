// DRF CharField validation for request fields: the same rules and messages, so clients that show
// field errors keep working.
import { validationError } from './errors';
import type { Fields } from './body';

const SURROGATE = /[\uD800-\uDFFF]/;

function charField(value: unknown): string | string[] {
  if (value === undefined) return ['This field is required.'];
  if (value === null) return ['This field may not be null.'];
  // DRF accepts numbers (and renders them as text) but not booleans, lists or objects.
  if (typeof value === 'number' && Number.isFinite(value)) value = String(value);
  if (typeof value !== 'string') return ['Not a valid string.'];
  const trimmed = value.trim();
  if (trimmed === '') return ['This field may not be blank.'];
  if (trimmed.includes('\0')) return ['Null characters are not allowed.'];
  const surrogate = SURROGATE.exec(trimmed);
  if (surrogate) {
    // A lone surrogate: valid JSON (\ud800), but not a character.
    const code = surrogate[0].charCodeAt(0).toString(16).toUpperCase();
    return [`Surrogate characters are not allowed: U+${code}.`];
  }
  return trimmed;
}

/** Reads the named CharFields, or throws DRF's 400 with every field's errors, in field order. */
export function charFields<K extends string>(data: Fields, names: readonly K[]): Record<K, string> {
  const values = {} as Record<K, string>;
  const errors: Record<string, string[]> = {};
  for (const name of names) {
    const result = charField(Object.hasOwn(data, name) ? data[name] : undefined);
    if (typeof result === 'string') values[name] = result;
    else errors[name] = result;
  }
  if (Object.keys(errors).length > 0) throw validationError(errors);
  return values;
}
