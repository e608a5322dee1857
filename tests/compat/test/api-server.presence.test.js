'use strict';
// presence-contact-{id} through pusher-js against api-server: members carry the user's
// name from /api/pusher/auth, and GET /api/contacts/{id}/viewers follows who is there.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { ApiServer } = require('../lib/api-server');
const { connected, subscribe, nextEvent, waitUntil } = require('../lib/clients');

const CONTACT = '1';
const CHANNEL = `presence-contact-${CONTACT}`;
let server;

before(async () => {
  server = await ApiServer.start();
});

after(async () => {
  if (server) await server.stop();
});

async function viewers(token) {
  const res = await server.request('GET', `/api/contacts/${CONTACT}/viewers`, { token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.users;
}

const ids = (users) => users.map((u) => String(u.id)).sort();

test('presence: members, member_added / member_removed with names, and /viewers follows them', async () => {
  const alice = await server.login('alice@example.com');
  const bob = await server.login('bob@example.com');

  const aliceClient = await server.client(alice.token);
  await connected(aliceClient);
  const { channel: aliceChannel, data: members } = await subscribe(aliceClient, CHANNEL);

  // pusher-js hands subscription_succeeded the Members object.
  assert.equal(String(members.myID), String(alice.user.id));
  assert.equal(members.count, 1);
  const me = members.get(String(alice.user.id));
  assert.ok(me, `alice among members: ${JSON.stringify(members.members)}`);
  assert.equal(me.info.name, 'Alice Agent');
  assert.equal(members.me.info.name, 'Alice Agent');

  await waitUntil(
    async () => {
      const users = await viewers(alice.token);
      return users.length === 1 && String(users[0].id) === String(alice.user.id) ? users : null;
    },
    5000,
    'viewers = [alice]'
  );

  const added = nextEvent(aliceChannel, 'pusher:member_added', 5000);
  const bobClient = await server.client(bob.token);
  await connected(bobClient);
  const { data: bobMembers } = await subscribe(bobClient, CHANNEL);
  assert.equal(bobMembers.count, 2);
  assert.equal(bobMembers.get(String(alice.user.id)).info.name, 'Alice Agent');

  const { data: member } = await added;
  assert.equal(String(member.id), String(bob.user.id));
  assert.equal(member.info.name, 'Bob Agent');
  assert.equal(aliceChannel.members.count, 2);

  const both = await waitUntil(
    async () => {
      const users = await viewers(bob.token);
      return users.length === 2 ? users : null;
    },
    5000,
    'viewers = [alice, bob]'
  );
  assert.deepEqual(ids(both), ids([alice.user, bob.user]));
  const names = Object.fromEntries(both.map((u) => [String(u.id), u.name]));
  assert.equal(names[String(alice.user.id)], 'Alice Agent');
  assert.equal(names[String(bob.user.id)], 'Bob Agent');

  const removed = nextEvent(aliceChannel, 'pusher:member_removed', 5000);
  server.disconnect(bobClient);
  const { data: gone } = await removed;
  assert.equal(String(gone.id), String(bob.user.id));
  assert.equal(aliceChannel.members.count, 1);

  await waitUntil(
    async () => {
      const users = await viewers(alice.token);
      return users.length === 1 && String(users[0].id) === String(alice.user.id) ? users : null;
    },
    5000,
    'viewers = [alice] after bob left'
  );
});
