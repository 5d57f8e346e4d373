// Programmatic end-user login: drives the provider's real authorization code
// flow over HTTP (GET /auth -> /interaction/:uid (auto-approved, see
// interaction.mjs) -> /auth/:uid -> redirect_uri?code=...) and then the real
// token endpoint. Nothing is minted directly.

import { randomBytes } from 'node:crypto';

import { REDIRECT_URI, clientById } from './clients.mjs';
import { DpopKey, addClientAuth, b64url, pkcePair } from './oauth-client.mjs';

export const INTERNAL_HEADER = 'x-interop-internal';

export class HttpError extends Error {
  constructor(status, error, description, extra = {}) {
    super(description ?? error);
    this.status = status;
    this.body = { error, error_description: description, ...extra };
  }
}

// Just enough of RFC 6265 for talking to ourselves: name, value, path.
class CookieJar {
  #cookies = new Map();

  store(setCookieHeaders) {
    for (const header of setCookieHeaders) {
      const [pair, ...attrs] = header.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = '/';
      let expired = false;
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=');
        const key = k.trim().toLowerCase();
        if (key === 'path') path = v.trim() || '/';
        if (key === 'expires' && Date.parse(v) <= Date.now()) expired = true;
        if (key === 'max-age' && Number(v) <= 0) expired = true;
      }
      const id = `${name};${path}`;
      if (expired || value === '') this.#cookies.delete(id);
      else this.#cookies.set(id, { name, value, path });
    }
  }

  header(url) {
    const { pathname } = new URL(url);
    const pairs = [];
    for (const { name, value, path } of this.#cookies.values()) {
      const prefix = path.endsWith('/') ? path : `${path}/`;
      if (pathname === path || pathname.startsWith(prefix) || path === '/') pairs.push(`${name}=${value}`);
    }
    return pairs.join('; ');
  }
}

export function accountIdFor(user) {
  if (user === undefined || user === null || user === '') return 'user-1';
  const id = /^user-/.test(user) ? user : `user-${user}`;
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(id)) {
    throw new HttpError(400, 'invalid_request', 'user must match [A-Za-z0-9._-]{1,64}');
  }
  return id;
}

async function readJson(res) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    return { error: 'non_json_response', error_description: text.slice(0, 500) };
  }
}

/**
 * @returns {Promise<{ status: number, body: object, headers: Headers, dpopKey?: DpopKey, generatedDpopKey: boolean }>}
 */
export async function login({
  issuer, clientId, scope = 'openid offline_access', user, dpopJwk, alg, resource,
}) {
  const client = clientById(clientId);
  if (!client) throw new HttpError(400, 'invalid_request', `unknown client ${JSON.stringify(clientId)}`);
  if (!client.grant_types.includes('authorization_code')) {
    throw new HttpError(400, 'invalid_request', `${clientId} is not allowed the authorization_code grant`);
  }
  const accountId = accountIdFor(user);

  let dpopKey;
  let generatedDpopKey = false;
  if (dpopJwk) {
    try {
      dpopKey = await DpopKey.fromPrivateJwk(dpopJwk);
    } catch (err) {
      throw new HttpError(400, 'invalid_request', `dpop_jwk: ${err.message}`);
    }
  } else if (client.dpop_bound_access_tokens) {
    dpopKey = await DpopKey.generate('ES256');
    generatedDpopKey = true;
  }

  const jar = new CookieJar();
  const pkce = pkcePair();
  const state = b64url(randomBytes(16));
  const auth = new URL('/auth', issuer);
  auth.search = new URLSearchParams({
    client_id: clientId,
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    scope,
    state,
    code_challenge: pkce.challenge,
    code_challenge_method: 'S256',
    login_hint: accountId,
    // OIDC Core 11: offline_access is ignored unless prompt contains consent
    // (oidc-provider strips it otherwise).
    ...(scope.split(' ').includes('offline_access') ? { prompt: 'consent' } : {}),
    ...(scope.split(' ').includes('openid') ? { nonce: b64url(randomBytes(16)) } : {}),
    ...(dpopKey ? { dpop_jkt: await dpopKey.thumbprint() } : {}),
    ...(resource ? { resource } : {}),
  }).toString();

  let url = auth.href;
  let callback;
  for (let hop = 0; hop < 16 && !callback; hop++) {
    const res = await fetch(url, {
      redirect: 'manual',
      headers: { cookie: jar.header(url), accept: 'application/json', [INTERNAL_HEADER]: '1' },
    });
    jar.store(res.headers.getSetCookie());
    const location = res.headers.get('location');
    if (![302, 303].includes(res.status) || !location) {
      const body = await readJson(res);
      throw new HttpError(502, 'login_failed', `unexpected ${res.status} from ${new URL(url).pathname}`, { upstream: body });
    }
    await res.body?.cancel();
    const next = new URL(location, url);
    if (next.href.startsWith(`${REDIRECT_URI}?`)) callback = next;
    url = next.href;
  }
  if (!callback) throw new HttpError(502, 'login_failed', 'too many redirects');

  const params = callback.searchParams;
  if (params.get('error')) {
    throw new HttpError(400, params.get('error'), params.get('error_description') ?? undefined, { from: 'authorization_endpoint' });
  }
  if (params.get('state') !== state) throw new HttpError(502, 'login_failed', 'state mismatch');
  if (params.get('iss') && params.get('iss') !== issuer) throw new HttpError(502, 'login_failed', 'iss mismatch');

  const tokenUrl = new URL('/token', issuer).href;
  let nonce;
  for (let attempt = 0; ; attempt++) {
    const body = new URLSearchParams({
      grant_type: 'authorization_code',
      code: params.get('code'),
      redirect_uri: REDIRECT_URI,
      code_verifier: pkce.verifier,
    });
    if (resource) body.set('resource', resource);
    const headers = {
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
      [INTERNAL_HEADER]: '1',
    };
    await addClientAuth(clientId, body, headers, { issuer, alg });
    if (dpopKey) headers.dpop = await dpopKey.proof({ htm: 'POST', htu: tokenUrl, nonce });

    const res = await fetch(tokenUrl, { method: 'POST', headers, body });
    const json = await readJson(res);
    const newNonce = res.headers.get('dpop-nonce');
    if (res.status === 400 && json.error === 'use_dpop_nonce' && newNonce && attempt === 0) {
      nonce = newNonce;
      continue;
    }
    return { status: res.status, body: json, headers: res.headers, dpopKey, generatedDpopKey };
  }
}
