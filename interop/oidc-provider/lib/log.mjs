// Keeps stdout reserved for the single "ready" JSON line.
//
// oidc-provider prints notices through console.info (stdout) and warnings
// through console.warn, e.g. the "Unsupported runtime" warning on Node 20.
// Everything is routed to stderr; console.log/info/warn/debug are dropped
// unless verbose logging is on. console.error always reaches stderr.

import { format } from 'node:util';

let verbose = false;

const toStderr = (...args) => {
  try {
    process.stderr.write(`${format(...args)}\n`);
  } catch {
    // stderr gone (parent died): nothing useful to do.
  }
};
const maybe = (...args) => {
  if (verbose) toStderr(...args);
};

console.log = maybe;
console.info = maybe;
console.warn = maybe;
console.debug = maybe;
console.trace = maybe;
console.error = toStderr;

// A closed pipe must not crash the process through an unhandled 'error'.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', () => {});
}

export function setVerbose(value) {
  verbose = !!value;
}

export const log = (...args) => maybe('[oidc-interop]', ...args);
export const logError = (...args) => toStderr('[oidc-interop]', ...args);
