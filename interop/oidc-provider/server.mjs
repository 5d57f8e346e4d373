#!/usr/bin/env node
// Loopback OAuth 2.0 / OpenID Connect provider (panva/node-oidc-provider) for
// the reqwest-token-refresh interop tests. See README.md for the contract.
//
// stdout: exactly one line, {"issuer":"http://127.0.0.1:PORT","port":PORT},
// once the server accepts connections. Everything else goes to stderr.

import './lib/log.mjs';

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { fstatSync } from 'node:fs';
import http from 'node:http';

import { loadConfig, USAGE } from './lib/config.mjs';
import { log, logError, setVerbose } from './lib/log.mjs';

let config;
try {
  config = loadConfig();
} catch (err) {
  process.stderr.write(`error: ${err.message}\n${USAGE}`);
  process.exit(2);
}
if (config.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
setVerbose(config.VERBOSE);

// Imported only now so that console output of module initialisation (e.g. the
// "Unsupported runtime" warning on Node 20) already honours VERBOSE.
let modules;
try {
  modules = await Promise.all([
    import('oidc-provider'),
    import('./lib/adapter.mjs'),
    import('./lib/clients.mjs'),
    import('./lib/interaction.mjs'),
    import('./lib/login.mjs'),
    import('./lib/resource.mjs'),
  ]);
} catch (err) {
  if (err?.code === 'ERR_MODULE_NOT_FOUND') {
    process.stderr.write(`error: ${err.message}\nrun \`npm ci\` in ${new URL('.', import.meta.url).pathname} first\n`);
    process.exit(3);
  }
  throw err;
}
const [
  { default: Provider, errors },
  { createAdapterFactory },
  { API_RESOURCE, API_SCOPES, CLIENTS },
  { handleInteraction },
  { HttpError, INTERNAL_HEADER, login },
  { DPOP_ALGS, createResourceServer },
] = modules;

// ---------------------------------------------------------------------------
// Lifetime: stdin EOF (parent gone), hard maximum lifetime, SIGTERM/SIGINT.

let server;
function shutdown(reason, code = 0) {
  log(`shutting down: ${reason}`);
  try {
    server?.closeAllConnections?.();
    server?.close();
  } catch {
    // ignore
  }
  process.exit(code);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGHUP', () => shutdown('SIGHUP'));
// Only a pipe or socket on stdin is watched: with stdin from /dev/null, a
// file or a terminal the server relies on the maximum lifetime and signals.
function stdinIsPipe() {
  try {
    const st = fstatSync(0);
    return st.isFIFO() || st.isSocket();
  } catch {
    return false;
  }
}
if (config.EXIT_ON_STDIN_CLOSE && stdinIsPipe()) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('close', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.on('data', () => {});
  process.stdin.resume();
}
setTimeout(() => shutdown(`MAX_LIFETIME_SECONDS=${config.MAX_LIFETIME_SECONDS} reached`), config.MAX_LIFETIME_SECONDS * 1000).unref();

// ---------------------------------------------------------------------------
// Counters (see README.md for the exact meaning of each).

const COUNTER_NAMES = [
  'token_requests',
  'token_errors',
  'authorization_code_grants',
  'refresh_grants',
  'rotations',
  'reuse_detections',
  'revoked_grants',
  'client_credentials_grants',
  'introspections',
  'revocations',
  'api_calls',
  'api_rejections',
  'token_dpop_nonce_challenges',
  'api_dpop_nonce_challenges',
  'admin_grant_revocations',
  'logins',
  'held_token_requests',
  'dropped_token_requests',
];
const counters = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0]));
const resetCounters = () => COUNTER_NAMES.forEach((n) => { counters[n] = 0; });

// ---------------------------------------------------------------------------
// Listen first (PORT=0 picks a free port), then build the provider with the
// real issuer.

let handler = (req, res) => {
  res.writeHead(503).end();
};
server = http.createServer((req, res) => handler(req, res));
// Longer than common client pool idle timeouts (reqwest/hyper: 90 s) so that
// the client, not the server, closes idle keep-alive connections; otherwise a
// request racing the server-side close fails with a connection reset.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 130_000;
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(config.PORT, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const { factory: adapter, store } = createAdapterFactory();

// Provider signing key (ID tokens); regenerated on every start.
const { privateKey: idTokenKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const idTokenJwk = { ...idTokenKey.export({ format: 'jwk' }), kid: 'provider-rs256', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  adapter,
  clients: CLIENTS,
  jwks: { keys: [idTokenJwk] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, name: `Test ${sub}`, email: `${sub}@example.test`, email_verified: true };
      },
    };
  },
  claims: {
    openid: ['sub'],
    profile: ['name'],
    email: ['email', 'email_verified'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', ...API_SCOPES.split(' ')],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Any authenticated client may introspect any token (test server).
      allowedPolicy: async () => true,
    },
    revocation: {
      enabled: true,
      // Same rule as the default policy, minus its "you should change this" notice.
      allowedPolicy: async (ctx, client, token) => {
        if (token.clientId !== client.clientId) {
          if (client.clientAuthMethod === 'none') return false;
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        }
        return true;
      },
    },
    dPoP: {
      enabled: true,
      nonceSecret: randomBytes(32),
      requireNonce: () => config.dpopNonceAtTokenEndpoint,
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf ?? undefined,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, indicator) => {
        if (indicator !== API_RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: API_SCOPES,
          audience: API_RESOURCE,
          accessTokenFormat: 'opaque',
          accessTokenTTL: config.ACCESS_TOKEN_TTL,
        };
      },
    },
    userinfo: { enabled: true },
    rpInitiatedLogout: { enabled: false },
  },
  enabledJWA: {
    dPoPSigningAlgValues: DPOP_ALGS,
  },
  responseTypes: ['code'],
  interactions: {
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  // PKCE is required for public clients (the oidc-provider default); other
  // clients may use it (the login helper always does).
  pkce: {
    required: (ctx, client) => client.clientAuthMethod === 'none',
  },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => config.ROTATE_REFRESH_TOKENS,
  clientBasedCORS: () => false,
  async renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
  ttl: {
    AccessToken: config.ACCESS_TOKEN_TTL,
    ClientCredentials: config.ACCESS_TOKEN_TTL,
    RefreshToken: config.REFRESH_TOKEN_TTL,
    AuthorizationCode: 60,
    BackchannelAuthenticationRequest: 600,
    DeviceCode: 600,
    Grant: Math.max(config.REFRESH_TOKEN_TTL, 86400),
    IdToken: 3600,
    Interaction: 600,
    PreAuthorizedCode: 600,
    Session: Math.max(config.REFRESH_TOKEN_TTL, 86400),
  },
});

// ---------------------------------------------------------------------------
// Event-based counters.

const isInternal = (ctx) => ctx?.get?.(INTERNAL_HEADER) === '1';

provider.on('grant.success', (ctx) => {
  if (isInternal(ctx)) return;
  const gty = ctx.oidc.params.grant_type;
  if (gty === 'authorization_code') counters.authorization_code_grants += 1;
  if (gty === 'client_credentials') counters.client_credentials_grants += 1;
  if (gty === 'refresh_token') {
    counters.refresh_grants += 1;
    if (ctx.oidc.entities.RotatedRefreshToken) counters.rotations += 1;
  }
});
provider.on('grant.error', (ctx, err) => {
  if (isInternal(ctx)) return;
  counters.token_errors += 1;
  if (err instanceof errors.InvalidGrant && err.error_detail === 'refresh token already used') {
    counters.reuse_detections += 1;
  }
  if (err instanceof errors.UseDpopNonce) counters.token_dpop_nonce_challenges += 1;
  log('grant.error', err.error, err.error_detail ?? err.error_description ?? '');
});
provider.on('grant.revoked', (ctx) => {
  if (isInternal(ctx)) return;
  counters.revoked_grants += 1;
});
provider.on('server_error', (ctx, err) => {
  logError('server_error', ctx.method, ctx.path, err);
});
for (const event of ['introspection.error', 'revocation.error', 'userinfo.error', 'authorization.error', 'discovery.error']) {
  provider.on(event, (ctx, err) => log(event, err.error, err.error_detail ?? err.error_description ?? ''));
}

// Koa middleware in front of the provider's router: request counters for the
// token, introspection and revocation endpoints, and optional pausing of
// token endpoint responses after the provider has processed them.

let pause = { ms: 0, remaining: Infinity };
const paused = new Set();

// Holding token requests BEFORE the provider sees them: a client killed while its
// request is held has sent its refresh token, but the server never processed it
// (the request is dropped when its connection is gone at release). This is how a
// test kills a process "inside a refresh" without losing a rotation: a response
// lost after the server rotated cannot be survived against reuse detection by any
// client, and is covered by the crate's own lost-response tests instead.
let holding = false;
const held = new Set();

// Resolves `true` when released with the client still connected, `false` when
// its connection closed while held (the request is then dropped unprocessed).
function holdUntilReleased(ctx) {
  return new Promise((resolve) => {
    const entry = { resolve, gone: false };
    const gone = () => { entry.gone = true; };
    ctx.req.socket.once('close', gone);
    ctx.res.once('close', gone);
    held.add(entry);
    counters.held_token_requests = held.size;
  });
}

// Lets the event loop see the close of connections that died just before the
// release (a client killed, then the release asked for) before deciding.
const RELEASE_GRACE_MS = 200;

function releaseHeld() {
  holding = false;
  const entries = [...held];
  held.clear();
  counters.held_token_requests = 0;
  setTimeout(() => {
    for (const entry of entries) entry.resolve(!entry.gone);
  }, RELEASE_GRACE_MS);
  return entries.length;
}

const CLIENT_AUTH_ENDPOINTS = new Set(['/token', '/token/introspection', '/token/revocation']);
const REGISTERED_AUTH_METHOD = new Map(CLIENTS.map((c) => [c.client_id, c.token_endpoint_auth_method]));

// oidc-provider accepts client_secret_basic and client_secret_post
// interchangeably for a client registered with either. With
// STRICT_CLIENT_AUTH (default) a client must use exactly its registered
// method, so that a test can tell which one a client library really used.
function presentedAuthMethod(ctx) {
  const form = new URLSearchParams(typeof ctx.req.body === 'string' ? ctx.req.body : '');
  const authz = ctx.get('authorization');
  let clientId = form.get('client_id') ?? undefined;
  let method = 'none';
  if (/^basic /i.test(authz)) {
    method = 'client_secret_basic';
    try {
      const decoded = Buffer.from(authz.slice(6).trim(), 'base64').toString('utf8');
      const id = decoded.slice(0, decoded.indexOf(':'));
      clientId = decodeURIComponent(id.replace(/\+/g, '%20'));
    } catch {
      return {};
    }
  } else if (form.has('client_secret')) {
    method = 'client_secret_post';
  } else if (form.has('client_assertion')) {
    method = 'jwt';
  }
  return { clientId, method };
}

provider.use(async (ctx, next) => {
  const internal = isInternal(ctx);
  const isToken = ctx.method === 'POST' && ctx.path === '/token';
  if (isToken && !internal) counters.token_requests += 1;
  if (config.STRICT_CLIENT_AUTH && ctx.method === 'POST' && CLIENT_AUTH_ENDPOINTS.has(ctx.path)) {
    const { clientId, method } = presentedAuthMethod(ctx);
    const registered = REGISTERED_AUTH_METHOD.get(clientId);
    const secretMethods = ['client_secret_basic', 'client_secret_post'];
    if (registered && secretMethods.includes(registered) && secretMethods.includes(method) && method !== registered) {
      ctx.status = 401;
      ctx.set('cache-control', 'no-store');
      ctx.body = {
        error: 'invalid_client',
        error_description: `client authentication failed: ${clientId} is registered for ${registered} but used ${method} (STRICT_CLIENT_AUTH)`,
      };
      if (method === 'client_secret_basic') {
        ctx.set('www-authenticate', `Basic realm="${issuer}", error="invalid_client", error_description="client authentication failed"`);
      }
      if (isToken && !internal) counters.token_errors += 1;
      log('strict client auth rejected', ctx.path, clientId, method);
      return;
    }
  }
  if (isToken && !internal && holding) {
    const connected = await holdUntilReleased(ctx);
    if (!connected || ctx.req.socket.destroyed) {
      counters.dropped_token_requests += 1;
      log('dropped a held token request whose client went away');
      ctx.status = 499;
      ctx.body = '';
      return;
    }
  }
  await next();
  if (internal || ctx.method !== 'POST') return;
  if (ctx.path === '/token/introspection' && ctx.status === 200) counters.introspections += 1;
  if (ctx.path === '/token/revocation' && ctx.status === 200) counters.revocations += 1;
  if (isToken && pause.ms > 0 && pause.remaining > 0) {
    pause.remaining -= 1;
    await new Promise((resolve) => {
      const entry = { resolve };
      entry.timer = setTimeout(() => {
        paused.delete(entry);
        resolve();
      }, pause.ms);
      paused.add(entry);
    });
  }
});

function resumeAll() {
  pause = { ms: 0, remaining: Infinity };
  const n = paused.size;
  for (const entry of paused) {
    clearTimeout(entry.timer);
    entry.resolve();
  }
  paused.clear();
  return n;
}

const api = createResourceServer({
  provider,
  issuer,
  counters,
  requireNonce: config.dpopNonceAtApi,
});

// ---------------------------------------------------------------------------
// /test/ endpoints.

async function readJsonBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (!text) return {};
  try {
    const parsed = JSON.parse(text);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed;
  } catch {
    // fall through
  }
  throw new HttpError(400, 'invalid_request', 'request body must be a JSON object');
}

function sendJson(res, status, body, headers = {}) {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

async function findGrantIdForToken(value) {
  const { RefreshToken, AccessToken, AuthorizationCode } = provider;
  for (const model of [RefreshToken, AccessToken, AuthorizationCode]) {
    const token = await model.find(value, { ignoreExpiration: true });
    if (token?.grantId) return token.grantId;
  }
  return undefined;
}

async function revokeGrant(grantId) {
  const { AccessToken, RefreshToken, AuthorizationCode, Grant } = provider;
  await Promise.all([
    AccessToken.revokeByGrantId(grantId),
    RefreshToken.revokeByGrantId(grantId),
    AuthorizationCode.revokeByGrantId(grantId),
  ]);
  await Grant.adapter.destroy(grantId);
}

async function expireAccessTokens() {
  let n = 0;
  for (const model of ['AccessToken', 'ClientCredentials']) {
    const adapterForModel = provider[model].adapter;
    for (const key of store.keysOf(model)) {
      await adapterForModel.destroy(key.slice(model.length + 1));
      n += 1;
    }
  }
  return n;
}

const testRoutes = {
  'POST /test/login': async (req, res, url) => {
    const body = await readJsonBody(req);
    const q = url.searchParams;
    const clientId = q.get('client') ?? body.client;
    if (!clientId) throw new HttpError(400, 'invalid_request', 'missing ?client=');
    const result = await login({
      issuer,
      clientId,
      scope: q.get('scope') ?? body.scope ?? 'openid offline_access',
      user: q.get('user') ?? body.user,
      dpopJwk: body.dpop_jwk,
      alg: q.get('alg') ?? body.alg ?? 'ES256',
      resource: q.get('resource') ?? body.resource,
    });
    if (result.status === 200) counters.logins += 1;
    const out = result.generatedDpopKey && result.status === 200
      ? { ...result.body, test_dpop_jwk: result.dpopKey.privateJwk }
      : result.body;
    const headers = {};
    const nonce = result.headers.get('dpop-nonce');
    if (nonce) headers['dpop-nonce'] = nonce;
    sendJson(res, result.status, out, headers);
  },
  'GET /test/counters': async (req, res) => sendJson(res, 200, counters),
  'POST /test/reset-counters': async (req, res) => {
    resetCounters();
    counters.held_token_requests = held.size;
    sendJson(res, 200, counters);
  },
  'POST /test/revoke-grant': async (req, res, url) => {
    const token = url.searchParams.get('token') ?? (await readJsonBody(req)).token;
    if (!token) throw new HttpError(400, 'invalid_request', 'missing ?token=');
    const grantId = await findGrantIdForToken(token);
    if (!grantId) throw new HttpError(404, 'not_found', 'no refresh token, access token or code with a grant matches');
    await revokeGrant(grantId);
    counters.admin_grant_revocations += 1;
    sendJson(res, 200, { revoked: true, grant_id: grantId });
  },
  'POST /test/expire-access-tokens': async (req, res) => {
    sendJson(res, 200, { expired: await expireAccessTokens() });
  },
  'POST /test/pause-token-responses': async (req, res, url) => {
    const ms = Number(url.searchParams.get('ms') ?? '30000');
    const count = url.searchParams.has('count') ? Number(url.searchParams.get('count')) : Infinity;
    if (!Number.isInteger(ms) || ms < 0) throw new HttpError(400, 'invalid_request', 'ms must be a non-negative integer');
    if (count !== Infinity && (!Number.isInteger(count) || count < 1)) {
      throw new HttpError(400, 'invalid_request', 'count must be a positive integer');
    }
    pause = { ms, remaining: count };
    sendJson(res, 200, { paused_ms: ms, count: count === Infinity ? null : count });
  },
  'POST /test/hold-token-requests': async (req, res) => {
    holding = true;
    sendJson(res, 200, { holding: true });
  },
  'POST /test/release-token-requests': async (req, res) => {
    sendJson(res, 200, { released: releaseHeld() });
  },
  'POST /test/resume': async (req, res) => {
    sendJson(res, 200, { released: resumeAll() });
  },
  'POST /test/rotate-api-dpop-nonce': async (req, res) => {
    sendJson(res, 200, { nonce: api.rotateNonce() });
  },
  'GET /test/config': async (req, res) => {
    sendJson(res, 200, {
      issuer,
      port,
      access_token_ttl: config.ACCESS_TOKEN_TTL,
      refresh_token_ttl: config.REFRESH_TOKEN_TTL,
      rotate_refresh_tokens: config.ROTATE_REFRESH_TOKENS,
      dpop_require_nonce: { token_endpoint: config.dpopNonceAtTokenEndpoint, api: config.dpopNonceAtApi },
      max_lifetime_seconds: config.MAX_LIFETIME_SECONDS,
      api_resource: API_RESOURCE,
      api_scopes: API_SCOPES,
      clients: CLIENTS.map((c) => c.client_id),
    });
  },
};

// ---------------------------------------------------------------------------
// Router: /test/*, /api/*, /interaction/:uid, else the provider.

const providerCallback = provider.callback();

handler = async (req, res) => {
  const url = new URL(req.url, issuer);
  const { pathname } = url;
  try {
    if (pathname === '/test' || pathname.startsWith('/test/')) {
      const route = testRoutes[`${req.method} ${pathname}`];
      if (!route) {
        const known = Object.keys(testRoutes).some((k) => k.endsWith(` ${pathname}`));
        sendJson(res, known ? 405 : 404, { error: known ? 'method_not_allowed' : 'not_found' });
        return;
      }
      await route(req, res, url);
      return;
    }
    if (pathname === '/api' || pathname.startsWith('/api/')) {
      await api.handle(req, res);
      return;
    }
    if (req.method === 'POST' && CLIENT_AUTH_ENDPOINTS.has(pathname) && /^application\/x-www-form-urlencoded\b/i.test(req.headers['content-type'] ?? '')) {
      // Read the form here so that the strict client authentication check
      // can see it; oidc-provider then parses req.body (a string) itself.
      const chunks = [];
      let size = 0;
      for await (const chunk of req) {
        size += chunk.length;
        if (size > 64 * 1024) {
          sendJson(res, 413, { error: 'invalid_request', error_description: 'request body too large' });
          return;
        }
        chunks.push(chunk);
      }
      req.body = Buffer.concat(chunks).toString('utf8');
    }
    if (req.method === 'GET' && /^\/interaction\/[^/]+$/.test(pathname)) {
      await handleInteraction(provider, req, res);
      return;
    }
    providerCallback(req, res);
  } catch (err) {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (err instanceof HttpError) {
      sendJson(res, err.status, err.body);
    } else if (err instanceof errors.OIDCProviderError) {
      sendJson(res, err.statusCode ?? 400, { error: err.error, error_description: err.error_description });
    } else {
      logError('internal error', req.method, pathname, err);
      sendJson(res, 500, { error: 'server_error', error_description: String(err?.message ?? err) });
    }
  }
};

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
log(`ready at ${issuer}`);
