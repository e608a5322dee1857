'use strict';
// What api-server adds for the inbox page's "Teammates online" and its logged-out first
// load: GET /api/auth/session (a session probe that answers 200 with or without a
// session, while GET /api/me keeps its 401), GET /api/team/members (the teammates, by
// name), the `watchlist` in /api/pusher/user-auth's user_data, and pusher-js's
// `pusher.user.watchlist` end to end through the embedded realtime server. The demo team
// is Alice and Bob; Eve is alone in another team.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { ApiServer, OTHER_USER } = require('../lib/api-server');
const { connected, waitUntil } = require('../lib/clients');

const WAIT = 5000;
let server;
let alice;
let bob;
let eve;

before(async () => {
  server = await ApiServer.start();
  [alice, bob, eve] = await Promise.all([
    server.login('alice@example.com'),
    server.login('bob@example.com'),
    server.login(OTHER_USER.email),
  ]);
});

after(async () => {
  if (server) await server.stop();
});

async function session(headers = {}) {
  const res = await server.request('GET', '/api/auth/session', { headers });
  assert.equal(res.status, 200, `GET /api/auth/session answered ${res.status}: ${JSON.stringify(res.body)}`);
  assert.match(res.headers.get('content-type') || '', /^application\/json/);
  return res.body;
}

test('GET /api/auth/session: {user:null} without a valid session (200, not 401); GET /api/me still answers 401', async () => {
  assert.deepEqual(await session(), { user: null });
  assert.deepEqual(await session({ Authorization: 'Bearer not-a-token' }), { user: null });
  assert.deepEqual(await session({ Cookie: 'inbox_session=not-a-token' }), { user: null });

  const me = await server.request('GET', '/api/me');
  assert.equal(me.status, 401);
  assert.equal(me.body.error.code, 'unauthorized');
});

test('GET /api/auth/session: {user} as GET /api/me answers it, by bearer token or cookie; null again after logout', async () => {
  const me = await server.request('GET', '/api/me', { token: alice.token });
  assert.equal(me.status, 200);
  assert.deepEqual(await session({ Authorization: `Bearer ${alice.token}` }), me.body);
  assert.deepEqual(me.body.user, { id: alice.user.id, name: 'Alice Agent', email: 'alice@example.com', teamId: alice.user.teamId });

  // The cookie a browser holds after logging in.
  const login = await server.request('POST', '/api/auth/login', { body: { email: 'alice@example.com', password: ApiServer.PASSWORD } });
  assert.equal(login.status, 200);
  const cookie = (login.headers.get('set-cookie') || '').split(';')[0];
  assert.match(cookie, /^inbox_session=./);
  assert.deepEqual(await session({ Cookie: cookie }), me.body);

  const out = await server.request('POST', '/api/auth/logout', { token: login.body.token });
  assert.equal(out.status, 204);
  assert.deepEqual(await session({ Authorization: `Bearer ${login.body.token}` }), { user: null });
  // Alice's other session is untouched.
  assert.deepEqual(await session({ Authorization: `Bearer ${alice.token}` }), me.body);
});

test('GET /api/team/members: the caller\'s teammates by name (not the caller, not another team); 401 without a session', async () => {
  const of = async (who) => {
    const res = await server.request('GET', '/api/team/members', { token: who.token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  };
  assert.deepEqual(await of(alice), { users: [{ id: bob.user.id, name: 'Bob Agent' }] });
  assert.deepEqual(await of(bob), { users: [{ id: alice.user.id, name: 'Alice Agent' }] });
  assert.deepEqual(await of(eve), { users: [] });

  const anonymous = await server.request('GET', '/api/team/members');
  assert.equal(anonymous.status, 401);
  assert.equal(anonymous.body.error.code, 'unauthorized');
});

test('POST /api/pusher/user-auth: user_data carries the watchlist of the same teammates', async () => {
  const userData = async (who) => {
    const res = await server.request('POST', '/api/pusher/user-auth', {
      token: who.token,
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: 'socket_id=123.456',
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return JSON.parse(res.body.user_data);
  };
  assert.deepEqual(await userData(alice), { id: alice.user.id, user_info: { name: 'Alice Agent' }, watchlist: [bob.user.id] });
  assert.deepEqual((await userData(bob)).watchlist, [alice.user.id]);
  assert.deepEqual((await userData(eve)).watchlist, []);
});

test('pusher.user.watchlist through the embedded server: Alice hears Bob online and offline, never Eve of another team', async () => {
  const events = [];
  const aliceClient = await server.client(alice.token);
  for (const name of ['online', 'offline']) {
    aliceClient.user.watchlist.bind(name, (e) => events.push({ name, ids: e.user_ids }));
  }
  await connected(aliceClient, WAIT);
  aliceClient.signin();
  await waitUntil(() => aliceClient.user.user_data, WAIT, "Alice's sign-in");
  assert.deepEqual(aliceClient.user.user_data.watchlist, [bob.user.id]);

  const signIn = async (who) => {
    const client = await server.client(who.token);
    await connected(client, WAIT);
    client.signin();
    await waitUntil(() => client.user.user_data, WAIT, `the sign-in of ${who.user.name}`);
    return client;
  };
  // Eve first: anything Alice were told of her would arrive before Bob's online.
  await signIn(eve);
  const bobClient = await signIn(bob);
  await waitUntil(() => events.length >= 1, WAIT, `Bob online (heard ${JSON.stringify(events)})`);
  server.disconnect(bobClient);
  await waitUntil(() => events.length >= 2, WAIT, `Bob offline (heard ${JSON.stringify(events)})`);
  assert.deepEqual(events, [
    { name: 'online', ids: [bob.user.id] },
    { name: 'offline', ids: [bob.user.id] },
  ]);
});
