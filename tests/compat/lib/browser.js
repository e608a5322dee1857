'use strict';
// A real browser for the example inbox page: playwright-core driving the Chromium that
// Debian's `chromium` package installs (scripts/test installs it when it may). Playwright
// never downloads a browser here: it is always given the executable.
//
// Also the small things every browser test needs: polling with a message that says what
// was last seen, full-page screenshots under test-output/browser/, and a record of what
// went wrong inside a page (console errors, uncaught exceptions, failed requests) to put
// into a failure message.

const fs = require('node:fs');
const path = require('node:path');
const { sleep } = require('./server');

const DEFAULT_CHROMIUM = '/usr/bin/chromium';

// Headless in a container: no sandbox (often no user namespaces), no GPU, and nothing that
// would make the browser talk to Google's services while the test runs.
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];

const SCREENSHOT_DIR = path.resolve(__dirname, '..', 'test-output', 'browser');

/** The browser to drive: $CHROMIUM_PATH, else Debian's /usr/bin/chromium. */
function chromiumPath() {
  return process.env.CHROMIUM_PATH || DEFAULT_CHROMIUM;
}

/** Why the browser tests cannot run (a skip message that says how to fix it), or null. */
function chromiumMissing() {
  const bin = chromiumPath();
  try {
    fs.accessSync(bin, fs.constants.X_OK);
    return null;
  } catch {
    return (
      `no Chromium at ${bin}: install Debian's package (\`sudo apt-get install -y --no-install-recommends chromium\`; ` +
      'scripts/test does it when it runs as root or with passwordless sudo) or point CHROMIUM_PATH at a Chromium binary'
    );
  }
}

/** Launches headless Chromium through playwright-core. */
async function launchChromium() {
  // Required here, not at the top: a machine without Chromium skips before loading it.
  const { chromium } = require('playwright-core');
  return chromium.launch({ executablePath: chromiumPath(), headless: true, args: CHROMIUM_ARGS });
}

/**
 * Polls `fn` (sync or async) until it answers truthy and answers that value. `fn` may
 * throw while the page is still changing; the last value or error goes into the timeout
 * message, which names `what`, so a failure says what the page showed instead.
 */
async function until(fn, { timeout = 10000, interval = 50, what = 'condition', seen } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  let lastError;
  for (;;) {
    try {
      last = await fn();
      lastError = null;
      if (last) return last;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) break;
    await sleep(interval);
  }
  const details = [];
  if (lastError) details.push(`last error: ${lastError.message.split('\n')[0]}`);
  else if (!seen) details.push(`last value: ${JSON.stringify(last)}`);
  if (seen) {
    try {
      details.push(await seen());
    } catch (e) {
      details.push(`(could not read the page: ${e.message.split('\n')[0]})`);
    }
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}; ${details.join('; ')}`);
}

/**
 * Records what goes wrong inside a page: console errors and warnings, uncaught
 * exceptions, requests that failed or answered 5xx. `problems()` answers them as lines.
 */
function watchPage(page, label) {
  const lines = [];
  const keep = (line) => {
    lines.push(`[${label}] ${line}`);
    if (lines.length > 200) lines.shift();
  };
  page.on('console', (msg) => {
    if (msg.type() !== 'error' && msg.type() !== 'warning') return;
    // Chromium logs every 4xx as a console error; the 401s (GET /api/me before logging
    // in, a wrong password) are expected, and a real failure shows in what the test saw.
    if (/^Failed to load resource: the server responded with a status of 4\d\d/.test(msg.text())) return;
    keep(`console.${msg.type()}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => keep(`uncaught: ${err.message}`));
  page.on('requestfailed', (req) => keep(`request failed: ${req.method()} ${req.url()} (${req.failure() && req.failure().errorText})`));
  page.on('response', (res) => {
    if (res.status() >= 500) keep(`HTTP ${res.status()}: ${res.request().method()} ${res.url()}`);
  });
  return { problems: () => lines.slice() };
}

/**
 * The lines of a server log worth reading after a failure: every warning and error, then
 * the last `tail` lines, without colours, each cut to `width` characters.
 */
function logExcerpt(log, { tail = 15, width = 400 } = {}) {
  const lines = log.replace(/\x1b\[[0-9;]*m/g, '').split('\n').filter((l) => l.trim());
  const cut = (l) => (l.length > width ? `${l.slice(0, width)}…` : l);
  const problems = lines.filter((l) => /\b(WARN|ERROR)\b/.test(l)).slice(-20);
  return { problems: problems.map(cut), tail: lines.slice(-tail).map(cut) };
}

/** Writes a full-page screenshot to test-output/browser/<name>.png; answers its path. */
async function screenshot(page, name) {
  fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, `${name.replace(/[^a-zA-Z0-9._-]+/g, '-')}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

module.exports = {
  CHROMIUM_ARGS,
  SCREENSHOT_DIR,
  chromiumPath,
  chromiumMissing,
  launchChromium,
  until,
  watchPage,
  logExcerpt,
  screenshot,
};
