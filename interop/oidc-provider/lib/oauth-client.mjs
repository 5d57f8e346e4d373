// Minimal OAuth 2.0 client helpers shared by the /test/login helper and by
// smoke.mjs: token endpoint client authentication for every test client and
// DPoP proof creation.

import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK } from 'jose';

import { CLIENT_SECRETS, JWT_CLIENT_KEYS, clientById } from './clients.mjs';

export const b64url = (buf) => Buffer.from(buf).toString('base64url');

// RFC 6749 appendix B: application/x-www-form-urlencoded (space -> '+').
export const formEncode = (s) => new URLSearchParams({ s }).toString().slice(2);

export function pkcePair() {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  return { verifier, challenge };
}

/**
 * Adds client authentication for `clientId` to a token-endpoint style request.
 * @param {string} clientId
 * @param {URLSearchParams} body form body (mutated)
 * @param {Record<string,string>} headers (mutated)
 * @param {{ issuer: string, alg?: 'ES256'|'RS256' }} opts
 */
export async function addClientAuth(clientId, body, headers, { issuer, alg = 'ES256' }) {
  const client = clientById(clientId);
  if (!client) throw new Error(`unknown client ${clientId}`);
  switch (client.token_endpoint_auth_method) {
    case 'client_secret_basic': {
      const creds = `${formEncode(clientId)}:${formEncode(CLIENT_SECRETS[clientId])}`;
      headers.authorization = `Basic ${Buffer.from(creds).toString('base64')}`;
      break;
    }
    case 'client_secret_post':
      body.set('client_id', clientId);
      body.set('client_secret', CLIENT_SECRETS[clientId]);
      break;
    case 'none':
      body.set('client_id', clientId);
      break;
    case 'private_key_jwt': {
      const key = JWT_CLIENT_KEYS[alg];
      if (!key) throw new Error(`unsupported client assertion alg ${alg}`);
      const now = Math.floor(Date.now() / 1000);
      const assertion = await new SignJWT({})
        .setProtectedHeader({ alg, kid: key.kid, typ: 'JWT' })
        .setIssuer(clientId)
        .setSubject(clientId)
        .setAudience(issuer)
        .setJti(randomUUID())
        .setIssuedAt(now)
        .setExpirationTime(now + 60)
        .sign(key.privateKey);
      body.set('client_id', clientId);
      body.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
      body.set('client_assertion', assertion);
      break;
    }
    default:
      throw new Error(`unsupported auth method ${client.token_endpoint_auth_method}`);
  }
}

export function algForJwk(jwk) {
  if (jwk.alg) return jwk.alg;
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') return 'ES256';
  if (jwk.kty === 'EC' && jwk.crv === 'P-384') return 'ES384';
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') return 'EdDSA';
  if (jwk.kty === 'RSA') return 'PS256';
  throw new Error(`cannot infer a DPoP alg for JWK kty=${jwk.kty} crv=${jwk.crv}`);
}

export class DpopKey {
  /** @param {Record<string, unknown>} privateJwk */
  static async fromPrivateJwk(privateJwk) {
    if (!privateJwk || typeof privateJwk !== 'object' || !privateJwk.d) {
      throw new Error('dpop_jwk must be a private JWK (with "d")');
    }
    const alg = algForJwk(privateJwk);
    const privateKey = await importJWK(privateJwk, alg);
    const { d, p, q, dp, dq, qi, ...rest } = privateJwk;
    const publicJwk = Object.fromEntries(
      Object.entries(rest).filter(([k]) => ['kty', 'crv', 'x', 'y', 'n', 'e'].includes(k)),
    );
    return new DpopKey(alg, privateKey, publicJwk, privateJwk);
  }

  static async generate(alg = 'ES256') {
    const { privateKey } = await generateKeyPair(alg, { extractable: true });
    const privateJwk = await exportJWK(privateKey);
    return DpopKey.fromPrivateJwk({ ...privateJwk, alg });
  }

  constructor(alg, privateKey, publicJwk, privateJwk) {
    this.alg = alg;
    this.privateKey = privateKey;
    this.publicJwk = publicJwk;
    this.privateJwk = privateJwk;
  }

  thumbprint() {
    return calculateJwkThumbprint(this.publicJwk, 'sha256');
  }

  /** Creates a DPoP proof JWT (RFC 9449 section 4.2). */
  proof({ htm, htu, accessToken, nonce, iat = Math.floor(Date.now() / 1000), jti = randomUUID() }) {
    const url = new URL(htu);
    url.search = '';
    url.hash = '';
    const payload = { htm, htu: url.href, jti, iat };
    if (nonce) payload.nonce = nonce;
    if (accessToken) payload.ath = b64url(createHash('sha256').update(accessToken).digest());
    return new SignJWT(payload)
      .setProtectedHeader({ typ: 'dpop+jwt', alg: this.alg, jwk: this.publicJwk })
      .sign(this.privateKey);
  }
}
