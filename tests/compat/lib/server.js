'use strict';
// Starts the realtime-server binary on a free port for one test file and stops it
// afterwards. Nothing here talks the protocol: tests drive the server through the
// official clients (see clients.js).

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

// tests/compat/lib -> repository root
const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');

/**
 * Where a workspace binary is: the file named by `envVar`, then <repo>/target/debug,
 * then $CARGO_TARGET_DIR/debug.
 */
function findBinary(name = 'realtime-server', envVar = 'REALTIME_SERVER_BIN') {
  const explicit = process.env[envVar];
  if (explicit) {
    try {
      fs.accessSync(explicit, fs.constants.X_OK);
      return explicit;
    } catch {
      throw new Error(`${envVar}=${explicit} is not an executable file; build it with \`cargo build -p ${name}\`.`);
    }
  }
  const candidates = [path.join(REPO_ROOT, 'target', 'debug', name)];
  if (process.env.CARGO_TARGET_DIR) {
    candidates.push(path.resolve(process.env.CARGO_TARGET_DIR, 'debug', name));
  }
  const found = firstExecutable(candidates);
  if (found) return found;
  throw new Error(
    `${name} binary not found (tried ${candidates.join(', ')}). Build it with ` +
      `\`cargo build -p ${name}\` or set ${envVar}.`
  );
}

/** The first of `candidates` that is an executable file, or undefined. */
function firstExecutable(candidates) {
  return candidates.find((candidate) => {
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * Appends what `proc` writes (stdout and stderr) to `holder.output`, keeping
 * about its last `limit` characters: enough to explain a failure, never a
 * process's whole life in memory.
 */
function keepOutput(proc, holder, limit = 200000) {
  const keep = (chunk) => {
    holder.output += chunk.toString();
    if (holder.output.length > limit) holder.output = holder.output.slice(-limit / 2);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
}

/** A TCP port nobody listens on right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Whether something accepts TCP connections on host:port now. */
function canConnect(port, host = '127.0.0.1') {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

const randomId = (prefix) => prefix + crypto.randomBytes(6).toString('hex');

/**
 * Starts a server. Options: clientEvents (bool), activityTimeout (s),
 * webhookUrl, webhookLeaveDelay (s), args (extra flags), appId/key/secret,
 * port (listen on this one, e.g. to restart a server where it was; default: a
 * free one), env (extra environment variables).
 * Answers { port, appId, key, secret, host, proc, logs(), stop(), signal(), exited }.
 */
async function startServer(options = {}) {
  const bin = findBinary();
  const appId = options.appId || String(100000 + crypto.randomInt(800000));
  const key = options.key || randomId('key');
  const secret = options.secret || randomId('secret');
  let lastError;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = options.port || (await freePort());
    const args = ['--app-id', appId, '--key', key, '--secret', secret, '--host', '127.0.0.1', '--port', String(port)];
    if (options.clientEvents) args.push('--client-events');
    if (options.activityTimeout !== undefined) args.push('--activity-timeout', String(options.activityTimeout));
    if (options.webhookUrl) args.push('--webhook-url', options.webhookUrl);
    if (options.webhookLeaveDelay !== undefined) args.push('--webhook-leave-delay', String(options.webhookLeaveDelay));
    args.push('--workers', String(options.workers || 2));
    if (options.args) args.push(...options.args);

    const proc = spawn(bin, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn', ...(options.env || {}) },
    });
    const out = { output: '' };
    keepOutput(proc, out);
    let exitInfo = null;
    const exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        exitInfo = { code, signal };
        resolve(exitInfo);
      });
    });

    const deadline = Date.now() + 10000;
    let up = false;
    while (Date.now() < deadline && !exitInfo) {
      if (await canConnect(port)) {
        up = true;
        break;
      }
      await sleep(20);
    }
    if (up && !exitInfo) {
      const server = {
        bin,
        host: '127.0.0.1',
        port,
        appId,
        key,
        secret,
        proc,
        exited,
        logs: () => out.output,
        get running() {
          return exitInfo === null;
        },
        /** Sends a signal without waiting. */
        signal(sig) {
          if (exitInfo === null) proc.kill(sig);
        },
        /** Kills the server (SIGKILL unless told otherwise) and waits for it to exit. */
        async stop(sig = 'SIGKILL') {
          if (exitInfo !== null) return exitInfo;
          proc.kill(sig);
          const timer = setTimeout(() => proc.kill('SIGKILL'), 3000);
          const info = await exited;
          clearTimeout(timer);
          return info;
        },
      };
      return server;
    }
    lastError = new Error(
      `realtime-server did not start on port ${port} (exit ${JSON.stringify(exitInfo)}):\n${out.output}`
    );
    if (!exitInfo) {
      proc.kill('SIGKILL');
      await exited;
    }
    // A fixed port may still be held for a moment (e.g. by the server just killed there).
    if (options.port) await sleep(200);
  }
  throw lastError;
}

module.exports = {
  startServer, findBinary, firstExecutable, keepOutput, canConnect, freePort, sleep, REPO_ROOT,
};
