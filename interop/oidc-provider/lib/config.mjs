// Runtime configuration: environment variables, overridable by CLI flags
// (`--access-token-ttl 2` or `--access-token-ttl=2`; flag name = env var name
// lower-cased with `_` replaced by `-`).

const SPEC = {
  PORT: { type: 'int', default: 0, min: 0, max: 65535 },
  ACCESS_TOKEN_TTL: { type: 'int', default: 60, min: 1 },
  REFRESH_TOKEN_TTL: { type: 'int', default: 86400, min: 1 },
  MAX_LIFETIME_SECONDS: { type: 'int', default: 900, min: 1 },
  DPOP_REQUIRE_NONCE: { type: 'enum', default: '0', values: ['0', '1', 'token', 'api'] },
  ROTATE_REFRESH_TOKENS: { type: 'bool', default: true },
  STRICT_CLIENT_AUTH: { type: 'bool', default: true },
  EXIT_ON_STDIN_CLOSE: { type: 'bool', default: true },
  VERBOSE: { type: 'bool', default: false },
};

function parseValue(name, raw) {
  const spec = SPEC[name];
  switch (spec.type) {
    case 'int': {
      if (!/^\d+$/.test(raw)) throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
      const n = Number(raw);
      if (n < spec.min || (spec.max !== undefined && n > spec.max)) {
        throw new Error(`${name} out of range: ${n}`);
      }
      return n;
    }
    case 'bool':
      if (['1', 'true', 'yes', 'on'].includes(raw.toLowerCase())) return true;
      if (['0', 'false', 'no', 'off', ''].includes(raw.toLowerCase())) return false;
      throw new Error(`${name} must be 0 or 1, got ${JSON.stringify(raw)}`);
    case 'enum': {
      const v = raw.toLowerCase() === 'true' ? '1' : raw.toLowerCase() === 'false' ? '0' : raw.toLowerCase();
      if (!spec.values.includes(v)) throw new Error(`${name} must be one of ${spec.values.join(', ')}, got ${JSON.stringify(raw)}`);
      return v;
    }
    default:
      throw new Error('unreachable');
  }
}

export function loadConfig(argv = process.argv.slice(2), env = process.env) {
  const raw = {};
  for (const name of Object.keys(SPEC)) {
    if (env[name] !== undefined) raw[name] = env[name];
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      raw.HELP = true;
      continue;
    }
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(arg);
    if (!m) throw new Error(`unexpected argument ${JSON.stringify(arg)}`);
    const name = m[1].toUpperCase().replaceAll('-', '_');
    if (!(name in SPEC)) throw new Error(`unknown flag --${m[1]}`);
    let value = m[2];
    if (value === undefined) {
      if (SPEC[name].type === 'bool' && (i + 1 >= argv.length || argv[i + 1].startsWith('--'))) {
        value = '1';
      } else {
        value = argv[++i];
        if (value === undefined) throw new Error(`flag --${m[1]} needs a value`);
      }
    }
    raw[name] = value;
  }

  const config = { help: !!raw.HELP };
  for (const [name, spec] of Object.entries(SPEC)) {
    config[name] = raw[name] !== undefined ? parseValue(name, String(raw[name])) : spec.default;
  }
  config.dpopNonceAtTokenEndpoint = config.DPOP_REQUIRE_NONCE === '1' || config.DPOP_REQUIRE_NONCE === 'token';
  config.dpopNonceAtApi = config.DPOP_REQUIRE_NONCE === '1' || config.DPOP_REQUIRE_NONCE === 'api';
  return config;
}

export const USAGE = `usage: node server.mjs [--port N] [--access-token-ttl SECONDS] [--refresh-token-ttl SECONDS]
                      [--max-lifetime-seconds SECONDS] [--dpop-require-nonce 0|1|token|api]
                      [--rotate-refresh-tokens 0|1] [--strict-client-auth 0|1]
                      [--exit-on-stdin-close 0|1] [--verbose]
Every flag can also be given as an environment variable (PORT, ACCESS_TOKEN_TTL, ...).
Prints one JSON line {"issuer":...,"port":...} on stdout when ready. See README.md.
`;
