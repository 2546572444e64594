#!/usr/bin/env node
// browser.js drives headless Chromium for wsgate's end-to-end tests.
//
//   node browser.js [--trust-spki=HASH]... SCENARIO.js [ARGS...]
//
// --trust-spki=HASH (base64 of the SHA-256 of a certificate's
// SubjectPublicKeyInfo, 44 characters) makes Chromium accept TLS server
// certificates with that public key, such as a test's own; without it, no
// certificate but a publicly trusted one is accepted. See chromiumArgs.
//
// SCENARIO.js (resolved from the working directory) is a CommonJS module
// exporting `async (page, args) => result`: it gets a fresh Playwright page
// and the remaining command-line arguments, drives the page, and returns
// anything JSON can encode. browser.js prints that result as one JSON line on
// stdout and exits 0; any failure (a thrown error, a page crash, the overall
// timeout) is printed on stderr and exits 1. The page's console messages and
// uncaught errors go to stderr so a failing test can show them.
//
// The browser is the Debian package's /usr/bin/chromium (tests/e2e/setup.sh
// installs it); playwright-core is only the driver and never downloads one.
// Environment: E2E_BROWSER_TIMEOUT_MS overrides the 60 s overall limit.
'use strict';

const path = require('path');
const { chromium } = require('playwright-core');

const timeoutMs = Number(process.env.E2E_BROWSER_TIMEOUT_MS) || 60000;

// Chromium runs as root on CI (needs --no-sandbox) on a machine with no
// outside network: the background services it would start (updates, sync,
// QUIC probes...) only fail noisily, so they are turned off. ws.repo is the
// host name of the nginx-style host route test; it resolves to the loopback
// so the Host header the gateway sees is ws.repo; untrusted.repo too, for
// the wss:// test's certificate that must be refused. --no-proxy-server
// keeps an http_proxy of the environment from sending 127.0.0.1 traffic
// elsewhere.
const chromiumArgs = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
  '--no-proxy-server',
  '--host-resolver-rules=MAP ws.repo 127.0.0.1, MAP untrusted.repo 127.0.0.1',
];

// trustArgs turns the --trust-spki hashes into Chromium's flag. The wss://
// tests' certificates come from a CA made by the test, which Chromium does
// not know. --ignore-certificate-errors-spki-list=H1,H2 accepts a chain
// only if one of its certificates has one of those public keys: the test
// server's key is trusted and any other certificate is still refused, so
// a test still fails on a certificate the gateway should not have served.
// --ignore-certificate-errors (or Playwright's ignoreHTTPSErrors) would
// accept any certificate at all, and so prove nothing about TLS. Chromium
// honours the SPKI list only with --user-data-dir, which Playwright's
// launch() always passes (its temporary profile).
function trustArgs(hashes) {
  for (const h of hashes) {
    if (!/^[A-Za-z0-9+/]{43}=$/.test(h)) {
      throw new Error(`--trust-spki=${h}: want base64 of a SHA-256 (44 characters)`);
    }
  }
  return hashes.length ? ['--ignore-certificate-errors-spki-list=' + hashes.join(',')] : [];
}

function log(...parts) {
  process.stderr.write(parts.join(' ') + '\n');
}

async function main() {
  let argv = process.argv.slice(2);
  const spki = [];
  while (argv.length && argv[0].startsWith('--trust-spki=')) {
    spki.push(argv[0].slice('--trust-spki='.length));
    argv = argv.slice(1);
  }
  const [scenarioPath, ...args] = argv;
  if (!scenarioPath || scenarioPath.startsWith('--')) {
    throw new Error('usage: node browser.js [--trust-spki=HASH]... SCENARIO.js [ARGS...]');
  }
  const scenario = require(path.resolve(scenarioPath));
  if (typeof scenario !== 'function') {
    throw new Error(`${scenarioPath} must export async (page, args) => result`);
  }

  // launch() gives the browser a fresh temporary profile (user data dir)
  // of its own and deletes it on close.
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: chromiumArgs.concat(trustArgs(spki)),
    timeout: 30000,
  });
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    // Bounded waits: no Playwright call may wait longer than the budget.
    page.setDefaultTimeout(Math.min(timeoutMs, 30000));
    page.on('console', (m) => log(`[page ${m.type()}]`, m.text()));
    page.on('pageerror', (e) => log('[page error]', e && e.stack ? e.stack : String(e)));
    page.on('requestfailed', (r) => log('[request failed]', r.url(), r.failure() ? r.failure().errorText : ''));
    const result = await scenario(page, args);
    process.stdout.write(JSON.stringify(result === undefined ? null : result) + '\n');
  } finally {
    await browser.close().catch(() => {});
  }
}

const timer = setTimeout(() => {
  log(`browser.js: overall timeout of ${timeoutMs} ms exceeded`);
  process.exit(1);
}, timeoutMs);

main().then(
  () => {
    clearTimeout(timer);
    process.exit(0);
  },
  (err) => {
    log('browser.js:', err && err.stack ? err.stack : String(err));
    process.exit(1);
  },
);
