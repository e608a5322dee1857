'use strict';
// api-server's fan-out seen through pusher-js: send, read and notes publish on
// private-contact-{id} and private-user-{userId}, X-Socket-Id excludes the sender, and
// client events (a typing indicator) pass between members of private-contact-{id}.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { ApiServer } = require('../lib/api-server');
const { connected, subscribe, nextEvent, collect, waitUntil, withTimeout, sleep } = require('../lib/clients');

const CONTACT = '1';
let server;
let alice; // { token, user, client, contact, presence, self }
let bob;

async function agent(email) {
  const { token, user } = await server.login(email);
  const client = await server.client(token);
  const socketId = await connected(client);
  const [contact, presence, self] = await Promise.all([
    subscribe(client, `private-contact-${CONTACT}`),
    subscribe(client, `presence-contact-${CONTACT}`),
    subscribe(client, `private-user-${user.id}`),
  ]);
  return { token, user, client, socketId, contact: contact.channel, presence: presence.channel, self: self.channel };
}

before(async () => {
  server = await ApiServer.start();
  alice = await agent('alice@example.com');
  bob = await agent('bob@example.com');
});

after(async () => {
  if (server) await server.stop();
});

/** Sends as alice from her socket; answers the stored message. */
async function sendAsAlice(body) {
  const res = await server.request('POST', '/api/messages/send', {
    token: alice.token,
    body: { contactId: CONTACT, body },
    headers: { 'X-Socket-Id': alice.client.connection.socket_id },
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.message;
}

test('send: bob gets message:created and contact:updated; alice (X-Socket-Id) gets no message:created', async () => {
  const body = 'hello from alice ' + Date.now();
  const aliceCreated = collect(alice.contact, 'message:created');
  const bobCreated = nextEvent(bob.contact, 'message:created', 5000);
  const bobUpdated = new Promise((resolve) => {
    // contact:updated may also arrive for other writes; wait for this message's.
    const cb = (data) => {
      if (data && data.contact && data.contact.lastMessage && data.contact.lastMessage.body === body) {
        bob.self.unbind('contact:updated', cb);
        resolve(data);
      }
    };
    bob.self.bind('contact:updated', cb);
  });

  const message = await sendAsAlice(body);
  assert.equal(message.body, body);
  assert.equal(message.direction, 'outbound');
  assert.equal(String(message.contactId), CONTACT);

  const { data } = await bobCreated;
  assert.ok(data && data.message, `message:created data: ${JSON.stringify(data)}`);
  assert.equal(data.message.body, body);
  assert.equal(String(data.message.id), String(message.id));
  assert.equal(String(data.message.contactId), CONTACT);

  const updated = await withTimeout(bobUpdated, 5000, 'contact:updated with the new lastMessage');
  assert.equal(String(updated.contact.id), CONTACT);
  assert.equal(updated.contact.lastMessage.body, body);
  assert.equal(typeof updated.contact.unreadCount, 'number');

  // bob got it, so the fan-out is done; give a straggler to alice a moment to show up.
  await sleep(300);
  assert.equal(aliceCreated.length, 0, `alice's excluded socket got ${JSON.stringify(aliceCreated)}`);
});

test('send without X-Socket-Id: the sender\'s own socket gets message:created too', async () => {
  const body = 'no exclusion ' + Date.now();
  const aliceCreated = nextEvent(alice.contact, 'message:created', 5000);
  const res = await server.request('POST', '/api/messages/send', {
    token: alice.token,
    body: { contactId: CONTACT, body },
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const { data } = await aliceCreated;
  assert.equal(data.message.body, body);
});

test('read: message:read with readAt; a second read publishes nothing new', async () => {
  const message = await sendAsAlice('read me ' + Date.now());
  const reads = collect(bob.contact, 'message:read');

  const first = await server.request('POST', `/api/messages/${message.id}/read`, { token: bob.token });
  assert.equal(first.status, 200, JSON.stringify(first.body));
  assert.ok(first.body.message.readAt, 'readAt set in the answer');

  await waitUntil(() => reads.length >= 1, 5000, 'message:read');
  const { data } = reads[0];
  assert.equal(String(data.message.id), String(message.id));
  assert.ok(data.message.readAt, `readAt in the event: ${JSON.stringify(data.message)}`);
  assert.ok(!Number.isNaN(Date.parse(data.message.readAt)), 'readAt is a time');
  assert.equal(String(data.message.readBy), String(bob.user.id));

  const second = await server.request('POST', `/api/messages/${message.id}/read`, { token: bob.token });
  assert.equal(second.status, 200, JSON.stringify(second.body));
  assert.equal(second.body.message.readAt, first.body.message.readAt, 'a second read changes nothing');
  await sleep(300);
  assert.equal(reads.length, 1, `second read published again: ${JSON.stringify(reads.map((r) => r.data))}`);
});

test('notes: POST /api/contacts/1/notes publishes note:created', async () => {
  const body = 'a note ' + Date.now();
  const bobNote = nextEvent(bob.contact, 'note:created', 5000);
  const res = await server.request('POST', `/api/contacts/${CONTACT}/notes`, { token: alice.token, body: { body } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  assert.equal(res.body.note.body, body);
  const { data } = await bobNote;
  assert.ok(data && data.note, `note:created data: ${JSON.stringify(data)}`);
  assert.equal(data.note.body, body);
  assert.equal(String(data.note.id), String(res.body.note.id));
});

test('X-Socket-Id on read and notes excludes that connection only', async () => {
  const message = await sendAsAlice('read with exclusion ' + Date.now());
  const bobReads = collect(bob.contact, 'message:read');
  const aliceRead = nextEvent(alice.contact, 'message:read', 5000);
  const read = await server.request('POST', `/api/messages/${message.id}/read`, {
    token: bob.token,
    headers: { 'X-Socket-Id': bob.client.connection.socket_id },
  });
  assert.equal(read.status, 200, JSON.stringify(read.body));
  const { data } = await aliceRead;
  assert.equal(String(data.message.id), String(message.id));
  await sleep(300);
  assert.equal(bobReads.length, 0, `bob's excluded socket got ${JSON.stringify(bobReads)}`);

  const body = 'note with exclusion ' + Date.now();
  const bobNotes = collect(bob.contact, 'note:created');
  const aliceNote = nextEvent(alice.contact, 'note:created', 5000);
  const note = await server.request('POST', `/api/contacts/${CONTACT}/notes`, {
    token: bob.token,
    body: { body },
    headers: { 'X-Socket-Id': bob.client.connection.socket_id },
  });
  assert.equal(note.status, 201, JSON.stringify(note.body));
  assert.equal((await aliceNote).data.note.body, body);
  await sleep(300);
  assert.equal(bobNotes.length, 0, `bob's excluded socket got ${JSON.stringify(bobNotes)}`);
});

test('client events: client-typing on private-contact-1 reaches bob, not alice herself', async () => {
  const errors = collect(alice.client.connection, 'error');
  const echoed = collect(alice.contact, 'client-typing');
  const got = nextEvent(bob.contact, 'client-typing', 5000);
  const payload = { userId: String(alice.user.id), name: alice.user.name, typing: true };
  assert.equal(alice.contact.trigger('client-typing', payload), true);

  const { data } = await got;
  assert.deepEqual(data, payload);

  await sleep(200);
  assert.equal(echoed.length, 0, 'the sender does not get its own client event');
  assert.deepEqual(errors, []);
});
