// Request bodies as DRF's default parsers read them: JSON, form-encoded and multipart (text fields).
// Anything else is 415; a body that does not parse is 400; one over the limit is 413.
import busboy from 'busboy';
import type { Context } from 'koa';
import getRawBody from 'raw-body';
import { ApiError } from './errors';

export type Fields = Record<string, unknown>;

const JSON_TYPE = 'application/json';
const FORM_TYPE = 'application/x-www-form-urlencoded';
const MULTIPART_TYPE = 'multipart/form-data';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

function unsupported(contentType: string): ApiError {
  return new ApiError(415, { detail: `Unsupported media type "${contentType}" in request.` });
}

function hasBody(ctx: Context): boolean {
  const length = ctx.get('content-length');
  return ctx.get('transfer-encoding') !== '' || (length !== '' && length !== '0');
}

async function readRaw(ctx: Context, limit: number): Promise<Buffer> {
  try {
    const length = ctx.get('content-length');
    return await getRawBody(ctx.req, { limit, ...(length ? { length } : {}) });
  } catch (err) {
    const type = (err as { type?: string }).type;
    if (type === 'entity.too.large') {
      throw new ApiError(413, { detail: `Request body is larger than ${limit} bytes.`, code: 'request_too_large' });
    }
    if (type === 'request.size.invalid') {
      throw new ApiError(400, { detail: 'Request body length does not match Content-Length.', code: 'bad_request' });
    }
    throw new ApiError(400, { detail: 'Request body could not be read.', code: 'bad_request' });
  }
}

function decodeUtf8(raw: Buffer, what: string): string {
  try {
    return strictUtf8.decode(raw);
  } catch {
    throw new ApiError(400, { detail: `${what} parse error - the body is not valid UTF-8`, code: 'parse_error' });
  }
}

function parseJson(raw: Buffer): unknown {
  const text = decodeUtf8(raw, 'JSON');
  try {
    return JSON.parse(text);
  } catch (err) {
    // DRF's wording, with Node's reason in place of Python's.
    throw new ApiError(400, { detail: `JSON parse error - ${(err as Error).message}` });
  }
}

function parseForm(raw: Buffer): Fields {
  // A null-prototype object: a field named "__proto__" is just a field.
  const fields: Fields = Object.create(null) as Fields;
  for (const [key, value] of new URLSearchParams(decodeUtf8(raw, 'Form'))) fields[key] = value; // last one wins, as QueryDict.get
  return fields;
}

function parseMultipart(ctx: Context, limit: number): Promise<Fields> {
  return new Promise((resolve, reject) => {
    const fields: Fields = Object.create(null) as Fields;
    let bb: busboy.Busboy;
    try {
      bb = busboy({ headers: ctx.req.headers, limits: { fieldSize: limit, fields: 100, files: 0, parts: 100 } });
    } catch {
      reject(new ApiError(400, { detail: 'Multipart form parse error - missing or invalid boundary', code: 'parse_error' }));
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
      if (received > limit) fail(new ApiError(413, { detail: `Request body is larger than ${limit} bytes.`, code: 'request_too_large' }));
    });
    bb.on('field', (name, value, info) => {
      if (info.valueTruncated) fail(new ApiError(413, { detail: `Request body is larger than ${limit} bytes.`, code: 'request_too_large' }));
      fields[name] = value;
    });
    // files: 0 makes busboy skip file parts; credentials are text fields.
    bb.on('error', () => fail(new ApiError(400, { detail: 'Multipart form parse error', code: 'parse_error' })));
    bb.on('close', () => resolve(fields));
    ctx.req.pipe(bb);
  });
}

/** Parses the request body by its media type. A request without a body reads as an empty object. */
export async function readBody(ctx: Context, limit: number): Promise<unknown> {
  const contentType = ctx.get('content-type');
  const mediaType = contentType.split(';')[0]!.trim().toLowerCase();
  // As DRF: no body reads as no fields, whatever the declared type.
  if (!hasBody(ctx)) return {};
  switch (mediaType) {
    case JSON_TYPE:
      return parseJson(await readRaw(ctx, limit));
    case FORM_TYPE:
      return parseForm(await readRaw(ctx, limit));
    case MULTIPART_TYPE:
      return parseMultipart(ctx, limit);
    default:
      throw unsupported(contentType);
  }
}

function pythonTypeName(value: unknown): string {
  if (value === null) return 'NoneType';
  if (Array.isArray(value)) return 'list';
  if (typeof value === 'string') return 'str';
  if (typeof value === 'boolean') return 'bool';
  if (typeof value === 'number') return Number.isInteger(value) ? 'int' : 'float';
  return typeof value;
}

/** The body as a dictionary of fields, or DRF's 400 for any other JSON value. */
export async function readFields(ctx: Context, limit: number): Promise<Fields> {
  const data = await readBody(ctx, limit);
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new ApiError(400, { non_field_errors: [`Invalid data. Expected a dictionary, but got ${pythonTypeName(data)}.`] });
  }
  return data as Fields;
}
