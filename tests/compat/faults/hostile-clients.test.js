'use strict';
// Slow and hostile clients: 10,000 idle TCP connections and slow-loris requests (a
// request head sent a byte at a time) against api-server do not stop a normal client
// from logging in and sending, and the server lets go of them by itself (its header
// and connection timeouts, docs/operations.md).

const { test } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { Inbox, eventually, sleep } = require('./lib');

const IDLE = Number(process.env.FAULTS_IDLE_CONNECTIONS || 10000);
const LORIS = 200;
// How long the server may take to let go of every hostile socket once the last
// one opened: its header timeout (5 s) and disconnect timeout (1 s), twice over
// (a socket queued behind a worker's connection cap is accepted, and timed, only
// once an earlier one has gone), and room for a loaded machine.
const CLOSE_BOUND_MS = 30000;

function open(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.closedByServer = false;
    socket.opened = false;
    socket.failure = null;
    socket.on('error', (e) => {
      socket.failure = socket.failure || e.code || e.message;
    });
    // Flowing, so the server's close is seen (a paused socket never reads its FIN).
    socket.resume();
    socket.on('end', () => {
      socket.closedByServer = true;
    });
    socket.once('connect', () => {
      socket.opened = true;
      resolve(socket);
    });
    socket.once('error', () => resolve(socket));
  });
}

test('idle connections and slow-loris requests do not keep a client from logging in and sending', { timeout: 240000 }, async (t) => {
  const inbox = await Inbox.create();
  const sockets = [];
  let dripping = true;
  t.after(async () => {
    dripping = false;
    for (const s of sockets) s.destroy();
    await inbox.destroy();
  });
  await inbox.start();

  for (let i = 0; i < IDLE; i += 500) {
    sockets.push(...(await Promise.all(Array.from({ length: Math.min(500, IDLE - i) }, () => open(inbox.port)))));
  }
  const loris = await Promise.all(Array.from({ length: LORIS }, () => open(inbox.port)));
  sockets.push(...loris);
  const lastOpened = Date.now();
  // Every hostile connection really opened: a refused one would make the
  // scenario easier than it says.
  const failed = sockets.filter((s) => !s.opened);
  const reasons = {};
  for (const s of failed) reasons[s.failure] = (reasons[s.failure] || 0) + 1;
  assert.equal(failed.length, 0, `${failed.length} of ${sockets.length} connections did not open: ${JSON.stringify(reasons)}`);
  const head = 'POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Slow: ';
  (async () => {
    for (let i = 0; dripping; i++) {
      for (const s of loris) if (!s.closed) s.write(i < head.length ? head[i] : 'a');
      await sleep(500);
    }
  })();
  const connectedIdle = sockets.filter((s) => !s.closed).length;
  t.diagnostic(`${connectedIdle} hostile connections open`);

  // A normal client, meanwhile: log in, send, read.
  const started = Date.now();
  const token = await eventually(async () => {
    const res = await inbox.request('POST', '/api/auth/login', { body: { email: 'alice@example.com', password: 'password123' }, timeoutMs: 15000 });
    return res.status === 200 && res.body.token;
  }, 60000, 'a login among the hostile connections');
  const sent = await inbox.request('POST', '/api/messages/send', { token, body: { contactId: '1', body: 'still here' }, timeoutMs: 15000 });
  assert.equal(sent.status, 201, JSON.stringify(sent));
  const read = await inbox.request('GET', '/api/contacts/1/messages', { token, timeoutMs: 15000 });
  assert.equal(read.status, 200);
  t.diagnostic(`login, send and read took ${Date.now() - started} ms`);

  // The server lets go of what never became a request, without the clients' help.
  const left = Math.max(1000, lastOpened + CLOSE_BOUND_MS - Date.now());
  await eventually(() => sockets.every((s) => s.closed), left, `the server to close every idle and slow-loris connection within ${CLOSE_BOUND_MS / 1000} s of the last one opening`).catch((e) => {
    const open = sockets.filter((s) => !s.closed);
    const states = {};
    for (const s of open) states[`${loris.includes(s) ? 'loris' : 'idle'} ${s.readyState} sent ${s.bytesWritten} read ${s.bytesRead}`] = (states[`${loris.includes(s) ? 'loris' : 'idle'} ${s.readyState} sent ${s.bytesWritten} read ${s.bytesRead}`] || 0) + 1;
    throw new Error(`${e.message}: ${open.length} still open: ${JSON.stringify(states).slice(0, 2000)}`);
  });
  assert.ok(sockets.filter((s) => s.closedByServer).length > IDLE / 2, 'closed by the server, not by the clients');
  assert.ok(inbox.running, 'api-server is still running');
});
