'use strict';
// Several api-server instances on one PostgreSQL database and one bus
// (REALTIME_CLUSTER_URL): their embedded realtime servers are one service.
// Two pusher-js clients on different instances see each other's events and
// presence, the viewers list is the same on both, the login limit is shared,
// and the same holds through HAProxy (Debian's package) in front of them.
//
// Needs POSTGRES_TEST_URL (scripts/test and CI set it), Redis on
// 127.0.0.1:6379 (scripts/test starts it) and, for the last test, haproxy.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const PusherJS = require('pusher-js');
const { Inbox, freshPostgresDatabase, eventually } = require('../faults/lib');
const { freePort } = require('../lib/server');
const { connected, subscribe, nextEvent, releaseSockets } = require('../lib/clients');

PusherJS.logToConsole = false;

const BUS = process.env.REDIS_TEST_URL || 'redis://127.0.0.1:6379';
const database = freshPostgresDatabase('cluster');
const clients = [];
let a;
let b;
let proxy;

function haproxyBin() {
  for (const candidate of ['/usr/sbin/haproxy', '/usr/bin/haproxy']) {
    if (fs.existsSync(candidate)) return candidate;
  }
  return null;
}

before(async () => {
  assert.ok(database, 'POSTGRES_TEST_URL is required for the several-instances suite');
  const proxyPort = await freePort();
  const env = {
    REALTIME_CLUSTER_URL: BUS,
    // Both instances are reached through the proxy too: its address is the
    // public one, and its X-Forwarded-For names the client.
    PUBLIC_URL: `http://127.0.0.1:${proxyPort}`,
    TRUSTED_PROXIES: '127.0.0.1',
  };
  a = await Inbox.create({ databaseUrl: database.url, env });
  const portB = await freePort();
  b = new Inbox({ bin: a.bin, dir: a.dir, port: portB, env: { ...a.env, PORT: String(portB) } });
  await Promise.all([a.start(), b.start()]);
  proxy = { port: proxyPort };
});

after(async () => {
  for (const client of clients.splice(0)) {
    try {
      client.disconnect();
    } catch {
      // gone already
    }
    releaseSockets(client);
  }
  if (proxy && proxy.proc) {
    proxy.proc.kill('SIGKILL');
  }
  for (const inbox of [a, b]) {
    if (inbox && inbox.running) await inbox.kill();
  }
  if (database) database.drop();
  if (a) fs.rmSync(a.dir, { recursive: true, force: true });
});

/** A pusher-js client of `inbox` (or of the proxy at `port`), configured from its /api/realtime/config. */
async function client(inbox, token, port = inbox.port) {
  const res = await inbox.request('GET', '/api/realtime/config');
  assert.equal(res.status, 200);
  const { key, ...options } = res.body;
  const base = `http://127.0.0.1:${port}`;
  const headers = { Authorization: `Bearer ${token}` };
  const pusher = new PusherJS(key, {
    ...options,
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    channelAuthorization: { ...options.channelAuthorization, endpoint: base + options.channelAuthorization.endpoint, headers },
    userAuthentication: { ...options.userAuthentication, endpoint: base + options.userAuthentication.endpoint, headers },
  });
  clients.push(pusher);
  await connected(pusher, 10000);
  return pusher;
}

/** Logs in through `inbox`; answers { token, user }. */
async function login(inbox, email) {
  const res = await inbox.request('POST', '/api/auth/login', { body: { email, password: 'password123' } });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

async function viewers(inbox, token) {
  const res = await inbox.request('GET', '/api/contacts/1/viewers', { token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.users.map((u) => String(u.id)).sort();
}

test('an SMS sent through instance A reaches a client of instance B, and presence is one', async () => {
  const alice = await login(a, 'alice@example.com');
  const bob = await login(b, 'bob@example.com');
  const onA = await client(a, alice.token);
  const onB = await client(b, bob.token);

  const { channel: bobContact } = await subscribe(onB, 'private-contact-1', 10000);
  const created = nextEvent(bobContact, 'message:created', 10000);
  const sent = await a.request('POST', '/api/messages/send', {
    token: alice.token,
    body: { contactId: '1', body: 'through A, seen on B' },
  });
  assert.equal(sent.status, 201, JSON.stringify(sent.body));
  const { data } = await created;
  assert.equal(data.message.body, 'through A, seen on B');

  // Presence: each sees the other, and both instances answer the same viewers.
  const { channel: alicePresence } = await subscribe(onA, 'presence-contact-1', 10000);
  const added = nextEvent(alicePresence, 'pusher:member_added', 10000);
  const { data: members } = await subscribe(onB, 'presence-contact-1', 10000);
  assert.equal(members.count, 2, 'bob, on B, is told alice is there, on A');
  const { data: member } = await added;
  assert.equal(String(member.id), String(bob.user.id));
  const both = [String(alice.user.id), String(bob.user.id)].sort();
  await eventually(
    async () => JSON.stringify(await viewers(a, alice.token)) === JSON.stringify(both) &&
      JSON.stringify(await viewers(b, bob.token)) === JSON.stringify(both),
    10000,
    'the same viewers on both instances'
  );

  // Bob leaves on B: alice, on A, is told once, and both lists drop him.
  const removed = nextEvent(alicePresence, 'pusher:member_removed', 15000);
  onB.unsubscribe('presence-contact-1');
  const { data: gone } = await removed;
  assert.equal(String(gone.id), String(bob.user.id));
  await eventually(
    async () => (await viewers(b, bob.token)).length === 1 && (await viewers(a, alice.token)).length === 1,
    10000,
    'bob gone from the viewers on both instances'
  );
});

test('the login limit is shared: failures on A and on B add up', async () => {
  const wrong = { email: 'carol-not-a-user@example.com', password: 'wrong-password' };
  // Five failures are free per address + email: three on each instance make six.
  for (const inbox of [a, b, a, b, a, b]) {
    const res = await inbox.request('POST', '/api/auth/login', { body: wrong });
    assert.equal(res.status, 401, JSON.stringify(res.body));
  }
  const limited = await a.request('POST', '/api/auth/login', { body: wrong });
  assert.equal(limited.status, 429, `the seventh failure overall is held back: ${JSON.stringify(limited.body)}`);
  assert.ok(limited.headers.get('retry-after'));
});

test('through HAProxy: pusher-js and the API behind one address, WebSockets passed', async (t) => {
  const bin = haproxyBin();
  assert.ok(bin, 'haproxy is required (Debian package haproxy; scripts/test installs it)');
  const config = path.join(a.dir, 'haproxy.cfg');
  fs.writeFileSync(
    config,
    [
      'global',
      '    maxconn 1000',
      'defaults',
      '    mode http',
      '    timeout connect 5s',
      '    timeout client 30s',
      '    timeout server 30s',
      '    timeout tunnel 1h',
      '    option http-server-close',
      'frontend public',
      `    bind 127.0.0.1:${proxy.port}`,
      '    http-request del-header Forwarded',
      '    http-request del-header X-Forwarded-For',
      '    option forwardfor',
      '    default_backend inbox',
      'backend inbox',
      '    balance roundrobin',
      '    option httpchk GET /api/health',
      '    default-server check inter 500ms fall 2 rise 1',
      `    server a 127.0.0.1:${a.port}`,
      `    server b 127.0.0.1:${b.port}`,
      '',
    ].join('\n')
  );
  execFileSync(bin, ['-c', '-q', '-f', config]);
  proxy.proc = spawn(bin, ['-db', '-f', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let proxyLog = '';
  proxy.proc.stderr.on('data', (chunk) => {
    proxyLog += chunk.toString();
  });
  t.after(() => proxy.proc.kill('SIGKILL'));
  const front = new Inbox({ bin: a.bin, dir: a.dir, port: proxy.port, env: a.env });
  await eventually(
    async () => {
      try {
        return (await front.request('GET', '/api/health')).status === 200;
      } catch {
        return false;
      }
    },
    15000,
    `haproxy on ${proxy.port} (${proxyLog})`
  );

  const alice = await login(front, 'alice@example.com');
  const bob = await login(front, 'bob@example.com');
  // Round robin: over the proxy the two WebSockets land on different instances.
  const aliceClient = await client(front, alice.token);
  const bobClient = await client(front, bob.token);
  const { channel } = await subscribe(bobClient, 'private-contact-2', 10000);
  await subscribe(aliceClient, 'private-contact-2', 10000);
  for (let n = 0; n < 3; n++) {
    const created = nextEvent(channel, 'message:created', 10000);
    const sent = await front.request('POST', '/api/messages/send', {
      token: alice.token,
      body: { contactId: '2', body: `via the proxy ${n}` },
    });
    assert.equal(sent.status, 201, JSON.stringify(sent.body));
    assert.equal((await created).data.message.body, `via the proxy ${n}`);
  }
  // Both instances hold connections: the cluster, not luck, delivered.
  const open = await Promise.all([a, b].map((inbox) => inbox.metric('realtime_connections')));
  assert.ok(open.every((n) => n >= 1), `connections per instance: ${open}`);
});
