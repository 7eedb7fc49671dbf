// Standard Webhooks signatures, by the spec's own library (receivers verify with it, or with svix):
// `v1,<base64 HMAC-SHA256 of id.timestamp.body>` with each whsec_ secret, space-separated, so a
// receiver that knows either the old or the new secret verifies during a rotation.
import { Webhook } from 'standardwebhooks';

export interface SignedHeaders {
  'webhook-id': string;
  'webhook-timestamp': string;
  'webhook-signature': string;
}

export type Signer = (messageId: string, at: Date, body: string) => SignedHeaders;

export function createSigner(secrets: readonly string[]): Signer {
  if (secrets.length === 0) throw new Error('no webhook secret to sign with');
  const keys = secrets.map((secret) => new Webhook(secret));
  return (messageId, at, body) => ({
    'webhook-id': messageId,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': keys.map((key) => key.sign(messageId, at, body)).join(' '),
  });
}
