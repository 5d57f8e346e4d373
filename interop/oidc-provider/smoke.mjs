#!/usr/bin/env node
// Smoke test for server.mjs: starts it as a child process (twice: default
// settings, then DPOP_REQUIRE_NONCE=1), exercises every client, the rotation
// and reuse-detection behaviour and the /test/ and /api/ endpoints.
// Exit status 0 when everything passed, 1 otherwise.
//
//   node smoke.mjs            (VERBOSE=1 to see the server's stderr)

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { BASIC_CLIENT_SECRET, POST_CLIENT_SECRET, SERVICE_CLIENT_SECRET } from './lib/clients.mjs';
import { DpopKey, addClientAuth } from './lib/oauth-client.mjs';

const SERVER = fileURLToPath(new URL('./server.mjs', import.meta.url));

let passed = 0;
let failed = 0;

async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed += 1;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (err) {
    failed += 1;
    console.log(`FAIL ${name}\n     ${String(err?.stack ?? err).split('\n').join('\n     ')}`);
  }
}

async function startServer(env = {}) {
  const child = spawn(process.execPath, [SERVER], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', process.env.VERBOSE ? 'inherit' : 'ignore'],
  });
  const lines = createInterface({ input: child.stdout });
  const extraStdout = [];
  const first = await Promise.race([
    new Promise((resolve) => lines.once('line', resolve)),
    new Promise((_, reject) => child.once('exit', (code) => reject(new Error(`server exited early (${code})`)))),
    new Promise((_, reject) => setTimeout(() => reject(new Error('server not ready after 15 s')), 15000).unref()),
  ]);
  lines.on('line', (l) => extraStdout.push(l));
  const ready = JSON.parse(first);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, ...ready, firstLine: first, extraStdout, exited };
}

function serverClient(issuer) {
  const json = async (res) => {
    const text = await res.text();
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  };
  const request = async (method, path, { form, headers = {}, body } = {}) => {
    const res = await fetch(`${issuer}${path}`, {
      method,
      headers: form ? { 'content-type': 'application/x-www-form-urlencoded', ...headers } : headers,
      body: form ?? body,
    });
    return { status: res.status, headers: res.headers, body: await json(res) };
  };
  const oauth = async (clientId, path, params, { dpop, alg, headers: extra = {} } = {}) => {
    const form = new URLSearchParams(params);
    const headers = { ...extra };
    await addClientAuth(clientId, form, headers, { issuer, alg });
    if (dpop) headers.dpop = await dpop.key.proof({ htm: 'POST', htu: `${issuer}${path}`, nonce: dpop.nonce });
    return request('POST', path, { form, headers });
  };
  return {
    issuer,
    request,
    login: (client, query = '', body) => request('POST', `/test/login?client=${client}${query}`, {
      body: body ? JSON.stringify(body) : undefined,
      headers: body ? { 'content-type': 'application/json' } : {},
    }),
    counters: async () => (await request('GET', '/test/counters')).body,
    reset: () => request('POST', '/test/reset-counters'),
    refresh: (client, refreshToken, opts) => oauth(client, '/token', { grant_type: 'refresh_token', refresh_token: refreshToken }, opts),
    token: (client, params, opts) => oauth(client, '/token', params, opts),
    introspect: (client, token) => oauth(client, '/token/introspection', { token }),
    revoke: (client, token, hint) => oauth(client, '/token/revocation', hint ? { token, token_type_hint: hint } : { token }),
    api: (accessToken, { method = 'GET', path = '/api/resource', body, scheme = 'Bearer', proof } = {}) => request(method, path, {
      body,
      headers: { authorization: `${scheme} ${accessToken}`, ...(proof ? { dpop: proof } : {}) },
    }),
  };
}

function assertTokenResponse(res, { tokenType = 'Bearer', refresh = true } = {}) {
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(typeof res.body.access_token, 'string');
  assert.equal(res.body.token_type, tokenType);
  assert.equal(typeof res.body.expires_in, 'number');
  if (refresh) assert.equal(typeof res.body.refresh_token, 'string');
}

// ---------------------------------------------------------------------------

async function mainSuite() {
  const srv = await startServer({ ACCESS_TOKEN_TTL: '2' });
  const s = serverClient(srv.issuer);

  await check('ready line is exactly {"issuer","port"} on 127.0.0.1', () => {
    assert.deepEqual(Object.keys(JSON.parse(srv.firstLine)), ['issuer', 'port']);
    assert.equal(srv.issuer, `http://127.0.0.1:${srv.port}`);
    assert.ok(srv.port > 0);
  });

  await check('discovery: openid-configuration and oauth-authorization-server', async () => {
    for (const path of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
      const { status, body } = await s.request('GET', path);
      assert.equal(status, 200);
      assert.equal(body.issuer, srv.issuer);
      assert.equal(body.token_endpoint, `${srv.issuer}/token`);
      assert.equal(body.revocation_endpoint, `${srv.issuer}/token/revocation`);
      assert.equal(body.introspection_endpoint, `${srv.issuer}/token/introspection`);
      assert.ok(body.grant_types_supported.includes('refresh_token'));
      assert.ok(body.grant_types_supported.includes('client_credentials'));
      assert.ok(body.dpop_signing_alg_values_supported.includes('ES256'));
    }
  });

  await check('fixed secrets contain the reserved characters', () => {
    for (const secret of [BASIC_CLIENT_SECRET, POST_CLIENT_SECRET, SERVICE_CLIENT_SECRET]) {
      for (const ch of [':', '%', '+', '&', '=', '/', '?', '#', ' ']) assert.ok(secret.includes(ch), `${secret} lacks ${ch}`);
    }
    assert.equal(BASIC_CLIENT_SECRET, 's3cr:t%+&=/?# x');
  });

  for (const client of ['basic-client', 'post-client', 'public-client', 'jwt-client']) {
    await check(`${client}: login, refresh twice with rotation, reuse revokes the grant`, async () => {
      await s.reset();
      const login = await s.login(client);
      assertTokenResponse(login);
      assert.equal(login.body.scope, 'openid offline_access');
      assert.equal(typeof login.body.id_token, 'string');

      const me = await s.api(login.body.access_token);
      assert.equal(me.status, 200);
      assert.equal(me.body.sub, 'user-1');
      assert.equal(me.body.client_id, client);

      const r1 = await s.refresh(client, login.body.refresh_token);
      assertTokenResponse(r1);
      assert.notEqual(r1.body.refresh_token, login.body.refresh_token, 'refresh token rotated');
      assert.equal(r1.body.scope, 'openid offline_access');
      const r2 = await s.refresh(client, r1.body.refresh_token);
      assertTokenResponse(r2);
      assert.notEqual(r2.body.refresh_token, r1.body.refresh_token, 'refresh token rotated again');
      assert.equal((await s.api(r2.body.access_token)).status, 200);

      // present a consumed refresh token again
      const reuse = await s.refresh(client, r1.body.refresh_token);
      assert.equal(reuse.status, 400);
      assert.equal(reuse.body.error, 'invalid_grant');

      const c = await s.counters();
      assert.equal(c.reuse_detections, 1, JSON.stringify(c));
      assert.equal(c.revoked_grants, 1, JSON.stringify(c));
      assert.equal(c.refresh_grants, 2, JSON.stringify(c));
      assert.equal(c.rotations, 2, JSON.stringify(c));
      assert.equal(c.token_requests, 3, JSON.stringify(c));
      assert.equal(c.token_errors, 1, JSON.stringify(c));

      // the whole grant is gone: newest refresh token and access token too
      const newest = await s.refresh(client, r2.body.refresh_token);
      assert.equal(newest.status, 400);
      assert.equal(newest.body.error, 'invalid_grant');
      const api = await s.api(r2.body.access_token);
      assert.equal(api.status, 401);
      assert.match(api.headers.get('www-authenticate'), /^Bearer error="invalid_token"/);
      assert.equal((await s.counters()).reuse_detections, 1, 'not-found is not a reuse detection');
    });
  }

  await check('jwt-client: RS256 client assertion, client_credentials', async () => {
    const login = await s.login('jwt-client', '&alg=RS256');
    assertTokenResponse(login);
    const r = await s.refresh('jwt-client', login.body.refresh_token, { alg: 'RS256' });
    assertTokenResponse(r);
    const cc = await s.token('jwt-client', { grant_type: 'client_credentials' });
    assertTokenResponse(cc, { refresh: false });
  });

  await check('login as another user (&user=7), scope without offline_access', async () => {
    const login = await s.login('basic-client', '&user=7&scope=openid');
    assertTokenResponse(login);
    assert.equal(login.body.scope, 'openid');
    assert.equal((await s.api(login.body.access_token)).body.sub, 'user-7');
  });

  await check('service-client: client_credentials (with and without resource indicator)', async () => {
    await s.reset();
    const cc = await s.token('service-client', { grant_type: 'client_credentials', scope: 'api:read' });
    assertTokenResponse(cc, { refresh: false });
    assert.equal(cc.body.scope, 'api:read');
    assert.equal(cc.body.refresh_token, undefined);
    const api = await s.api(cc.body.access_token, { method: 'POST', path: '/api/echo?x=1', body: 'payload' });
    assert.equal(api.status, 200);
    assert.deepEqual(
      [api.body.sub, api.body.client_id, api.body.body, api.body.query, api.body.method],
      ['service-client', 'service-client', 'payload', 'x=1', 'POST'],
    );
    const rs = await s.token('service-client', { grant_type: 'client_credentials', scope: 'api:read api:write', resource: 'urn:interop:api' });
    assertTokenResponse(rs, { refresh: false });
    const intro = await s.introspect('service-client', rs.body.access_token);
    assert.equal(intro.body.active, true);
    assert.equal(intro.body.aud, 'urn:interop:api');
    const badScope = await s.token('service-client', { grant_type: 'client_credentials', scope: 'openid' });
    assert.equal(badScope.status, 400);
    assert.equal(badScope.body.error, 'invalid_scope');
    const noCode = await s.login('service-client');
    assert.equal(noCode.status, 400);
    assert.equal((await s.counters()).client_credentials_grants, 2);
  });

  await check('client authentication failures: wrong secret, unencoded Basic, wrong method', async () => {
    const wrong = await s.request('POST', '/token', {
      form: 'grant_type=client_credentials',
      headers: { authorization: `Basic ${Buffer.from('service-client:nope').toString('base64')}` },
    });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error, 'invalid_client');
    assert.match(wrong.headers.get('www-authenticate'), /^Basic realm=/);
    const raw = await s.request('POST', '/token', {
      form: 'grant_type=client_credentials',
      headers: { authorization: `Basic ${Buffer.from(`service-client:${SERVICE_CLIENT_SECRET}`).toString('base64')}` },
    });
    assert.equal(raw.status, 400, 'a secret with a raw % is not valid form-urlencoding');
    assert.equal(raw.body.error, 'invalid_request');
    const pct = await s.request('POST', '/token', {
      form: 'grant_type=client_credentials',
      headers: { authorization: `Basic ${Buffer.from(`service-client:${encodeURIComponent(SERVICE_CLIENT_SECRET)}`).toString('base64')}` },
    });
    assert.equal(pct.status, 200, '%20 for space is accepted as well as +');
    const viaPost = await s.request('POST', '/token', {
      form: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'service-client', client_secret: SERVICE_CLIENT_SECRET }),
    });
    assert.equal(viaPost.status, 401, 'STRICT_CLIENT_AUTH rejects client_secret_post for a basic client');
    assert.equal(viaPost.body.error, 'invalid_client');
  });

  await check('introspection and revocation', async () => {
    await s.reset();
    let login = await s.login('basic-client');
    let intro = await s.introspect('basic-client', login.body.refresh_token);
    assert.equal(intro.body.active, true);
    assert.equal(intro.body.client_id, 'basic-client');
    assert.equal(intro.body.token_type, undefined, 'oidc-provider omits token_type for refresh tokens');
    intro = await s.introspect('post-client', login.body.access_token);
    assert.equal(intro.body.active, true);
    assert.equal(intro.body.sub, 'user-1');
    assert.equal(intro.body.client_id, 'basic-client');

    // revoking the refresh token revokes the grant (access token too)
    const rv = await s.revoke('basic-client', login.body.refresh_token, 'refresh_token');
    assert.equal(rv.status, 200);
    assert.equal((await s.api(login.body.access_token)).status, 401);
    assert.equal((await s.introspect('basic-client', login.body.refresh_token)).body.active, false);

    // revoking an access token also kills the grant's refresh tokens
    login = await s.login('basic-client');
    assert.equal((await s.revoke('basic-client', login.body.access_token)).status, 200);
    assert.equal((await s.api(login.body.access_token)).status, 401);
    const r = await s.refresh('basic-client', login.body.refresh_token);
    assert.equal(r.body.error, 'invalid_grant');

    // unknown tokens: 200 (RFC 7009) / active=false
    assert.equal((await s.revoke('basic-client', 'does-not-exist')).status, 200);
    assert.equal((await s.introspect('basic-client', 'does-not-exist')).body.active, false);

    const c = await s.counters();
    assert.equal(c.introspections, 4, JSON.stringify(c));
    assert.equal(c.revocations, 3, JSON.stringify(c));
    assert.equal(c.revoked_grants, 1, 'only the refresh-token revocation emits grant.revoked');
  });

  await check('consumed refresh token: introspection inactive, previous access token stays valid', async () => {
    const login = await s.login('post-client');
    const r1 = await s.refresh('post-client', login.body.refresh_token);
    assertTokenResponse(r1);
    assert.equal((await s.introspect('post-client', login.body.refresh_token)).body.active, false);
    assert.equal((await s.api(login.body.access_token)).status, 200);
  });

  await check('concurrent refreshes with the same token: one 200, one reuse, grant revoked', async () => {
    await s.reset();
    const login = await s.login('public-client');
    const [a, b] = await Promise.all([
      s.refresh('public-client', login.body.refresh_token),
      s.refresh('public-client', login.body.refresh_token),
    ]);
    const statuses = [a.status, b.status].sort();
    assert.deepEqual(statuses, [200, 400]);
    const winner = a.status === 200 ? a : b;
    assert.equal((await s.refresh('public-client', winner.body.refresh_token)).status, 400);
    assert.equal((await s.api(winner.body.access_token)).status, 401);
    const c = await s.counters();
    assert.equal(c.reuse_detections, 1);
    assert.equal(c.revoked_grants, 1);
  });

  await check('ACCESS_TOKEN_TTL=2: access token rejected after expiry, refresh still works', async () => {
    const login = await s.login('public-client');
    assert.equal(login.body.expires_in, 2);
    assert.equal((await s.api(login.body.access_token)).status, 200);
    await new Promise((r) => setTimeout(r, 3100));
    const api = await s.api(login.body.access_token);
    assert.equal(api.status, 401);
    assert.match(api.headers.get('www-authenticate'), /error="invalid_token"/);
    assertTokenResponse(await s.refresh('public-client', login.body.refresh_token));
  });

  await check('expire-access-tokens and admin revoke-grant', async () => {
    const a = await s.login('basic-client');
    const b = await s.login('post-client');
    assert.equal((await s.api(a.body.access_token)).status, 200);
    const expired = await s.request('POST', '/test/expire-access-tokens');
    assert.equal(expired.status, 200);
    assert.ok(expired.body.expired >= 2);
    assert.equal((await s.api(a.body.access_token)).status, 401);
    assert.equal((await s.api(b.body.access_token)).status, 401);
    assert.equal((await s.introspect('basic-client', a.body.access_token)).body.active, false);
    const ra = await s.refresh('basic-client', a.body.refresh_token);
    assertTokenResponse(ra);

    const rev = await s.request('POST', `/test/revoke-grant?token=${encodeURIComponent(ra.body.refresh_token)}`);
    assert.equal(rev.status, 200);
    assert.equal(rev.body.revoked, true);
    assert.equal((await s.api(ra.body.access_token)).status, 401);
    assert.equal((await s.refresh('basic-client', ra.body.refresh_token)).body.error, 'invalid_grant');
    assert.equal((await s.request('POST', '/test/revoke-grant?token=nope')).status, 404);
  });

  await check('pause-token-responses delays the next token response; resume releases it', async () => {
    const login = await s.login('public-client');
    await s.request('POST', '/test/pause-token-responses?ms=60000&count=1');
    const t0 = Date.now();
    const pending = s.refresh('public-client', login.body.refresh_token);
    await new Promise((r) => setTimeout(r, 300));
    const resumed = await s.request('POST', '/test/resume');
    assert.equal(resumed.body.released, 1);
    const r = await pending;
    assertTokenResponse(r);
    assert.ok(Date.now() - t0 < 5000);
  });

  await check('DPoP: dpop-client login with caller key, API, refresh, binding checks', async () => {
    const key = await DpopKey.generate('ES256');
    const login = await s.login('dpop-client', '', { dpop_jwk: key.privateJwk });
    assertTokenResponse(login, { tokenType: 'DPoP' });
    assert.equal(login.body.test_dpop_jwk, undefined);
    const at = login.body.access_token;
    const htu = `${srv.issuer}/api/resource`;
    const ok = await s.api(at, { scheme: 'DPoP', proof: await key.proof({ htm: 'GET', htu, accessToken: at }) });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.token_type, 'DPoP');

    const asBearer = await s.api(at);
    assert.equal(asBearer.status, 401);
    assert.match(asBearer.headers.get('www-authenticate'), /^DPoP error="invalid_token"/);
    const noAth = await s.api(at, { scheme: 'DPoP', proof: await key.proof({ htm: 'GET', htu }) });
    assert.equal(noAth.status, 401);
    assert.match(noAth.headers.get('www-authenticate'), /^DPoP error="invalid_dpop_proof"/);
    const other = await DpopKey.generate('ES256');
    const wrongKey = await s.api(at, { scheme: 'DPoP', proof: await other.proof({ htm: 'GET', htu, accessToken: at }) });
    assert.equal(wrongKey.status, 401);

    const r = await s.refresh('dpop-client', login.body.refresh_token, { dpop: { key } });
    assertTokenResponse(r, { tokenType: 'DPoP' });
    const noProof = await s.refresh('dpop-client', r.body.refresh_token);
    assert.equal(noProof.body.error, 'invalid_grant');
    const badKey = await s.refresh('dpop-client', r.body.refresh_token, { dpop: { key: other } });
    assert.equal(badKey.body.error, 'invalid_grant');
    assertTokenResponse(await s.refresh('dpop-client', r.body.refresh_token, { dpop: { key } }), { tokenType: 'DPoP' });

    const generated = await s.login('dpop-client');
    assertTokenResponse(generated, { tokenType: 'DPoP' });
    assert.equal(generated.body.test_dpop_jwk.kty, 'EC');
    const gkey = await DpopKey.fromPrivateJwk(generated.body.test_dpop_jwk);
    const gat = generated.body.access_token;
    assert.equal((await s.api(gat, { scheme: 'DPoP', proof: await gkey.proof({ htm: 'GET', htu, accessToken: gat }) })).status, 200);
  });

  await check('unknown /test route 404, api without credentials 401 Bearer challenge', async () => {
    assert.equal((await s.request('GET', '/test/nope')).status, 404);
    const res = await s.request('GET', '/api/x');
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate'), /^Bearer realm=/);
  });

  await check('counters have the documented keys', async () => {
    const c = await s.counters();
    for (const k of ['token_requests', 'refresh_grants', 'rotations', 'reuse_detections', 'revoked_grants',
      'client_credentials_grants', 'introspections', 'revocations', 'api_calls', 'api_rejections']) {
      assert.equal(typeof c[k], 'number', k);
    }
  });

  await check('nothing else on stdout; exits when stdin closes', async () => {
    srv.child.stdin.end();
    const { code } = await Promise.race([
      srv.exited,
      new Promise((_, reject) => setTimeout(() => reject(new Error('did not exit within 5 s')), 5000).unref()),
    ]);
    assert.equal(code, 0);
    assert.deepEqual(srv.extraStdout, []);
  });
}

async function nonceSuite() {
  const srv = await startServer({ DPOP_REQUIRE_NONCE: '1' });
  const s = serverClient(srv.issuer);

  await check('DPOP_REQUIRE_NONCE=1: token endpoint and API demand nonces', async () => {
    const key = await DpopKey.generate('ES256');
    await s.reset();
    const login = await s.login('dpop-client', '', { dpop_jwk: key.privateJwk });
    assertTokenResponse(login, { tokenType: 'DPoP' });

    // token endpoint: 400 use_dpop_nonce + DPoP-Nonce header
    const first = await s.refresh('dpop-client', login.body.refresh_token, { dpop: { key } });
    assert.equal(first.status, 400);
    assert.equal(first.body.error, 'use_dpop_nonce');
    const nonce = first.headers.get('dpop-nonce');
    assert.ok(nonce);
    const second = await s.refresh('dpop-client', login.body.refresh_token, { dpop: { key, nonce } });
    assertTokenResponse(second, { tokenType: 'DPoP' });

    // API: 401 WWW-Authenticate: DPoP error="use_dpop_nonce" + DPoP-Nonce
    const at = second.body.access_token;
    const htu = `${srv.issuer}/api/resource`;
    const a1 = await s.api(at, { scheme: 'DPoP', proof: await key.proof({ htm: 'GET', htu, accessToken: at }) });
    assert.equal(a1.status, 401);
    assert.match(a1.headers.get('www-authenticate'), /^DPoP error="use_dpop_nonce"/);
    const apiNonce = a1.headers.get('dpop-nonce');
    assert.ok(apiNonce);
    const a2 = await s.api(at, { scheme: 'DPoP', proof: await key.proof({ htm: 'GET', htu, accessToken: at, nonce: apiNonce }) });
    assert.equal(a2.status, 200, JSON.stringify(a2.body));

    const rotated = await s.request('POST', '/test/rotate-api-dpop-nonce');
    const a3 = await s.api(at, { scheme: 'DPoP', proof: await key.proof({ htm: 'GET', htu, accessToken: at, nonce: apiNonce }) });
    assert.equal(a3.status, 401, 'old nonce rejected after rotation');
    assert.equal(a3.headers.get('dpop-nonce'), rotated.body.nonce);

    const c = await s.counters();
    assert.equal(c.token_dpop_nonce_challenges, 1, JSON.stringify(c));
    assert.equal(c.api_dpop_nonce_challenges, 2, JSON.stringify(c));
    assert.equal(c.reuse_detections, 0, 'a use_dpop_nonce error does not consume the refresh token');
  });

  await check('SIGTERM stops the server', async () => {
    srv.child.kill('SIGTERM');
    const { code, signal } = await srv.exited;
    assert.ok(code === 0 || signal === 'SIGTERM');
  });
}

const t0 = Date.now();
try {
  await mainSuite();
  await nonceSuite();
} catch (err) {
  failed += 1;
  console.log(`FAIL harness: ${err?.stack ?? err}`);
}
console.log(`\ntook ${((Date.now() - t0) / 1000).toFixed(1)} s`);
console.log(`smoke: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
