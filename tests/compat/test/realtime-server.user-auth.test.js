'use strict';
// User authentication: pusher-js signin(), sendToUser through the SDK, and
// terminateUserConnections.
const { describe, test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
  Harness,
  connected,
  reachesState,
  nextEvent,
  collect,
  recordFrames,
  waitUntil,
  withTimeout,
  sleep,
  signin,
} = require('../lib/clients');

/** Signs a raw ws client in as `userData.id`; resolves the answer frame. */
async function rawSignin(h, raw, userData, sdk = h.sdkClient) {
  raw.send({ event: 'pusher:signin', data: sdk.authenticateUser(raw.socketId, userData) });
  return raw.next((f) => f.event === 'pusher:signin_success' || f.event === 'pusher:error');
}

describe('user authentication', () => {
  let h;
  before(async () => {
    h = await Harness.start();
  });
  afterEach(() => h.closeClients());
  after(() => h.close());

  test('signin() gets pusher:signin_success with the user data', async () => {
    const client = h.client({ user: { id: 'alice', name: 'Alice' } });
    const { answer } = await signin(client);
    assert.equal(answer.event, 'pusher:signin_success');
    assert.deepEqual(JSON.parse(answer.data.user_data), { id: 'alice', name: 'Alice' });
    await waitUntil(() => client.user.user_data, 1000, 'client.user.user_data');
    assert.equal(client.user.user_data.id, 'alice');
  });

  test(
    "after signin, pusher-js's automatic subscribe to #server-to-user-<id> succeeds",
    async () => {
      const client = h.client({ user: { id: 'carol' } });
      const { frames } = await signin(client);
      await waitUntil(
        () => frames.find((f) => f.channel === '#server-to-user-carol'),
        2000,
        'an answer on #server-to-user-carol'
      ).catch(() => {});
      const answer = frames.find((f) => f.channel === '#server-to-user-carol');
      assert.ok(answer, 'the server answered the subscribe');
      assert.equal(answer.event, 'pusher_internal:subscription_succeeded', JSON.stringify(answer));
      assert.equal(client.user.serverToUserChannel.subscribed, true);
    }
  );

  test('sendToUser reaches every connection of that user, and no other user', async () => {
    const bob1 = h.client({ user: { id: 'bob' } });
    const bob2 = h.client({ user: { id: 'bob' } });
    const eve = h.client({ user: { id: 'eve' } });
    await Promise.all([signin(bob1), signin(bob2), signin(eve)]);
    await waitUntil(() => bob1.user.user_data && bob2.user.user_data && eve.user.user_data, 1000, 'signed in');
    const got1 = nextEvent(bob1.user, 'private-note');
    const got2 = nextEvent(bob2.user, 'private-note');
    const seenByEve = collect(eve.user, 'private-note');
    const res = await h.sdkClient.sendToUser('bob', 'private-note', { text: 'for bob only' });
    assert.equal(res.status, 200);
    assert.deepEqual((await got1).data, { text: 'for bob only' });
    assert.deepEqual((await got2).data, { text: 'for bob only' });
    await sleep(200);
    assert.deepEqual(seenByEve, []);
  });

  test('sendToUser before signin is not delivered', async () => {
    const client = h.client({ user: { id: 'late' } });
    const frames = recordFrames(client);
    await connected(client);
    await h.sdkClient.sendToUser('late', 'too-early', {});
    await sleep(200);
    assert.equal(frames.filter((f) => f.event === 'too-early').length, 0);
  });

  test('a raw client cannot subscribe to another user\'s #server-to-user- channel', async () => {
    const raw = await h.rawConnected();
    const answer = await raw.subscribe('#server-to-user-victim');
    assert.equal(answer.event, 'pusher:subscription_error', answer.raw);
    await h.sdkClient.sendToUser('victim', 'stolen', { secret: 1 });
    assert.ok(await raw.nothing('stolen', 300), 'no event for another user');
  });

  test('a bad signin signature: pusher:error 4009 and close 4009', async () => {
    const raw = await h.rawConnected();
    const answer = await rawSignin(h, raw, { id: 'mallory' }, h.badSdk);
    assert.equal(answer.event, 'pusher:error');
    assert.equal(answer.json.code, 4009, answer.raw);
    const { code } = await raw.waitClosed();
    assert.equal(code, 4009);
  });

  test('terminateUserConnections: raw ws is closed with 4009, others stay', async () => {
    const victim = await h.rawConnected();
    const bystander = await h.rawConnected();
    assert.equal((await rawSignin(h, victim, { id: 'terminated-user' })).event, 'pusher:signin_success');
    assert.equal((await rawSignin(h, bystander, { id: 'someone-else' })).event, 'pusher:signin_success');
    const res = await h.sdkClient.terminateUserConnections('terminated-user');
    assert.equal(res.status, 200);
    const { code } = await victim.waitClosed();
    assert.equal(code, 4009);
    await sleep(100);
    assert.equal(bystander.closeInfo, null);
    bystander.send({ event: 'pusher:ping', data: {} });
    await bystander.next('pusher:pong');
  });

  test('terminateUserConnections disconnects a signed-in pusher-js client', async () => {
    const client = h.client({ user: { id: 'kicked' } });
    await signin(client);
    await waitUntil(() => client.user.user_data, 1000, 'signed in');
    await h.sdkClient.terminateUserConnections('kicked');
    await reachesState(client, 'disconnected', 3000);
    // 4009 is a "refused" close: pusher-js does not reconnect on its own.
    await sleep(300);
    assert.equal(client.connection.state, 'disconnected');
  });

  test('signing in again as another user drops the first identity', async () => {
    const raw = await h.rawConnected();
    assert.equal((await rawSignin(h, raw, { id: 'first-identity' })).event, 'pusher:signin_success');
    const second = await rawSignin(h, raw, { id: 'second-identity' });
    if (second.event !== 'pusher:signin_success') return; // refusing a second signin is fine too
    await h.sdkClient.sendToUser('first-identity', 'for-first', {});
    await h.sdkClient.sendToUser('second-identity', 'for-second', {});
    await raw.next('for-second');
    await sleep(200);
    const stale = raw.frames.filter((f) => f.event === 'for-first');
    assert.deepEqual(stale.map((f) => f.raw), [], 'events for the dropped identity still arrive');
    // And terminating the first identity no longer concerns this connection.
    await h.sdkClient.terminateUserConnections('first-identity');
    await sleep(150);
    assert.equal(raw.closeInfo, null);
    await h.sdkClient.terminateUserConnections('second-identity');
    assert.equal((await raw.waitClosed()).code, 4009);
  });

  test('a signed-in connection that closes is forgotten (terminate answers 200, nothing to close)', async () => {
    const raw = await h.rawConnected();
    await rawSignin(h, raw, { id: 'gone' });
    raw.close();
    await withTimeout(raw.closed, 2000, 'close');
    await sleep(100);
    const res = await h.sdkClient.terminateUserConnections('gone');
    assert.equal(res.status, 200);
  });
});
