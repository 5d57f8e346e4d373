// Statically registered test clients. Ids and secrets are fixed and
// documented in README.md; they are test-only values.

import { readFileSync } from 'node:fs';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { fileURLToPath } from 'node:url';

// Reserved characters on purpose: colon, percent, plus, ampersand, equals,
// slash, question mark, hash and a space. A client that does not
// form-urlencode them correctly (RFC 6749 section 2.3.1 / appendix B) fails.
export const BASIC_CLIENT_SECRET = 's3cr:t%+&=/?# x';
export const POST_CLIENT_SECRET = 'p0st:t%+&=/?# y';
export const SERVICE_CLIENT_SECRET = 'svc:s3cr%t+&=/?# z';

export const REDIRECT_URI = 'http://127.0.0.1/callback';

// Resource server usable with RFC 8707 resource indicators (`resource=`).
export const API_RESOURCE = 'urn:interop:api';
export const API_SCOPES = 'api:read api:write';

const keyPath = (name) => fileURLToPath(new URL(`../keys/${name}`, import.meta.url));

function loadKey(file, kid, alg) {
  const privateKey = createPrivateKey(readFileSync(keyPath(file)));
  const publicJwk = createPublicKey(privateKey).export({ format: 'jwk' });
  return {
    kid,
    alg,
    privateKey,
    publicJwk: { ...publicJwk, kid, alg, use: 'sig' },
  };
}

export const JWT_CLIENT_KEYS = {
  ES256: loadKey('jwt-client-es256.pem', 'jwt-client-es256', 'ES256'),
  RS256: loadKey('jwt-client-rs256.pem', 'jwt-client-rs256', 'RS256'),
};

const codeAndRefresh = {
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: [REDIRECT_URI],
};

export const CLIENTS = [
  {
    client_id: 'basic-client',
    client_secret: BASIC_CLIENT_SECRET,
    token_endpoint_auth_method: 'client_secret_basic',
    ...codeAndRefresh,
  },
  {
    client_id: 'post-client',
    client_secret: POST_CLIENT_SECRET,
    token_endpoint_auth_method: 'client_secret_post',
    ...codeAndRefresh,
  },
  {
    client_id: 'public-client',
    token_endpoint_auth_method: 'none',
    ...codeAndRefresh,
  },
  {
    client_id: 'service-client',
    client_secret: SERVICE_CLIENT_SECRET,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: API_SCOPES,
  },
  {
    client_id: 'jwt-client',
    token_endpoint_auth_method: 'private_key_jwt',
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    redirect_uris: [REDIRECT_URI],
    jwks: { keys: [JWT_CLIENT_KEYS.ES256.publicJwk, JWT_CLIENT_KEYS.RS256.publicJwk] },
  },
  {
    client_id: 'dpop-client',
    token_endpoint_auth_method: 'none',
    dpop_bound_access_tokens: true,
    ...codeAndRefresh,
  },
];

export const CLIENT_SECRETS = {
  'basic-client': BASIC_CLIENT_SECRET,
  'post-client': POST_CLIENT_SECRET,
  'service-client': SERVICE_CLIENT_SECRET,
};

export const clientById = (id) => CLIENTS.find((c) => c.client_id === id);
