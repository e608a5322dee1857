'use strict';
// Cache channels, subscription counting and watchlist events of the standalone
// realtime-server, proven only through pusher-js (the client) and the `pusher` SDK
// (triggers, channel queries, webhook signatures, channel and user signatures):
//
// - cache channels of every kind (`cache-`, `private-cache-`, `private-encrypted-cache-`,
//   `presence-cache-`): a new subscriber gets the last published event, and only that,
//   right after subscription_succeeded; with nothing kept, `pusher:cache_miss` and a
//   signed `cache_miss` webhook; a kept event expires after --cache-ttl;
// - subscription counting (--subscription-count): pusher-js's `channel.subscriptionCount`
//   follows joins and leaves, and a burst of 200 joins tells an early subscriber a
//   handful of counts, not 200;
// - watchlist events: `pusher.user.watchlist` hears `online` (those already online at
//   sign-in, then each first connection) and `offline` (each last connection).
//
// Absence ("nothing else arrived") is never judged by waiting a while: a marker that must
// arrive after anything wrongly sent (an event triggered after, a user signing in after)
// is awaited instead, since one connection receives in order.

const { describe, test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const nacl = require('tweetnacl');
const { Harness, subscribe, connected, channelName, waitUntil, collect, recordFrames } = require('../lib/clients');
const { startWebhookReceiver } = require('../lib/webhook-receiver');

// Generous deadlines: two cores shared with other builds and test files.
const WAIT = 5000;

/** Every event a pusher-js channel emits (pusher: ones included), in order. */
function recordChannel(channel) {
  const seen = [];
  channel.bind_global((event, data) => seen.push({ event, data }));
  return seen;
}

/** What a test compares: the events apart from pusher-js's own, cache_miss kept. */
const published = (seen) =>
  seen.filter((e) => e.event === 'pusher:cache_miss' || !e.event.startsWith('pusher:'));

/** The frames a connection received on one channel, by event name. */
const onChannel = (frames, name) => frames.filter((f) => f.channel === name).map((f) => f.event);

/** A subscriber that records from before it subscribes; resolves { client, channel, seen, frames }. */
async function subscriber(h, name, options = {}) {
  const client = h.client(options);
  const frames = recordFrames(client);
  const channel = client.subscribe(name);
  const seen = recordChannel(channel);
  await subscribe(client, name, WAIT);
  return { client, channel, seen, frames };
}

/** Triggers `marker` with the SDK and waits until `seen` has it: whatever was sent before it has arrived. */
async function marker(h, name, seen) {
  const data = { marker: crypto.randomBytes(4).toString('hex') };
  await h.sdkClient.trigger(name, 'marker', data);
  await waitUntil(() => seen.some((e) => e.event === 'marker'), WAIT, `the marker event on ${name}`);
  return { event: 'marker', data };
}

const CACHE_KINDS = [
  { kind: 'public', prefix: 'cache-', options: {} },
  { kind: 'private', prefix: 'private-cache-', options: {} },
  // pusher-js's Node build decrypts with the tweetnacl it is given; the SDK encrypts with
  // the harness's encryptionMasterKeyBase64 and signs the shared_secret from the same key.
  { kind: 'private-encrypted', prefix: 'private-encrypted-cache-', options: { nacl } },
  { kind: 'presence', prefix: 'presence-cache-', options: { presence: { user_id: 'cache-reader', user_info: { name: 'R' } } } },
];

describe('cache channels', () => {
  let h;
  let receiver;
  const missHooks = (name) => receiver.events(h.sdkClient).filter((e) => e.name === 'cache_miss' && e.channel === name);

  before(async () => {
    receiver = await startWebhookReceiver();
    h = await Harness.start({ webhookUrl: receiver.url, args: ['--cache-ttl', '600'] });
  });
  afterEach(() => h && h.closeClients());
  after(async () => {
    if (h) await h.close();
    if (receiver) await receiver.close();
  });

  for (const { kind, prefix, options } of CACHE_KINDS) {
    test(`${kind} (${prefix}…): a new subscriber gets the last event, only that, right after subscription_succeeded`, async () => {
      const name = channelName(prefix);
      await h.sdkClient.trigger(name, 'first', { n: 1 });
      await h.sdkClient.trigger(name, 'second', { n: 2 });
      await h.sdkClient.trigger(name, 'last', { n: 3, text: 'the one kept' });

      const { seen, frames } = await subscriber(h, name, options);
      const mark = await marker(h, name, seen);
      assert.deepEqual(published(seen), [{ event: 'last', data: { n: 3, text: 'the one kept' } }, mark]);
      // On the wire: the cached event is the channel's next frame after subscription_succeeded.
      assert.deepEqual(onChannel(frames, name).slice(0, 3), ['pusher_internal:subscription_succeeded', 'last', 'marker']);
      if (kind === 'private-encrypted') {
        const wire = frames.find((f) => f.channel === name && f.event === 'last');
        const data = typeof wire.data === 'string' ? JSON.parse(wire.data) : wire.data;
        assert.deepEqual(Object.keys(data).sort(), ['ciphertext', 'nonce'], 'the cached event was not kept encrypted');
      }
      assert.deepEqual(missHooks(name), [], 'a cache_miss webhook for a channel with a kept event');
    });

    test(`${kind} (${prefix}…): with nothing kept, pusher:cache_miss and a signed cache_miss webhook`, async () => {
      const name = channelName(prefix);
      const { seen, frames } = await subscriber(h, name, options);
      await waitUntil(() => seen.some((e) => e.event === 'pusher:cache_miss'), WAIT, `pusher:cache_miss on ${name}`);
      await waitUntil(() => missHooks(name).length > 0, WAIT, `the cache_miss webhook for ${name}`);
      const mark = await marker(h, name, seen);
      assert.deepEqual(published(seen).map((e) => e.event), ['pusher:cache_miss', mark.event]);
      assert.deepEqual(onChannel(frames, name).slice(0, 2), ['pusher_internal:subscription_succeeded', 'pusher:cache_miss']);
      // events() checked every webhook's signature with the SDK.
      const [hook] = missHooks(name);
      const { at, ...event } = hook;
      assert.deepEqual(event, { name: 'cache_miss', channel: name });
      assert.equal(missHooks(name).length, 1, `one subscriber, one miss: ${JSON.stringify(missHooks(name))}`);
    });
  }

  test('a subscriber after a miss and a publish gets that event (the miss kept nothing)', async () => {
    const name = channelName('cache-');
    const first = await subscriber(h, name);
    await waitUntil(() => first.seen.some((e) => e.event === 'pusher:cache_miss'), WAIT, 'the first miss');
    await h.sdkClient.trigger(name, 'now-kept', { ok: true });
    const second = await subscriber(h, name);
    const mark = await marker(h, name, second.seen);
    assert.deepEqual(published(second.seen), [{ event: 'now-kept', data: { ok: true } }, mark]);
  });

  test('the cache is per channel: another channel of the same kind still misses', async () => {
    const kept = channelName('cache-');
    await h.sdkClient.trigger(kept, 'kept', { x: 1 });
    const other = channelName('cache-');
    const { seen } = await subscriber(h, other);
    const mark = await marker(h, other, seen);
    assert.deepEqual(published(seen).map((e) => e.event), ['pusher:cache_miss', mark.event]);
  });
});

describe('cache channels: expiry (--cache-ttl 2)', () => {
  const TTL_MS = 2000;
  let h;
  let receiver;

  before(async () => {
    receiver = await startWebhookReceiver();
    h = await Harness.start({ webhookUrl: receiver.url, args: ['--cache-ttl', '2'] });
  });
  afterEach(() => h && h.closeClients());
  after(async () => {
    if (h) await h.close();
    if (receiver) await receiver.close();
  });

  test('a kept event is served until the ttl, then a new subscriber misses (and the app gets cache_miss)', async () => {
    const name = channelName('cache-');
    await h.sdkClient.trigger(name, 'short-lived', { n: 1 });
    // The server kept it before it answered the trigger: it expires by now + ttl.
    const keptBy = Date.now();

    const early = await subscriber(h, name);
    await waitUntil(() => early.seen.some((e) => e.event === 'short-lived'), WAIT, 'the kept event, before the ttl');
    const servedAfter = Date.now() - keptBy;
    assert.ok(servedAfter < TTL_MS, `the early subscriber was served ${servedAfter} ms after the trigger: too late to prove anything`);

    // The condition under test is time itself: wait until the ttl has certainly passed.
    await waitUntil(() => Date.now() - keptBy > TTL_MS + 200, TTL_MS + 2000, 'the ttl to pass');
    const late = await subscriber(h, name);
    const mark = await marker(h, name, late.seen);
    assert.deepEqual(published(late.seen).map((e) => e.event), ['pusher:cache_miss', mark.event]);
    await waitUntil(
      () => receiver.events(h.sdkClient).some((e) => e.name === 'cache_miss' && e.channel === name),
      WAIT,
      'the cache_miss webhook of the expired channel'
    );
  });
});

describe('subscription counting (--subscription-count)', () => {
  let h;
  let receiver;
  const countHooks = (name) => receiver.events(h.sdkClient).filter((e) => e.name === 'subscription_count' && e.channel === name);

  before(async () => {
    receiver = await startWebhookReceiver();
    h = await Harness.start({
      webhookUrl: receiver.url,
      // The burst below opens 201 connections from this one address.
      args: ['--subscription-count', '--max-connections-per-address', '1000'],
    });
  });
  afterEach(() => h && h.closeClients());
  after(async () => {
    if (h) await h.close();
    if (receiver) await receiver.close();
  });

  const countIs = (channels, n, what) =>
    waitUntil(
      () => channels.every((c) => c.subscriptionCount === n),
      WAIT,
      `${what}: subscriptionCount ${n} (seen ${channels.map((c) => c.subscriptionCount).join(', ')})`
    );

  for (const prefix of ['', 'private-']) {
    test(`${prefix || 'public '}channel: subscriptionCount and pusher:subscription_count follow joins and leaves`, async (t) => {
      const name = channelName(prefix);
      const a = await subscriber(h, name);
      const subscribedAt = Date.now();
      const events = collect(a.channel, 'pusher:subscription_count');
      await countIs([a.channel], 1, 'a alone');
      // A first change on a quiet channel is told in about 100 ms, not at the next second.
      const firstMs = Date.now() - subscribedAt;
      t.diagnostic(`the first count arrived ${firstMs} ms after subscription_succeeded`);
      assert.ok(firstMs < 900, `the first count took ${firstMs} ms`);
      const b = await subscriber(h, name);
      await countIs([a.channel, b.channel], 2, 'a and b');
      const c = await subscriber(h, name);
      await countIs([a.channel, b.channel, c.channel], 3, 'a, b and c');
      b.client.unsubscribe(name);
      await countIs([a.channel, c.channel], 2, 'b unsubscribed');
      c.client.disconnect();
      await countIs([a.channel], 1, 'c disconnected');

      for (const { data } of events) {
        assert.deepEqual(Object.keys(data), ['subscription_count'], JSON.stringify(data));
        assert.ok(Number.isInteger(data.subscription_count), JSON.stringify(data));
      }
      assert.equal(events[events.length - 1].data.subscription_count, 1);
      // The app hears it too, signed, ending at the count the channel ended with.
      await waitUntil(
        () => {
          const hooks = countHooks(name);
          return hooks.length > 0 && hooks[hooks.length - 1].subscription_count === 1;
        },
        WAIT,
        `the last subscription_count webhook for ${name} to tell 1 (got ${JSON.stringify(countHooks(name))})`
      );
      assert.ok(countHooks(name).some((e) => e.subscription_count === 3), `no webhook told 3: ${JSON.stringify(countHooks(name))}`);
    });
  }

  test('a burst of 200 joins tells an early subscriber a handful of counts (at most one a second), not 200', { timeout: 90000 }, async (t) => {
    const name = channelName();
    const early = await subscriber(h, name);
    await countIs([early.channel], 1, 'the early subscriber');
    const counts = collect(early.channel, 'pusher:subscription_count');

    const started = Date.now();
    const joiners = Array.from({ length: 200 }, () => h.client());
    await Promise.all(joiners.map((c) => subscribe(c, name, 60000)));
    await waitUntil(() => early.channel.subscriptionCount === 201, WAIT, `201 (seen ${early.channel.subscriptionCount})`);
    const joinMs = Date.now() - started;
    const joinEvents = counts.splice(0).map((e) => e.data.subscription_count);
    t.diagnostic(`200 joins over ${joinMs} ms: ${joinEvents.length} events to the early subscriber: ${joinEvents.join(', ')}`);
    // The first change is told within about 100 ms, then at most once a second.
    assert.ok(
      joinEvents.length <= Math.ceil(joinMs / 1000) + 2 && joinEvents.length <= 20,
      `${joinEvents.length} subscription_count events in ${joinMs} ms: ${joinEvents.join(', ')}`
    );
    assert.deepEqual([...joinEvents].sort((x, y) => x - y), joinEvents, 'the counts went down during joins');
    assert.equal(joinEvents[joinEvents.length - 1], 201);

    const leaving = Date.now();
    for (const c of joiners) c.disconnect();
    await waitUntil(() => early.channel.subscriptionCount === 1, 30000, `back to 1 (seen ${early.channel.subscriptionCount})`);
    const leaveMs = Date.now() - leaving;
    const leaveEvents = counts.map((e) => e.data.subscription_count);
    t.diagnostic(`200 leaves over ${leaveMs} ms: ${leaveEvents.length} events: ${leaveEvents.join(', ')}`);
    assert.ok(
      leaveEvents.length <= Math.ceil(leaveMs / 1000) + 2 && leaveEvents.length <= 20,
      `${leaveEvents.length} subscription_count events in ${leaveMs} ms: ${leaveEvents.join(', ')}`
    );
    assert.equal(leaveEvents[leaveEvents.length - 1], 1);
  });
});

describe('watchlist events', () => {
  let h;

  before(async () => {
    h = await Harness.start();
  });
  afterEach(() => h && h.closeClients());
  after(() => h && h.close());

  const uid = (who) => `${who}-${crypto.randomBytes(4).toString('hex')}`;

  /**
   * A pusher-js client signed in as `user` (user_data signed by the SDK's
   * authenticateUser, through pusher-js's userAuthentication customHandler); its watchlist
   * events ({ name, ids }) are recorded from before the sign-in.
   */
  async function signedIn(user) {
    const client = h.client({ user });
    const events = [];
    for (const name of ['online', 'offline']) {
      // Ids stay as sent (strings), so a number where a string belongs fails deepEqual.
      client.user.watchlist.bind(name, (e) => events.push({ name, ids: Array.isArray(e.user_ids) ? [...e.user_ids].sort() : e.user_ids }));
    }
    await connected(client);
    client.signin();
    await waitUntil(() => client.user.user_data, WAIT, `the sign-in of ${user.id}`);
    return { client, events };
  }

  /** Waits until `watcher` heard `n` events; answers them. */
  const heard = (watcher, n, what) =>
    waitUntil(() => watcher.events.length >= n && watcher.events, WAIT, `${what} (heard ${JSON.stringify(watcher.events)})`);

  test('online at sign-in names the watched users already online; then online and offline as they come and go', async () => {
    const [bob, carol, dave, eve] = ['bob', 'carol', 'dave', 'eve'].map(uid);
    const carolConn = await signedIn({ id: carol });
    const daveConn = await signedIn({ id: dave });
    const eveConn = await signedIn({ id: eve }); // online, but nobody watches her
    const alice = await signedIn({ id: uid('alice'), watchlist: [bob, carol, dave] });
    await heard(alice, 1, 'online at sign-in');
    assert.deepEqual(alice.events, [{ name: 'online', ids: [carol, dave].sort() }]);

    const bobConn = await signedIn({ id: bob });
    await heard(alice, 2, 'bob online');
    carolConn.client.disconnect();
    await heard(alice, 3, 'carol offline');
    bobConn.client.disconnect();
    await heard(alice, 4, 'bob offline');
    eveConn.client.disconnect(); // unwatched: nothing
    daveConn.client.disconnect();
    await heard(alice, 5, 'dave offline');
    assert.deepEqual(alice.events, [
      { name: 'online', ids: [carol, dave].sort() },
      { name: 'online', ids: [bob] },
      { name: 'offline', ids: [carol] },
      { name: 'offline', ids: [bob] },
      { name: 'offline', ids: [dave] },
    ]);
    // The watched users heard nothing: they watch nobody.
    assert.deepEqual([carolConn, daveConn, bobConn].flatMap((c) => c.events), []);
  });

  test('a user with two connections is online once, and offline only when the last one ends', async () => {
    const [bob, marker1, marker2] = ['bob', 'm1', 'm2'].map(uid);
    const alice = await signedIn({ id: uid('alice'), watchlist: [bob, marker1, marker2] });
    const bob1 = await signedIn({ id: bob });
    await heard(alice, 1, 'bob online');
    const bob2 = await signedIn({ id: bob });

    // bob's first connection ends; once the server has let go of it (its only channel is
    // vacant), a marker user signs in: anything sent to alice for bob arrives before.
    const channel = channelName();
    await subscribe(bob1.client, channel, WAIT);
    bob1.client.disconnect();
    await waitUntil(
      async () => {
        const res = await h.sdkClient.get({ path: `/channels/${channel}` });
        return (await res.json()).occupied === false;
      },
      WAIT,
      `${channel} vacant after bob's first connection ended`
    );
    const m1 = await signedIn({ id: marker1 });
    await heard(alice, 2, 'the first marker online');
    assert.deepEqual(alice.events, [
      { name: 'online', ids: [bob] },
      { name: 'online', ids: [marker1] },
    ], "bob's second connection or the end of his first told alice something");

    bob2.client.disconnect();
    await heard(alice, 3, 'bob offline after his last connection');
    const m2 = await signedIn({ id: marker2 });
    await heard(alice, 4, 'the second marker online');
    assert.deepEqual(alice.events.slice(2), [
      { name: 'offline', ids: [bob] },
      { name: 'online', ids: [marker2] },
    ]);
    m1.client.disconnect();
    m2.client.disconnect();
  });

  test('a watcher signing in again (a reconnect) hears who is online anew', async () => {
    const bob = uid('bob');
    await signedIn({ id: bob });
    const user = { id: uid('alice'), watchlist: [bob] };
    const alice = await signedIn(user);
    await heard(alice, 1, 'online at the first sign-in');
    alice.client.disconnect();
    alice.client.connect();
    await connected(alice.client);
    await heard(alice, 2, 'online at the second sign-in');
    assert.deepEqual(alice.events, [
      { name: 'online', ids: [bob] },
      { name: 'online', ids: [bob] },
    ]);
  });

  test('a watchlist of 100 ids signs in; one of 101 is refused (4009)', async () => {
    const hundred = Array.from({ length: 100 }, (_, i) => `w${i}-${crypto.randomBytes(3).toString('hex')}`);
    const ok = await signedIn({ id: uid('ok'), watchlist: hundred });
    assert.ok(ok.client.user.user_data);

    const refused = h.client({ user: { id: uid('refused'), watchlist: [...hundred, 'one-more'] } });
    const errors = [];
    refused.connection.bind('error', (e) => errors.push(e));
    await connected(refused);
    refused.signin();
    await waitUntil(
      () => errors.some((e) => e && e.data && e.data.code === 4009),
      WAIT,
      `pusher:error 4009 (errors: ${JSON.stringify(errors)})`
    );
    assert.equal(refused.user.user_data, null);
  });
});
