// Protected resource at /api/*: validates Bearer (RFC 6750) and DPoP
// (RFC 9449) access tokens against the provider's own token store.

import { createHash, createHmac, randomBytes } from 'node:crypto';
import { EmbeddedJWK, calculateJwkThumbprint, jwtVerify } from 'jose';

export const DPOP_ALGS = ['ES256', 'ES384', 'EdDSA', 'Ed25519', 'PS256', 'RS256'];
const IAT_WINDOW = 60; // seconds, both directions
const NONCE_STEP = 60; // seconds
const MAX_BODY = 1024 * 1024;

const quote = (s) => `"${String(s).replace(/["\\]/g, '\\$&')}"`;

class Reject extends Error {
  constructor(scheme, error, description, { nonce } = {}) {
    super(description);
    this.scheme = scheme;
    this.error = error;
    this.description = description;
    this.nonce = nonce;
  }
}

export function createResourceServer({ provider, issuer, counters, requireNonce }) {
  const nonceSecret = randomBytes(32);
  let nonceEpoch = 0;
  const seenJti = new Map(); // jti -> expiry (ms)

  const nonceFor = (step) => createHmac('sha256', nonceSecret)
    .update(`${nonceEpoch}:${step}`)
    .digest('base64url');
  const currentNonce = () => nonceFor(Math.floor(Date.now() / 1000 / NONCE_STEP));
  const nonceValid = (nonce) => {
    const step = Math.floor(Date.now() / 1000 / NONCE_STEP);
    // current and the previous two steps: a nonce stays valid 2-3 minutes
    return [step, step - 1, step - 2].some((s) => nonceFor(s) === nonce);
  };

  function rememberJti(jti) {
    const now = Date.now();
    if (seenJti.size > 10000) {
      for (const [k, exp] of seenJti) if (exp <= now) seenJti.delete(k);
    }
    if (seenJti.has(jti) && seenJti.get(jti) > now) return false;
    seenJti.set(jti, now + 2 * IAT_WINDOW * 1000 + 1000);
    return true;
  }

  async function findToken(value) {
    const { AccessToken, ClientCredentials, Grant } = provider;
    const token = (await AccessToken.find(value)) ?? (await ClientCredentials.find(value));
    if (!token || token.isExpired) return undefined;
    if (token.grantId) {
      const grant = await Grant.find(token.grantId);
      if (!grant || grant.clientId !== token.clientId || grant.accountId !== token.accountId) {
        return undefined;
      }
    }
    return token;
  }

  async function verifyProof(proof, { method, url, accessToken, jkt }) {
    let payload;
    let protectedHeader;
    try {
      ({ payload, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, {
        typ: 'dpop+jwt',
        algorithms: DPOP_ALGS,
      }));
    } catch (err) {
      throw new Reject('DPoP', 'invalid_dpop_proof', `DPoP proof verification failed: ${err.message}`);
    }
    const now = Math.floor(Date.now() / 1000);
    if (typeof payload.jti !== 'string' || !payload.jti) {
      throw new Reject('DPoP', 'invalid_dpop_proof', 'DPoP proof must have a jti');
    }
    if (typeof payload.iat !== 'number' || Math.abs(now - payload.iat) > IAT_WINDOW) {
      throw new Reject('DPoP', 'invalid_dpop_proof', 'DPoP proof iat is missing or not within 60 seconds');
    }
    if (payload.htm !== method) {
      throw new Reject('DPoP', 'invalid_dpop_proof', 'DPoP proof htm mismatch');
    }
    const htu = typeof payload.htu === 'string' ? URL.parse(payload.htu) : null;
    if (htu) {
      htu.search = '';
      htu.hash = '';
    }
    if (!htu || htu.href !== url) {
      throw new Reject('DPoP', 'invalid_dpop_proof', `DPoP proof htu mismatch, expected ${url}`);
    }
    const ath = createHash('sha256').update(accessToken).digest('base64url');
    if (payload.ath !== ath) {
      throw new Reject('DPoP', 'invalid_dpop_proof', 'DPoP proof ath mismatch');
    }
    if (requireNonce) {
      if (payload.nonce === undefined) {
        throw new Reject('DPoP', 'use_dpop_nonce', 'Resource server requires nonce in DPoP proof', { nonce: currentNonce() });
      }
      if (typeof payload.nonce !== 'string' || !nonceValid(payload.nonce)) {
        throw new Reject('DPoP', 'use_dpop_nonce', 'DPoP proof nonce is invalid or stale', { nonce: currentNonce() });
      }
    }
    if (!rememberJti(payload.jti)) {
      throw new Reject('DPoP', 'invalid_dpop_proof', 'DPoP proof jti replayed');
    }
    const thumbprint = await calculateJwkThumbprint(protectedHeader.jwk, 'sha256');
    if (thumbprint !== jkt) {
      throw new Reject('DPoP', 'invalid_token', 'DPoP proof key does not match the access token binding (cnf.jkt)');
    }
  }

  async function authenticate(req, url) {
    const authz = req.headers.authorization;
    if (!authz) throw new Reject('Bearer', undefined, undefined);
    const m = /^(\S+) +(\S+)$/.exec(authz.trim());
    if (!m) throw new Reject('Bearer', 'invalid_request', 'malformed Authorization header');
    const scheme = m[1].toLowerCase();
    const value = m[2];
    if (scheme !== 'bearer' && scheme !== 'dpop') {
      throw new Reject('Bearer', 'invalid_request', `unsupported authorization scheme ${m[1]}`);
    }
    const challengeScheme = scheme === 'dpop' ? 'DPoP' : 'Bearer';
    const proofs = req.headers.dpop;
    if (scheme === 'dpop') {
      if (!proofs) throw new Reject('DPoP', 'invalid_dpop_proof', 'DPoP proof header missing');
      if (Array.isArray(proofs) || proofs.includes(',')) {
        throw new Reject('DPoP', 'invalid_dpop_proof', 'exactly one DPoP proof header expected');
      }
    }

    const token = await findToken(value);
    if (!token) {
      throw new Reject(challengeScheme, 'invalid_token', 'access token is unknown, expired, revoked, or its grant was revoked');
    }
    if (token.jkt) {
      if (scheme !== 'dpop') {
        throw new Reject('DPoP', 'invalid_token', 'DPoP-bound access token presented with the Bearer scheme');
      }
      await verifyProof(proofs, {
        method: req.method, url, accessToken: value, jkt: token.jkt,
      });
    } else if (scheme === 'dpop') {
      throw new Reject('DPoP', 'invalid_token', 'access token is not DPoP-bound');
    }
    return token;
  }

  function challenge(reject) {
    const params = [];
    if (reject.error) {
      params.push(`error=${quote(reject.error)}`);
      if (reject.description) params.push(`error_description=${quote(reject.description)}`);
    }
    if (reject.scheme === 'DPoP') params.push(`algs=${quote(DPOP_ALGS.join(' '))}`);
    if (reject.scheme === 'Bearer' && !reject.error) params.push(`realm=${quote(issuer)}`);
    return params.length ? `${reject.scheme} ${params.join(', ')}` : reject.scheme;
  }

  async function readBody(req) {
    const chunks = [];
    let size = 0;
    for await (const chunk of req) {
      size += chunk.length;
      if (size > MAX_BODY) throw new Error('body too large');
      chunks.push(chunk);
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  async function handle(req, res) {
    counters.api_calls += 1;
    const reqUrl = new URL(req.url, issuer);
    const url = new URL(reqUrl.pathname, issuer).href;
    let body = '';
    try {
      body = await readBody(req);
    } catch {
      res.writeHead(413).end();
      return;
    }
    const send = (status, headers, json) => {
      const text = JSON.stringify(json);
      res.writeHead(status, {
        'content-type': 'application/json; charset=utf-8',
        'cache-control': 'no-store',
        'content-length': Buffer.byteLength(text),
        ...headers,
      });
      res.end(text);
    };
    if (!['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].includes(req.method)) {
      send(405, { allow: 'GET, POST, PUT, PATCH, DELETE' }, { error: 'method_not_allowed' });
      return;
    }

    let token;
    try {
      token = await authenticate(req, url);
    } catch (err) {
      if (!(err instanceof Reject)) throw err;
      counters.api_rejections += 1;
      if (err.error === 'use_dpop_nonce') counters.api_dpop_nonce_challenges += 1;
      const headers = { 'www-authenticate': challenge(err) };
      if (err.nonce) headers['dpop-nonce'] = err.nonce;
      const status = err.error === 'invalid_request' ? 400 : 401;
      send(status, headers, { error: err.error ?? 'unauthorized', error_description: err.description });
      return;
    }

    const headers = {};
    if (requireNonce && token.jkt) headers['dpop-nonce'] = currentNonce();
    send(200, headers, {
      sub: token.accountId ?? token.clientId,
      client_id: token.clientId,
      scope: token.scope ?? null,
      token_type: token.jkt ? 'DPoP' : 'Bearer',
      token_kind: token.kind,
      method: req.method,
      path: reqUrl.pathname,
      query: reqUrl.search.slice(1),
      body,
    });
  }

  return {
    handle,
    rotateNonce() {
      nonceEpoch += 1;
      return currentNonce();
    },
  };
}
