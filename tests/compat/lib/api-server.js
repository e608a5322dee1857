'use strict';
// Starts the api-server binary (the inbox API with its embedded Pusher-protocol server)
// for one test file on a free port with a fresh SQLite database, and stops it
// afterwards. Before serving it runs `api-server demo` (team "Demo Team", alice and bob,
// contacts 1..3) and creates a second team with one user through the CLI, so tests can
// check that one team never reaches another's channels.
//
// Realtime is driven only through pusher-js (the Node build) configured from
// GET /api/realtime/config, with the bearer token carried by pusher-js's own ajax auth
// transport (`channelAuthorization.headers` / `userAuthentication.headers`).

const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const PusherJS = require('pusher-js');
const { findBinary, keepOutput, freePort, sleep, REPO_ROOT } = require('./server');
const { releaseSockets } = require('./clients');

PusherJS.logToConsole = false;

const PASSWORD = 'password123';
const OTHER_TEAM = { name: 'Other Team', phone: '+14155550199' };
const OTHER_USER = { email: 'eve@other.example.com', name: 'Eve Other' };

/** Where the binary is: $API_SERVER_BIN, then <repo>/target, then $CARGO_TARGET_DIR. */
function findApiServerBinary() {
  return findBinary('api-server', 'API_SERVER_BIN');
}

/**
 * The environment the binary runs with: the caller's, minus anything that would point it
 * at hosted Pusher, real Twilio or another database, plus `extra`.
 */
function serverEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(PUSHER_|NEXT_PUBLIC_PUSHER_|TWILIO_|DATABASE_URL$|HOST$|PORT$|APP_URL$|PUBLIC_URL$)/.test(k)) continue;
    env[k] = v;
  }
  env.RUST_LOG = process.env.RUST_LOG || 'warn';
  return { ...env, ...extra };
}

/** Runs one CLI command; answers its trimmed stdout (the new id). */
function cli(bin, args, env, cwd) {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { env, cwd, timeout: 30000 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`api-server ${args.join(' ')} failed (${err.code}): ${stderr}${stdout}`));
        return;
      }
      const lines = stdout.split('\n').map((l) => l.trim()).filter(Boolean);
      resolve(lines[lines.length - 1]);
    });
  });
}

/** Tracks the sockets of a pusher-js client so their faye close timers can be released. */
function trackSockets(client) {
  client.__sockets = [];
  client.connection.bind('state_change', ({ current }) => {
    const socket =
      client.connection.connection && client.connection.connection.transport
        ? client.connection.connection.transport.socket
        : null;
    if (current === 'connected' && socket && !client.__sockets.includes(socket)) client.__sockets.push(socket);
  });
}

class ApiServer {
  constructor(fields) {
    Object.assign(this, fields);
    this.clients = [];
    this._config = null;
  }

  /**
   * Starts one api-server (demo data + a second team) and waits for /api/health.
   * Options:
   *  env: extra environment variables for the serving process (not the setup CLI
   *       commands), either an object or ({ port, base }) => object, called once
   *       the port is chosen (e.g. PUBLIC_URL = base). They are applied after the
   *       inherited environment was cleaned, so TWILIO_* / PUBLIC_URL given here stay.
   */
  static async start({ env: extraEnv } = {}) {
    const bin = findApiServerBinary();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'api-server-compat-'));
    const databaseUrl = path.join(dir, 'inbox.sqlite');
    // cwd is the temp dir so that no .env from the repository is picked up.
    const baseEnv = serverEnv({ DATABASE_URL: databaseUrl });
    try {
      const teamId = await cli(bin, ['demo'], baseEnv, dir);
      const otherTeamId = await cli(
        bin,
        ['team', 'create', '--name', OTHER_TEAM.name, '--phone-number', OTHER_TEAM.phone],
        baseEnv,
        dir
      );
      const otherUserId = await cli(
        bin,
        ['user', 'create', '--team', otherTeamId, '--email', OTHER_USER.email, '--name', OTHER_USER.name, '--password', PASSWORD],
        baseEnv,
        dir
      );

      let lastError;
      for (let attempt = 0; attempt < 5; attempt++) {
        const port = await freePort();
        const base = `http://127.0.0.1:${port}`;
        const extra = typeof extraEnv === 'function' ? extraEnv({ port, base }) : extraEnv;
        const env = { ...baseEnv, HOST: '127.0.0.1', PORT: String(port), ...(extra || {}) };
        const proc = spawn(bin, [], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
        const out = { output: '' };
        keepOutput(proc, out);
        let exitInfo = null;
        const exited = new Promise((resolve) => {
          proc.once('exit', (code, signal) => {
            exitInfo = { code, signal };
            resolve(exitInfo);
          });
        });
        const deadline = Date.now() + 15000;
        let up = false;
        while (Date.now() < deadline && !exitInfo) {
          try {
            const res = await fetch(base + '/api/health');
            if (res.ok) {
              up = true;
              break;
            }
          } catch {
            // not listening yet
          }
          await sleep(30);
        }
        if (up && !exitInfo) {
          return new ApiServer({
            bin,
            dir,
            databaseUrl,
            port,
            base,
            env,
            proc,
            exited,
            logs: () => out.output,
            exitInfo: () => exitInfo,
            teamId,
            otherTeamId,
            otherUserId,
          });
        }
        lastError = new Error(`api-server did not become healthy on port ${port} (exit ${JSON.stringify(exitInfo)}):\n${out.output}`);
        if (!exitInfo) {
          proc.kill('SIGKILL');
          await exited;
        }
      }
      throw lastError;
    } catch (e) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  /**
   * One HTTP call. Options: token (bearer), body (JSON), headers. Answers
   * { status, body } with body parsed as JSON when it is JSON.
   */
  async request(method, urlPath, { token, body, headers = {} } = {}) {
    const h = { ...headers };
    if (token) h.Authorization = `Bearer ${token}`;
    let payload;
    if (body !== undefined) {
      h['Content-Type'] = h['Content-Type'] || 'application/json';
      payload = typeof body === 'string' ? body : JSON.stringify(body);
    }
    const res = await fetch(this.base + urlPath, { method, headers: h, body: payload });
    const text = await res.text();
    let parsed = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // not JSON
    }
    return { status: res.status, body: parsed, headers: res.headers };
  }

  /** Logs in; answers { token, user }. */
  async login(email, password = PASSWORD) {
    const res = await this.request('POST', '/api/auth/login', { body: { email, password } });
    if (res.status !== 200) throw new Error(`login ${email} answered ${res.status}: ${JSON.stringify(res.body)}`);
    return res.body;
  }

  /**
   * Runs `api-server ARGS…` against this server's database (its environment, its
   * directory), as an operator would next to the running server; answers the last line
   * of stdout (the new id, for commands that create something).
   */
  command(...args) {
    return cli(this.bin, args, this.env, this.dir);
  }

  /** GET /api/realtime/config (cached). */
  async realtimeConfig() {
    if (!this._config) {
      const res = await this.request('GET', '/api/realtime/config');
      if (res.status !== 200) throw new Error(`realtime config answered ${res.status}`);
      this._config = res.body;
    }
    return this._config;
  }

  /**
   * A pusher-js client built from /api/realtime/config exactly as a frontend would,
   * with the relative auth endpoints made absolute (Node has no page origin) and the
   * bearer token, when given, sent by pusher-js's own ajax transport.
   */
  async client(token, overrides = {}) {
    const config = await this.realtimeConfig();
    const { key, ...options } = config;
    const absolute = (endpoint) => (/^https?:/.test(endpoint) ? endpoint : this.base + endpoint);
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    options.channelAuthorization = {
      ...config.channelAuthorization,
      endpoint: absolute(config.channelAuthorization.endpoint),
      headers,
    };
    options.userAuthentication = {
      ...config.userAuthentication,
      endpoint: absolute(config.userAuthentication.endpoint),
      headers,
    };
    const client = new PusherJS(key, { ...options, ...overrides });
    trackSockets(client);
    this.clients.push(client);
    return client;
  }

  /** Disconnects one client now. */
  disconnect(client) {
    try {
      client.disconnect();
    } catch {
      // ignore
    }
    releaseSockets(client);
  }

  async stop() {
    for (const c of this.clients.splice(0)) this.disconnect(c);
    if (!this.exitInfo()) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

ApiServer.PASSWORD = PASSWORD;
ApiServer.OTHER_USER = OTHER_USER;

module.exports = { ApiServer, findApiServerBinary, PASSWORD, OTHER_USER };
