// Request bodies as DRF's default parsers read them: JSON and form-encoded through @koa/bodyparser
// (its limits; its error hook answers in DRF's shapes), multipart (text fields) through busboy, which
// the bodyparser lacks. Anything else is 415; a body that does not parse is 400; one over the limit
// is 413. Bodies are read when a handler asks for them, as DRF's request.data, so a route refuses an
// unknown media type only where it reads a body.
import { bodyParser } from '@koa/bodyparser';
import busboy from 'busboy';
import type { Context } from 'koa';
import { ApiError, badRequest, parseError, requestTooLarge, unsupportedMediaType } from './errors';

export type Fields = Record<string, unknown>;

const JSON_TYPE = 'application/json';
const FORM_TYPE = 'application/x-www-form-urlencoded';
const MULTIPART_TYPE = 'multipart/form-data';

function unsupported(contentType: string): ApiError {
  return new ApiError(415, { detail: `Unsupported media type "${contentType}" in request.` });
}

function hasBody(ctx: Context): boolean {
  const length = ctx.get('content-length');
  return ctx.get('transfer-encoding') !== '' || (length !== '' && length !== '0');
}

/** What the bodyparser (co-body, raw-body, inflation) threw, as DRF would answer it. */
function bodyError(err: unknown, limit: number): ApiError {
  // DRF's wording for JSON, with Node's reason in place of Python's.
  if (err instanceof SyntaxError) return new ApiError(400, { detail: `JSON parse error - ${err.message}` });
  const e = err as { type?: unknown; status?: unknown; message?: unknown };
  switch (e.type) {
    case 'entity.too.large':
      return requestTooLarge(limit);
    case 'request.size.invalid':
      return badRequest('Request body length does not match Content-Length.');
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return unsupportedMediaType(String(e.message));
  }
  // inflation: a Content-Encoding other than gzip, deflate or identity.
  if (e.status === 415) return unsupportedMediaType(String(e.message));
  return badRequest('Request body could not be read.');
}

function parseMultipart(ctx: Context, limit: number): Promise<Fields> {
  return new Promise((resolve, reject) => {
    const fields: Fields = Object.create(null) as Fields;
    let bb: busboy.Busboy;
    try {
      bb = busboy({ headers: ctx.req.headers, limits: { fieldSize: limit, fields: 100, files: 0, parts: 100 } });
    } catch {
      reject(parseError('Multipart form parse error - missing or invalid boundary'));
      return;
    }
    let received = 0;
    const fail = (error: ApiError) => {
      ctx.req.unpipe(bb);
      ctx.req.resume();
      reject(error);
    };
    ctx.req.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received > limit) fail(requestTooLarge(limit));
    });
    bb.on('field', (name, value, info) => {
      if (info.valueTruncated) fail(requestTooLarge(limit));
      fields[name] = value;
    });
    // files: 0 makes busboy skip file parts; credentials are text fields.
    bb.on('error', () => fail(parseError('Multipart form parse error')));
    bb.on('close', () => resolve(fields));
    ctx.req.pipe(bb);
  });
}

function pythonTypeName(value: unknown, raw: string): string {
  if (value === null) return 'NoneType';
  if (Array.isArray(value)) return 'list';
  if (typeof value === 'string') return 'str';
  if (typeof value === 'boolean') return 'bool';
  // Python's json reads 1 as int but 1.0 and 1e3 as float; JavaScript has one number type.
  if (typeof value === 'number') return /^\s*-?\d+\s*$/.test(raw) ? 'int' : 'float';
  return typeof value;
}

/** A form's repeated field reads as its last value, as Django's QueryDict.get does. */
function lastValues(form: Fields): Fields {
  const fields: Fields = Object.create(null) as Fields;
  for (const [name, value] of Object.entries(form)) fields[name] = Array.isArray(value) ? value.at(-1) : value;
  return fields;
}

export interface BodyReader {
  /** The body as a dictionary of fields, or DRF's 400 for any other JSON value. No body: {}. */
  fields(ctx: Context): Promise<Fields>;
  /**
   * A form-encoded body's parameters exactly as sent, repeats included (OAuth's token endpoint must
   * refuse a repeated parameter, RFC 6749 §3.2). Any other media type is a 415; no body, none.
   */
  form(ctx: Context): Promise<URLSearchParams>;
}

export function createBodyReader(limit: number): BodyReader {
  const parse = bodyParser({
    enableTypes: ['json', 'form'],
    // DRF's JSONParser takes any JSON value; its serializer then answers for the non-objects.
    jsonStrict: false,
    jsonLimit: limit,
    formLimit: limit,
    parsedMethods: ['POST', 'PUT', 'PATCH', 'DELETE'],
    onError(err) {
      throw bodyError(err, limit);
    },
  });

  async function jsonOrForm(ctx: Context): Promise<{ data: unknown; raw: string }> {
    let parsed = false;
    await parse(ctx, async () => {
      parsed = true;
    });
    // The bodyparser answers 499 itself, without parsing, when the client has already gone.
    if (!parsed) throw badRequest('Request body could not be read.');
    return { data: ctx.request.body, raw: ctx.request.rawBody ?? '' };
  }

  async function fields(ctx: Context): Promise<Fields> {
    // As DRF: no body reads as no fields, whatever the declared type.
    if (!hasBody(ctx)) return {};
    const contentType = ctx.get('content-type');
    const mediaType = contentType.split(';')[0]!.trim().toLowerCase();
    if (mediaType === MULTIPART_TYPE) return parseMultipart(ctx, limit);
    if (mediaType !== JSON_TYPE && mediaType !== FORM_TYPE) throw unsupported(contentType);
    const { data, raw } = await jsonOrForm(ctx);
    if (mediaType === FORM_TYPE) return lastValues(data as Fields);
    if (raw === '') return {}; // a chunked body with no bytes: no body
    // DRF's Serializer: None is "No data provided"; any other non-object names its Python type.
    if (data === null) throw new ApiError(400, { non_field_errors: ['No data provided'] });
    if (typeof data !== 'object' || Array.isArray(data)) {
      throw new ApiError(400, { non_field_errors: [`Invalid data. Expected a dictionary, but got ${pythonTypeName(data, raw)}.`] });
    }
    return data as Fields;
  }

  async function form(ctx: Context): Promise<URLSearchParams> {
    if (!hasBody(ctx)) return new URLSearchParams();
    const contentType = ctx.get('content-type');
    if (contentType.split(';')[0]!.trim().toLowerCase() !== FORM_TYPE) throw unsupported(contentType);
    // The bodyparser reads it (limits, encodings, charset); the parameters come from the raw text.
    return new URLSearchParams((await jsonOrForm(ctx)).raw);
  }

  return { fields, form };
}
