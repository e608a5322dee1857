'use strict';
// /api/pusher/auth and /api/pusher/user-auth through pusher-js's own ajax transport
// (bearer token in channelAuthorization.headers / userAuthentication.headers):
// team isolation, private-user-{id} for that user alone, signin, no session.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { ApiServer, OTHER_USER } = require('../lib/api-server');
const { connected, subscribe, subscriptionError, recordFrames, waitUntil, withTimeout } = require('../lib/clients');

let server;
let alice;
let eve; // the second team's user

before(async () => {
  server = await ApiServer.start();
  [alice, eve] = await Promise.all([server.login('alice@example.com'), server.login(OTHER_USER.email)]);
  assert.equal(String(eve.user.id), String(server.otherUserId));
  assert.equal(String(eve.user.teamId), String(server.otherTeamId));
});

after(async () => {
  if (server) await server.stop();
});

/** What the auth endpoint answers for one form-encoded request, as pusher-js would post it. */
async function authAnswer(token, socketId, channelName) {
  const headers = { 'Content-Type': 'application/x-www-form-urlencoded' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(`${server.base}/api/pusher/auth`, {
    method: 'POST',
    headers,
    body: new URLSearchParams({ socket_id: socketId, channel_name: channelName }).toString(),
  });
  return res.status;
}

test("isolation: another team's user cannot join private-contact-1 / presence-contact-1 (403)", async () => {
  const client = await server.client(eve.token);
  const socketId = await connected(client);

  const { data } = await subscriptionError(client, 'private-contact-1');
  assert.equal(data.status, 403, JSON.stringify(data));
  assert.equal(await authAnswer(eve.token, socketId, 'private-contact-1'), 403);

  const { data: presence } = await subscriptionError(client, 'presence-contact-1');
  assert.equal(presence.status, 403, JSON.stringify(presence));
});

test("isolation: private-user-{id} is that user's alone; their own works", async () => {
  const eveClient = await server.client(eve.token);
  const socketId = await connected(eveClient);

  const { data } = await subscriptionError(eveClient, `private-user-${alice.user.id}`);
  assert.equal(data.status, 403, JSON.stringify(data));
  assert.equal(await authAnswer(eve.token, socketId, `private-user-${alice.user.id}`), 403);

  const { channel } = await subscribe(eveClient, `private-user-${eve.user.id}`);
  assert.equal(channel.subscribed, true);

  // Same team is not enough either: alice cannot join bob's private-user channel.
  const bob = await server.login('bob@example.com');
  const aliceClient = await server.client(alice.token);
  await connected(aliceClient);
  const { data: teammate } = await subscriptionError(aliceClient, `private-user-${bob.user.id}`);
  assert.equal(teammate.status, 403, JSON.stringify(teammate));
  await subscribe(aliceClient, `private-user-${alice.user.id}`);
  await subscribe(aliceClient, 'private-contact-1');
});

test('user authentication: signin() with the bearer token signs alice in', async () => {
  const client = await server.client(alice.token);
  const frames = recordFrames(client);
  await connected(client);
  const errors = [];
  client.user.bind('pusher:signin_error', (e) => errors.push(e));
  client.signin();
  await withTimeout(client.user.signinDonePromise, 5000, 'signin to finish');
  assert.deepEqual(errors, []);
  const success = frames.find((f) => f.event === 'pusher:signin_success');
  assert.ok(success, `signin_success frame; frames: ${JSON.stringify(frames.map((f) => f.event))}`);
  await waitUntil(() => client.user.user_data, 2000, 'client.user.user_data');
  assert.equal(client.user.user_data.id, String(alice.user.id));
});

test('user authentication without a session: signin_error with 401', async () => {
  const client = await server.client(null);
  await connected(client);
  const error = new Promise((resolve) => client.user.bind('pusher:signin_error', resolve));
  client.signin();
  const data = await withTimeout(error, 5000, 'pusher:signin_error');
  assert.equal(data.status, 401, JSON.stringify(data));
  assert.equal(client.user.user_data, null);
});

test('no session: the auth endpoint answers 401 and pusher-js reports subscription_error', async () => {
  const client = await server.client(null);
  const socketId = await connected(client);
  const { data } = await subscriptionError(client, 'private-contact-1');
  assert.equal(data.status, 401, JSON.stringify(data));
  const { data: presence } = await subscriptionError(client, 'presence-contact-1');
  assert.equal(presence.status, 401, JSON.stringify(presence));
  assert.equal(await authAnswer(null, socketId, 'private-contact-1'), 401);

  // A made-up token is no session either.
  const forged = await server.client('0'.repeat(64));
  await connected(forged);
  const { data: bad } = await subscriptionError(forged, 'private-contact-1');
  assert.equal(bad.status, 401, JSON.stringify(bad));
});
