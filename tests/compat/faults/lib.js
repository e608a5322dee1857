'use strict';
// The fault suite's parts: an api-server that can be killed and started again on the
// same database and port, a standalone realtime-server standing in for hosted Pusher
// (so events published while api-server is down or restarting are seen by a pusher-js
// subscriber that never goes away), a steady load of sends and signed inbound webhooks,
// and the books: what every 2xx answer promised, checked against the database (through
// the API), the fake Twilio and the events the subscriber received.

const { spawn, execFile, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const Pusher = require('pusher');
const PusherJS = require('pusher-js');
const twilio = require('twilio');
const { findBinary, keepOutput, freePort, sleep, startServer } = require('../lib/server');
const { FakeTwilio, sid } = require('../lib/fake-twilio');
const { releaseSockets } = require('../lib/clients');

PusherJS.logToConsole = false;

const TEAM_PHONE = '+14155550100'; // the demo team's number
const CONTACT_PHONES = ['+14155550111', '+14155550122', '+14155550133']; // demo contacts 1..3
const PASSWORD = 'password123';

/** Polls `fn` until it answers truthy; throws naming `what` after `ms`. */
async function eventually(fn, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** The environment the binary runs with: none of the caller's PUSHER_/TWILIO_/DB settings. */
function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(PUSHER_|NEXT_PUBLIC_PUSHER_|TWILIO_|DATABASE_URL$|HOST$|PORT$|PUBLIC_URL$|METRICS_|TRUSTED_PROXIES$|REALTIME_)/.test(k)) continue;
    env[k] = v;
  }
  env.RUST_LOG = process.env.RUST_LOG || 'warn';
  return { ...env, ...extra };
}

/** A fresh PostgreSQL database on the test server, or null without POSTGRES_TEST_URL. */
function freshPostgresDatabase(label) {
  const admin = process.env.POSTGRES_TEST_URL;
  if (!admin) return null;
  const name = `faults_${label}_${crypto.randomBytes(4).toString('hex')}`;
  execFileSync('psql', [admin, '-v', 'ON_ERROR_STOP=1', '-qc', `CREATE DATABASE ${name}`]);
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop() {
      try {
        execFileSync('psql', [admin, '-qc', `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]);
      } catch {
        // best effort
      }
    },
  };
}

/**
 * One api-server over a database that outlives its processes: `start()` runs it,
 * `kill()` sends SIGKILL (or another signal) and waits, `start()` again serves the same
 * database on the same port.
 */
class Inbox {
  constructor({ bin, dir, port, env }) {
    Object.assign(this, { bin, dir, port, env });
    this.base = `http://127.0.0.1:${port}`;
    this.proc = null;
    this.output = '';
  }

  /** Creates the database with the demo team (alice, bob, contacts 1..3); not started. */
  static async create({ databaseUrl, env = {} } = {}) {
    const bin = findBinary('api-server', 'API_SERVER_BIN');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'api-server-faults-'));
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const all = cleanEnv({
      DATABASE_URL: databaseUrl || path.join(dir, 'inbox.sqlite'),
      HOST: '127.0.0.1',
      PORT: String(port),
      PUBLIC_URL: base,
      ...(typeof env === 'function' ? env({ port, base, dir }) : env),
    });
    const inbox = new Inbox({ bin, dir, port, env: all });
    await inbox.command('demo');
    return inbox;
  }

  /** Runs `api-server ARGS…` on this database; answers stdout. */
  command(...args) {
    return new Promise((resolve, reject) => {
      execFile(this.bin, args, { env: this.env, cwd: this.dir, timeout: 60000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`api-server ${args.join(' ')} failed: ${stderr}${stdout}`));
        else resolve(stdout.trim());
      });
    });
  }

  get running() {
    return this.proc !== null && this.exitInfo === null;
  }

  /** Starts the server and waits until /api/health answers. */
  async start(timeoutMs = 30000) {
    this.exitInfo = null;
    const proc = spawn(this.bin, ['serve'], { cwd: this.dir, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    keepOutput(proc, this, 400000);
    this.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
    });
    await eventually(
      async () => {
        if (this.exitInfo) throw new Error(`api-server exited ${JSON.stringify(this.exitInfo)}:\n${this.output}`);
        try {
          return (await fetch(`${this.base}/api/health`, { signal: AbortSignal.timeout(2000) })).ok;
        } catch {
          return false;
        }
      },
      timeoutMs,
      'api-server to answer /api/health'
    );
  }

  /** Sends `signal` (SIGKILL by default) and waits for the process to end. */
  async kill(signal = 'SIGKILL') {
    if (!this.running) return this.exitInfo;
    this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 20000);
    const info = await this.exited;
    clearTimeout(timer);
    return info;
  }

  /** One HTTP call: { status, body } (body parsed when JSON), or { status: 0, error }. */
  async request(method, urlPath, { token, body, form, headers = {}, timeoutMs = 10000 } = {}) {
    const h = { ...headers };
    if (token) h.Authorization = `Bearer ${token}`;
    let payload;
    if (form) {
      h['Content-Type'] = 'application/x-www-form-urlencoded';
      payload = new URLSearchParams(form).toString();
    } else if (body !== undefined) {
      h['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    try {
      const res = await fetch(this.base + urlPath, {
        method,
        headers: h,
        body: payload,
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await res.text();
      let parsed = text;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        // not JSON
      }
      return { status: res.status, body: parsed, headers: res.headers };
    } catch (error) {
      return { status: 0, error: String(error && error.cause ? error.cause.code || error.cause : error) };
    }
  }

  async login(email = 'alice@example.com') {
    const res = await this.request('POST', '/api/auth/login', { body: { email, password: PASSWORD } });
    if (res.status !== 200) throw new Error(`login answered ${res.status}: ${JSON.stringify(res.body)}`);
    return res.body.token;
  }

  /** Every message of a contact, oldest first, read page by page through the API. */
  async messages(token, contactId) {
    const all = [];
    let before = null;
    for (;;) {
      const query = `limit=100${before ? `&before=${before}` : ''}`;
      const res = await this.request('GET', `/api/contacts/${contactId}/messages?${query}`, { token });
      if (res.status !== 200) throw new Error(`messages of ${contactId} answered ${res.status}: ${JSON.stringify(res.body)}`);
      const page = res.body.messages;
      all.unshift(...page);
      if (page.length < 100) return all;
      before = page[0].id;
    }
  }

  /** A metric's value from /metrics (null when absent). */
  async metric(name) {
    const res = await this.request('GET', '/metrics');
    if (res.status !== 200 || typeof res.body !== 'string') return null;
    const line = res.body.split('\n').find((l) => l.startsWith(`${name} `));
    return line ? Number(line.split(' ')[1]) : null;
  }

  async destroy() {
    await this.kill();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A standalone realtime-server playing hosted Pusher for api-server, with a pusher-js
 * subscriber (authorized by the `pusher` SDK, so it needs no api-server) on every
 * contact's private channel that records each event.
 */
class RealtimeWitness {
  static async start(contactIds) {
    const server = await startServer({});
    const sdk = new Pusher({ appId: server.appId, key: server.key, secret: server.secret, host: '127.0.0.1', port: String(server.port), useTLS: false });
    const witness = new RealtimeWitness();
    Object.assign(witness, { server, sdk, events: [] });
    witness.client = new PusherJS(server.key, {
      cluster: 'mt1',
      wsHost: '127.0.0.1',
      wsPort: server.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, callback) => callback(null, sdk.authorizeChannel(socketId, channelName)),
      },
    });
    await Promise.all(
      contactIds.map(
        (id) =>
          new Promise((resolve, reject) => {
            const channel = witness.client.subscribe(`private-contact-${id}`);
            channel.bind('pusher:subscription_succeeded', resolve);
            channel.bind('pusher:subscription_error', reject);
            channel.bind_global((name, data) => {
              if (!name.startsWith('pusher')) witness.events.push({ channel: `private-contact-${id}`, name, data });
            });
          })
      )
    );
    return witness;
  }

  /** The variables that point api-server at this server as if it were hosted Pusher. */
  pusherEnv() {
    return {
      PUSHER_APP_ID: this.server.appId,
      PUSHER_KEY: this.server.key,
      PUSHER_SECRET: this.server.secret,
      PUSHER_HOST: '127.0.0.1',
      PUSHER_PORT: String(this.server.port),
      PUSHER_SCHEME: 'http',
    };
  }

  /** How many times each message id was announced as `name` (full or slim form). */
  counts(name) {
    const counts = new Map();
    for (const e of this.events.filter((e) => e.name === name)) {
      const id = e.data && (e.data.message ? e.data.message.id : e.data.messageId);
      if (id !== undefined) counts.set(String(id), (counts.get(String(id)) || 0) + 1);
    }
    return counts;
  }

  async stop() {
    try {
      this.client.disconnect();
    } catch {
      // ignore
    }
    releaseSockets(this.client);
    await this.server.stop();
  }
}

/** A fake Twilio with fresh credentials, and the variables that point api-server at it. */
async function startTwilio() {
  const credentials = { accountSid: sid('AC'), authToken: crypto.randomBytes(16).toString('hex') };
  const fake = await FakeTwilio.start(credentials);
  fake.env = {
    TWILIO_ACCOUNT_SID: credentials.accountSid,
    TWILIO_AUTH_TOKEN: credentials.authToken,
    TWILIO_API_BASE: fake.base,
    // A send in flight when a process dies is taken again once its lease (8 request
    // timeouts and 2 s) runs out: short here, so the books settle in seconds.
    TWILIO_TIMEOUT_MS: '2000',
    TWILIO_RETRY_BASE_MS: '200',
    TWILIO_RETRY_MAX_MS: '2000',
  };
  fake.authToken = credentials.authToken;
  return fake;
}

/**
 * What the books are checked against, started and logged in: a fake Twilio, a realtime
 * witness on contacts 1..3 and an api-server on `databaseUrl` (SQLite when unset) pointed
 * at both; all stopped when the test `t` ends. `twilio(fake)` may set how Twilio answers
 * before anything is sent.
 */
async function startRig(t, { databaseUrl, twilio: configure } = {}) {
  const fake = await startTwilio();
  if (configure) configure(fake);
  const witness = await RealtimeWitness.start([1, 2, 3]);
  const inbox = await Inbox.create({ databaseUrl, env: { ...fake.env, ...witness.pusherEnv() } });
  t.after(async () => {
    await inbox.destroy();
    await witness.stop();
    await fake.stop();
  });
  await inbox.start();
  const token = await inbox.login();
  return { fake, witness, inbox, token };
}

/**
 * A steady load against `inbox`: every `intervalMs`, one send (a unique body and
 * Idempotency-Key) and one signed inbound SMS (a unique MessageSid), without waiting
 * for earlier answers. Every request and its answer is recorded; `stop()` ends the load
 * and waits for the answers still due.
 */
function steadyLoad(inbox, { token, authToken, intervalMs = 50, contactIds = [1, 2, 3], label = 'load' }) {
  const sends = [];
  const inbound = [];
  const pending = new Set();
  let n = 0;
  const track = (promise) => {
    pending.add(promise);
    promise.finally(() => pending.delete(promise));
  };
  const tick = () => {
    n += 1;
    const contactId = contactIds[n % contactIds.length];
    const body = `${label} send ${n} ${crypto.randomBytes(3).toString('hex')}`;
    const send = { n, contactId, body, key: `${label}-${n}`, at: Date.now() };
    sends.push(send);
    track(
      inbox
        .request('POST', '/api/messages/send', { token, body: { contactId: String(contactId), body }, headers: { 'Idempotency-Key': send.key } })
        .then((res) => Object.assign(send, { status: res.status, answer: res.body, error: res.error, answeredAt: Date.now() }))
    );
    const from = CONTACT_PHONES[(n + 1) % CONTACT_PHONES.length];
    const params = { MessageSid: sid('SM'), AccountSid: 'AC' + 'f'.repeat(32), From: from, To: TEAM_PHONE, Body: `${label} inbound ${n}`, NumMedia: '0' };
    const signature = twilio.getExpectedTwilioSignature(authToken, `${inbox.base}/api/webhooks/twilio`, params);
    const hook = { n, params, at: Date.now() };
    inbound.push(hook);
    track(
      inbox
        .request('POST', '/api/webhooks/twilio', { form: params, headers: { 'X-Twilio-Signature': signature } })
        .then((res) => Object.assign(hook, { status: res.status, answer: res.body, error: res.error, answeredAt: Date.now() }))
    );
  };
  const timer = setInterval(tick, intervalMs);
  return {
    sends,
    inbound,
    async stop() {
      clearInterval(timer);
      while (pending.size) await Promise.allSettled([...pending]);
    },
  };
}

/**
 * The books after a fault: waits until nothing is left to send or publish, then checks
 * every promise a 2xx made. Answers a report; throws on anything lost or doubled.
 */
async function checkBooks({ inbox, token, load, fake, witness, contactIds = [1, 2, 3], settleMs = 90000 }) {
  const all = async () => (await Promise.all(contactIds.map((id) => inbox.messages(token, id)))).flat();
  // Nothing may stay queued: every outbound message reaches a final word from Twilio.
  const unsettled = (list) => list.filter((m) => m.direction === 'outbound' && !m.twilioSid && m.status !== 'failed');
  await eventually(async () => unsettled(await all()).length === 0, settleMs, 'every outbound message to be handed to Twilio').catch(() => {});
  await eventually(async () => (await inbox.metric('outbox_depth')) === 0, settleMs, 'the outbox to drain').catch(() => {});
  const messages = await all();
  const problems = unsettled(messages).map((m) => `message ${m.id} is still ${m.status} with no SID`);
  const depth = await inbox.metric('outbox_depth');
  if (depth !== 0) problems.push(`the outbox still holds ${depth} events`);
  const byId = new Map(messages.map((m) => [String(m.id), m]));
  const bodies = new Map();
  for (const m of messages) bodies.set(m.body, (bodies.get(m.body) || 0) + 1);

  const acceptedSends = load.sends.filter((s) => s.status === 201);
  for (const s of acceptedSends) {
    const id = String(s.answer.message.id);
    if (!byId.has(id)) problems.push(`send ${s.n} answered 201 with message ${id}, which is not in the database`);
    if (bodies.get(s.body) !== 1) problems.push(`send ${s.n}'s body is in the database ${bodies.get(s.body) || 0} times`);
  }
  const outbound = messages.filter((m) => m.direction === 'outbound');
  for (const m of outbound) {
    const created = fake.createdWithBody(m.body);
    if (created.length !== 1) problems.push(`message ${m.id} reached Twilio ${created.length} times`);
    else if (m.twilioSid !== created[0].sid) problems.push(`message ${m.id} has SID ${m.twilioSid}, Twilio made ${created[0].sid}`);
  }
  const acceptedInbound = load.inbound.filter((h) => h.status === 200);
  const bySid = new Map();
  for (const m of messages.filter((m) => m.direction === 'inbound')) bySid.set(m.twilioSid, (bySid.get(m.twilioSid) || 0) + 1);
  for (const h of acceptedInbound) {
    if (bySid.get(h.params.MessageSid) !== 1) problems.push(`inbound ${h.params.MessageSid} answered 200 and is stored ${bySid.get(h.params.MessageSid) || 0} times`);
  }
  // Every stored message was announced at least once; repeats are counted, not errors.
  const created = await eventually(
    () => {
      const counts = witness.counts('message:created');
      return messages.every((m) => counts.has(String(m.id))) ? counts : null;
    },
    settleMs,
    'message:created of every stored message'
  ).catch(() => witness.counts('message:created'));
  let duplicates = 0;
  for (const m of messages) {
    const count = created.get(String(m.id)) || 0;
    if (count === 0) problems.push(`message ${m.id} was never published (message:created)`);
    duplicates += Math.max(0, count - 1);
  }
  const report = {
    sends: load.sends.length,
    sendsAccepted: acceptedSends.length,
    inbound: load.inbound.length,
    inboundAccepted: acceptedInbound.length,
    stored: messages.length,
    twilioCreates: fake.created.length,
    eventsReceived: witness.events.length,
    duplicateCreatedEvents: duplicates,
  };
  if (problems.length) {
    throw new Error(`the books do not balance (${JSON.stringify(report)}):\n  ${problems.slice(0, 20).join('\n  ')}\n${inbox.output.slice(-4000)}`);
  }
  return report;
}

module.exports = {
  CONTACT_PHONES,
  TEAM_PHONE,
  Inbox,
  RealtimeWitness,
  checkBooks,
  eventually,
  freshPostgresDatabase,
  startRig,
  startTwilio,
  steadyLoad,
  sleep,
};
