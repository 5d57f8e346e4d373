// In-memory storage adapter for oidc-provider.
//
// Same semantics as oidc-provider's built-in MemoryAdapter (a shared store,
// a per-grant index used by revokeByGrantId, consume() marking the stored
// payload), but backed by an unbounded Map instead of the built-in adapter's
// 1000-entry LRU, so that long test runs never see tokens silently evicted.
// Also exposes the store so that the /test/ endpoints can enumerate records.

const grantable = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

const epochTime = () => Math.floor(Date.now() / 1000);

export class Store {
  #map = new Map();

  get(key) {
    const entry = this.#map.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      this.#map.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key, value, expiresInSeconds) {
    const expiresAt = typeof expiresInSeconds === 'number'
      ? Date.now() + expiresInSeconds * 1000
      : undefined;
    this.#map.set(key, { value, expiresAt });
  }

  delete(key) {
    this.#map.delete(key);
  }

  // keys (live entries only) starting with `${model}:`
  keysOf(model) {
    const prefix = `${model}:`;
    const keys = [];
    for (const key of this.#map.keys()) {
      if (key.startsWith(prefix) && this.get(key) !== undefined) keys.push(key);
    }
    return keys;
  }

  sweep() {
    const now = Date.now();
    for (const [key, entry] of this.#map) {
      if (entry.expiresAt !== undefined && entry.expiresAt <= now) this.#map.delete(key);
    }
  }

  get size() {
    return this.#map.size;
  }
}

export function createAdapterFactory({ clockTolerance = 0 } = {}) {
  const store = new Store();
  const sweeper = setInterval(() => store.sweep(), 30_000);
  sweeper.unref();

  const grantKey = (id) => `grant:${id}`;
  const sessionUidKey = (uid) => `sessionUid:${uid}`;
  const userCodeKey = (code) => `userCode:${code}`;

  class InteropMemoryAdapter {
    constructor(model) {
      this.model = model;
    }

    key(id) {
      return `${this.model}:${id}`;
    }

    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      const ttl = typeof expiresIn === 'number' ? expiresIn + clockTolerance : undefined;

      if (this.model === 'Session') {
        store.set(sessionUidKey(payload.uid), id, ttl);
      }

      const { grantId, userCode } = payload;
      if (grantable.has(this.model) && grantId) {
        const members = store.get(grantKey(grantId)) ?? new Set();
        members.add(key);
        store.set(grantKey(grantId), members);
      }

      if (userCode) {
        store.set(userCodeKey(userCode), id, ttl);
      }

      store.set(key, payload, ttl);
    }

    async find(id) {
      return store.get(this.key(id));
    }

    async findByUid(uid) {
      const id = store.get(sessionUidKey(uid));
      return id === undefined ? undefined : this.find(id);
    }

    async findByUserCode(userCode) {
      const id = store.get(userCodeKey(userCode));
      return id === undefined ? undefined : this.find(id);
    }

    async consume(id) {
      const payload = store.get(this.key(id));
      if (payload) payload.consumed = epochTime();
    }

    async destroy(id) {
      const key = this.key(id);
      const payload = store.get(key);
      store.delete(key);
      if (payload?.grantId && grantable.has(this.model)) {
        store.get(grantKey(payload.grantId))?.delete(key);
      }
    }

    // Deletes every grant-bound record (of any model) that belongs to grantId,
    // like the built-in MemoryAdapter does.
    async revokeByGrantId(grantId) {
      const members = store.get(grantKey(grantId));
      if (members) {
        for (const key of members) store.delete(key);
        store.delete(grantKey(grantId));
      }
    }
  }

  const factory = (model) => new InteropMemoryAdapter(model);
  return { factory, store };
}
