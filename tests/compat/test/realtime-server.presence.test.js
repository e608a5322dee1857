'use strict';
// Presence channels through pusher-js: the members list, member_added /
// member_removed only on a user's first / last connection, and the limits
// (100 members, 1 KB user_info, 128-character user_id).
const { describe, test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
  Harness,
  subscribe,
  subscriptionError,
  nextEvent,
  collect,
  channelName,
  waitUntil,
  sleep,
} = require('../lib/clients');

const presence = (id, info = { name: `name of ${id}` }) => ({ user_id: id, user_info: info });

function membersOf(channel) {
  const list = [];
  channel.members.each((m) => list.push({ id: m.id, info: m.info }));
  return list.sort((a, b) => (a.id < b.id ? -1 : 1));
}

describe('presence channels', () => {
  let h;
  before(async () => {
    // One test opens 102 sockets from this one address: more than the default allows.
    h = await Harness.start({ args: ['--max-connections-per-address', '1000'] });
  });
  afterEach(() => h.closeClients());
  after(() => h.close());

  test('subscription_succeeded gives members: count, me, each', async () => {
    const name = channelName('presence-');
    await subscribe(h.client({ presence: presence('u1') }), name);
    await subscribe(h.client({ presence: presence('u2', { role: 'admin', tags: [1, 2] }) }), name);
    const { channel, data: members } = await subscribe(h.client({ presence: presence('u3') }), name);
    assert.equal(members.count, 3);
    assert.equal(members.me.id, 'u3');
    assert.deepEqual(members.me.info, { name: 'name of u3' });
    assert.deepEqual(membersOf(channel), [
      { id: 'u1', info: { name: 'name of u1' } },
      { id: 'u2', info: { role: 'admin', tags: [1, 2] } },
      { id: 'u3', info: { name: 'name of u3' } },
    ]);
  });

  test('member_added and member_removed reach the others with id and info', async () => {
    const name = channelName('presence-');
    const { channel: observer } = await subscribe(h.client({ presence: presence('observer') }), name);
    const added = nextEvent(observer, 'pusher:member_added');
    const joiner = h.client({ presence: presence('joiner', { colour: 'blue' }) });
    await subscribe(joiner, name);
    const { data: member } = await added;
    assert.equal(member.id, 'joiner');
    assert.deepEqual(member.info, { colour: 'blue' });
    assert.equal(observer.members.count, 2);

    const removed = nextEvent(observer, 'pusher:member_removed');
    joiner.unsubscribe(name);
    const { data: gone } = await removed;
    assert.equal(gone.id, 'joiner');
    assert.equal(observer.members.count, 1);
  });

  test('a second connection of the same user adds no member; closing one of two removes none', async () => {
    const name = channelName('presence-');
    const { channel: observer } = await subscribe(h.client({ presence: presence('observer') }), name);
    const addedEvents = collect(observer, 'pusher:member_added');
    const removedEvents = collect(observer, 'pusher:member_removed');

    const first = h.client({ presence: presence('dup') });
    await subscribe(first, name);
    await waitUntil(() => addedEvents.length === 1, 2000, 'member_added for the first connection');
    assert.equal(addedEvents[0].data.id, 'dup');

    const second = h.client({ presence: presence('dup') });
    const { data: secondView } = await subscribe(second, name);
    assert.equal(secondView.count, 2, 'the user is listed once');
    await sleep(300);
    assert.equal(addedEvents.length, 1, 'no member_added for the second connection');
    assert.equal(observer.members.count, 2);

    second.disconnect();
    await sleep(300);
    assert.equal(removedEvents.length, 0, 'no member_removed while another connection remains');
    assert.equal(observer.members.count, 2);

    first.disconnect();
    await waitUntil(() => removedEvents.length === 1, 2000, 'member_removed for the last connection');
    assert.equal(removedEvents[0].data.id, 'dup');
    assert.equal(observer.members.count, 1);
  });

  test('the same user twice on one connection is impossible; a re-subscribe keeps one member', async () => {
    const name = channelName('presence-');
    const raw = await h.rawConnected();
    const first = await raw.subscribe(name, { sdk: h.sdkClient, channelData: presence('solo') });
    assert.equal(first.event, 'pusher_internal:subscription_succeeded');
    const again = await raw.subscribe(name, { sdk: h.sdkClient, channelData: presence('solo') });
    assert.equal(again.event, 'pusher_internal:subscription_succeeded');
    assert.equal(again.json.presence.count, 1);
    raw.send({ event: 'pusher:unsubscribe', data: { channel: name } });
    await sleep(100);
    const res = await h.sdkClient.get({ path: `/channels/${name}/users` });
    assert.deepEqual((await res.json()).users, []);
  });

  test('a numeric user_id is accepted and reported as text', async () => {
    const name = channelName('presence-');
    const { data } = await subscribe(h.client({ presence: { user_id: 42, user_info: {} } }), name);
    assert.equal(String(data.me.id), '42');
    const res = await h.sdkClient.get({ path: `/channels/${name}/users` });
    assert.deepEqual((await res.json()).users, [{ id: '42' }]);
  });

  test('the 101st member is refused; more connections of existing members are not', async () => {
    const name = channelName('presence-');
    const raws = await Promise.all(Array.from({ length: 100 }, () => h.rawConnected()));
    const answers = await Promise.all(
      raws.map((raw, i) => raw.subscribe(name, { sdk: h.sdkClient, channelData: presence(`m${i}`, {}) }))
    );
    assert.ok(answers.every((a) => a.event === 'pusher_internal:subscription_succeeded'));
    const lastCount = Math.max(...answers.map((a) => a.json.presence.count));
    assert.equal(lastCount, 100);

    // pusher-js as the 101st distinct user: refused.
    const { data } = await subscriptionError(h.client({ presence: presence('one-too-many') }), name);
    assert.ok(data.status >= 400, JSON.stringify(data));

    // A second connection of member m7 is not a new member: accepted.
    const { data: members } = await subscribe(h.client({ presence: presence('m7', {}) }), name);
    assert.equal(members.count, 100);

    const res = await h.sdkClient.get({ path: `/channels/${name}`, params: { info: 'user_count' } });
    assert.equal((await res.json()).user_count, 100);
  });

  test('user_info over 1 KB is refused', async () => {
    const name = channelName('presence-');
    const big = { blob: 'x'.repeat(1100) };
    const { data } = await subscriptionError(h.client({ presence: presence('big', big) }), name);
    assert.ok(data.status >= 400, JSON.stringify(data));
    // Just under the limit is fine.
    const ok = { blob: 'x'.repeat(1000) };
    const { data: members } = await subscribe(h.client({ presence: presence('ok', ok) }), name);
    assert.deepEqual(members.me.info, ok);
  });

  test('user_id over 128 characters is refused; 128 is accepted', async () => {
    const name = channelName('presence-');
    const { data } = await subscriptionError(h.client({ presence: presence('u'.repeat(129)) }), name);
    assert.ok(data.status >= 400, JSON.stringify(data));
    const { data: members } = await subscribe(h.client({ presence: presence('u'.repeat(128)) }), name);
    assert.equal(members.me.id, 'u'.repeat(128));
  });

  test('abruptly dropped connections (no close frame) leave the presence channel', async () => {
    const name = channelName('presence-');
    const { channel: observer } = await subscribe(h.client({ presence: presence('observer') }), name);
    const removed = collect(observer, 'pusher:member_removed');
    const raws = await Promise.all(Array.from({ length: 10 }, () => h.rawConnected()));
    await Promise.all(raws.map((raw, i) => raw.subscribe(name, { sdk: h.sdkClient, channelData: presence(`drop${i}`) })));
    await waitUntil(() => observer.members.count === 11, 2000, '11 members');
    for (const raw of raws) raw.ws._socket.destroy();
    await waitUntil(() => removed.length === 10, 3000, '10 member_removed');
    assert.equal(observer.members.count, 1);
    const res = await h.sdkClient.get({ path: `/channels/${name}/users` });
    assert.deepEqual((await res.json()).users, [{ id: 'observer' }]);
  });

  test('concurrent joins and leaves of one user end consistent', async () => {
    const name = channelName('presence-');
    const { channel: observer } = await subscribe(h.client({ presence: presence('observer') }), name);
    const added = collect(observer, 'pusher:member_added');
    const removed = collect(observer, 'pusher:member_removed');
    const raws = await Promise.all(Array.from({ length: 30 }, () => h.rawConnected()));
    await Promise.all(raws.map((raw) => raw.subscribe(name, { sdk: h.sdkClient, channelData: presence('crowd') })));
    await Promise.all(
      raws.map(async (raw, i) => {
        if (i % 2) raw.send({ event: 'pusher:unsubscribe', data: { channel: name } });
        else raw.close();
      })
    );
    await waitUntil(() => removed.length >= 1, 3000, 'member_removed');
    await sleep(200);
    assert.equal(added.length, 1, 'one member_added for 30 connections of one user');
    assert.equal(removed.length, 1, 'one member_removed when the last of them left');
    const res = await h.sdkClient.get({ path: `/channels/${name}`, params: { info: 'user_count,subscription_count' } });
    assert.deepEqual(await res.json(), { occupied: true, user_count: 1, subscription_count: 1 });
  });

  test('a refused presence subscription gets no member events', async () => {
    const name = channelName('presence-');
    const refused = h.client({ presence: presence('big', { blob: 'x'.repeat(1100) }) });
    const { channel } = await subscriptionError(refused, name);
    const seen = collect(channel, 'pusher:member_added');
    const events = collect(channel, 'ev');
    await subscribe(h.client({ presence: presence('later') }), name);
    await h.sdkClient.trigger(name, 'ev', {});
    await sleep(300);
    assert.deepEqual(seen, []);
    assert.deepEqual(events, []);
  });
});
