'use strict';
// The Pusher HTTP API through the official `pusher` SDK: trigger, batch, limits,
// signatures, and the channel/presence queries; events are received by pusher-js.
const { describe, test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const {
  Harness,
  subscribe,
  nextEvent,
  collect,
  channelName,
  rejectsWithStatus,
  sleep,
} = require('../lib/clients');

const presence = (id) => ({ user_id: id, user_info: { name: id } });

describe('HTTP API via the pusher SDK', () => {
  let h;
  let sdk;
  before(async () => {
    h = await Harness.start();
    sdk = h.sdkClient;
  });
  afterEach(() => h.closeClients());
  after(() => h.close());

  test('trigger to one channel reaches a pusher-js subscriber', async () => {
    const name = channelName();
    const { channel } = await subscribe(h.client(), name);
    const got = nextEvent(channel, 'my-event');
    const res = await sdk.trigger(name, 'my-event', { message: 'hello world' });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), {});
    assert.deepEqual((await got).data, { message: 'hello world' });
  });

  test('string data is delivered as given', async () => {
    const name = channelName();
    const { channel } = await subscribe(h.client(), name);
    const got = nextEvent(channel, 'text');
    await sdk.trigger(name, 'text', 'just a string');
    assert.equal((await got).data, 'just a string');
  });

  test('trigger to multiple channels reaches each', async () => {
    const names = [channelName(), channelName(), channelName()];
    const client = h.client();
    const channels = await Promise.all(names.map((n) => subscribe(client, n).then((r) => r.channel)));
    const got = channels.map((c) => nextEvent(c, 'multi'));
    await sdk.trigger(names, 'multi', { n: 3 });
    for (const g of got) assert.deepEqual((await g).data, { n: 3 });
  });

  test('socket_id excludes that connection only', async () => {
    const name = channelName();
    const excluded = h.client();
    const other = h.client();
    const { channel: exChannel } = await subscribe(excluded, name);
    const { channel: otherChannel } = await subscribe(other, name);
    const seenByExcluded = collect(exChannel, 'not-you');
    const got = nextEvent(otherChannel, 'not-you');
    await sdk.trigger(name, 'not-you', { x: 1 }, { socket_id: excluded.connection.socket_id });
    assert.deepEqual((await got).data, { x: 1 });
    await sleep(300);
    assert.deepEqual(seenByExcluded, []);
  });

  test('info=subscription_count,user_count is answered per channel', async () => {
    const name = channelName('presence-');
    await subscribe(h.client({ presence: presence('u1') }), name);
    await subscribe(h.client({ presence: presence('u1') }), name);
    await subscribe(h.client({ presence: presence('u2') }), name);
    const res = await sdk.trigger(name, 'counted', {}, { info: 'subscription_count,user_count' });
    const body = await res.json();
    assert.deepEqual(body, { channels: { [name]: { subscription_count: 3, user_count: 2 } } });

    const pub = channelName();
    await subscribe(h.client(), pub);
    const res2 = await sdk.trigger(pub, 'counted', {}, { info: 'subscription_count' });
    assert.deepEqual(await res2.json(), { channels: { [pub]: { subscription_count: 1 } } });
  });

  test('triggerBatch delivers every event', async () => {
    const a = channelName();
    const b = channelName();
    const client = h.client();
    const { channel: ca } = await subscribe(client, a);
    const { channel: cb } = await subscribe(client, b);
    const gotA = nextEvent(ca, 'batch-a');
    const gotB = nextEvent(cb, 'batch-b');
    const res = await sdk.triggerBatch([
      { channel: a, name: 'batch-a', data: { i: 1 } },
      { channel: b, name: 'batch-b', data: { i: 2 } },
    ]);
    assert.equal(res.status, 200);
    assert.deepEqual((await gotA).data, { i: 1 });
    assert.deepEqual((await gotB).data, { i: 2 });
  });

  test('triggerBatch with info answers one entry per event', async () => {
    const a = channelName();
    await subscribe(h.client(), a);
    const res = await sdk.triggerBatch([
      { channel: a, name: 'e', data: {}, info: 'subscription_count' },
      { channel: a, name: 'e', data: {} },
    ]);
    const body = await res.json();
    assert.deepEqual(body, { batch: [{ subscription_count: 1 }, {}] });
  });

  test('a batch of 11 events is refused with 400', async () => {
    const name = channelName();
    const batch = Array.from({ length: 11 }, (_, i) => ({ channel: name, name: 'e', data: { i } }));
    await rejectsWithStatus(sdk.triggerBatch(batch), 400);
  });

  test('a batch is all or nothing: one oversized event refuses it all (413), nothing delivered', async () => {
    const name = channelName();
    const { channel } = await subscribe(h.client(), name);
    const seen = collect(channel, 'partial');
    await rejectsWithStatus(
      sdk.triggerBatch([
        { channel: name, name: 'partial', data: { ok: true } },
        { channel: name, name: 'partial', data: 'x'.repeat(10 * 1024 + 1) },
      ]),
      413
    );
    await sleep(200);
    assert.deepEqual(seen, []);
  });

  test('data of exactly 10 KB is accepted; one byte more is refused with 413', async () => {
    const name = channelName();
    const { channel } = await subscribe(h.client(), name);
    const got = nextEvent(channel, 'big');
    await sdk.trigger(name, 'big', 'x'.repeat(10 * 1024));
    assert.equal((await got).data.length, 10 * 1024);
    const err = await rejectsWithStatus(sdk.trigger(name, 'big', 'x'.repeat(10 * 1024 + 1)), 413);
    assert.ok(err.body.length > 0);
  });

  test('a wrong secret is refused with 401', async () => {
    const wrong = h.sdk({ secret: 'wrong-secret' });
    await rejectsWithStatus(wrong.trigger(channelName(), 'e', {}), 401);
    await rejectsWithStatus(wrong.get({ path: '/channels' }), 401);
  });

  test('a wrong key is refused with 401', async () => {
    const wrong = h.sdk({ key: 'wrong-key' });
    await rejectsWithStatus(wrong.trigger(channelName(), 'e', {}), 401);
  });

  test('an unknown app id is refused (404)', async () => {
    const wrong = h.sdk({ appId: '999999999' });
    await rejectsWithStatus(wrong.trigger(channelName(), 'e', {}), 404);
  });

  test('GET /channels with filter_by_prefix and info=user_count', async () => {
    const prefix = `presence-${crypto.randomBytes(4).toString('hex')}-`;
    const one = `${prefix}one`;
    const two = `${prefix}two`;
    const elsewhere = channelName('presence-');
    await subscribe(h.client({ presence: presence('a') }), one);
    await subscribe(h.client({ presence: presence('b') }), one);
    await subscribe(h.client({ presence: presence('a') }), two);
    await subscribe(h.client({ presence: presence('c') }), elsewhere);
    const res = await sdk.get({ path: '/channels', params: { filter_by_prefix: prefix, info: 'user_count' } });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), {
      channels: { [one]: { user_count: 2 }, [two]: { user_count: 1 } },
    });
  });

  test('GET /channels without info lists occupied channels only', async () => {
    const prefix = `pub${crypto.randomBytes(4).toString('hex')}-`;
    const client = h.client();
    await subscribe(client, `${prefix}a`);
    await subscribe(client, `${prefix}b`);
    const res = await sdk.get({ path: '/channels', params: { filter_by_prefix: prefix } });
    const body = await res.json();
    assert.deepEqual(Object.keys(body.channels).sort(), [`${prefix}a`, `${prefix}b`]);
    client.unsubscribe(`${prefix}b`);
    await sleep(100);
    const res2 = await sdk.get({ path: '/channels', params: { filter_by_prefix: prefix } });
    assert.deepEqual(Object.keys((await res2.json()).channels), [`${prefix}a`]);
  });

  test('GET /channels with info=user_count and no presence- prefix is 400', async () => {
    await rejectsWithStatus(sdk.get({ path: '/channels', params: { info: 'user_count' } }), 400);
  });

  test('GET /channels/{name} answers occupied, user_count, subscription_count', async () => {
    const name = channelName('presence-');
    await subscribe(h.client({ presence: presence('a') }), name);
    await subscribe(h.client({ presence: presence('a') }), name);
    await subscribe(h.client({ presence: presence('b') }), name);
    const res = await sdk.get({ path: `/channels/${name}`, params: { info: 'user_count,subscription_count' } });
    assert.deepEqual(await res.json(), { occupied: true, user_count: 2, subscription_count: 3 });

    const empty = await sdk.get({ path: `/channels/${channelName()}` });
    assert.equal((await empty.json()).occupied, false);

    const pub = channelName();
    await subscribe(h.client(), pub);
    const pubRes = await sdk.get({ path: `/channels/${pub}`, params: { info: 'subscription_count' } });
    assert.deepEqual(await pubRes.json(), { occupied: true, subscription_count: 1 });
  });

  test('GET /channels/{name}?info=user_count on a non-presence channel is 400', async () => {
    const name = channelName('private-');
    await rejectsWithStatus(sdk.get({ path: `/channels/${name}`, params: { info: 'user_count' } }), 400);
  });

  test('GET /channels/{presence}/users lists the members', async () => {
    const name = channelName('presence-');
    await subscribe(h.client({ presence: presence('alice') }), name);
    await subscribe(h.client({ presence: presence('bob') }), name);
    await subscribe(h.client({ presence: presence('bob') }), name);
    const res = await sdk.get({ path: `/channels/${name}/users` });
    const body = await res.json();
    assert.deepEqual(
      body.users.map((u) => u.id).sort(),
      ['alice', 'bob']
    );
  });

  test('GET /channels/{non-presence}/users is 400', async () => {
    await rejectsWithStatus(sdk.get({ path: `/channels/${channelName('private-')}/users` }), 400);
    await rejectsWithStatus(sdk.get({ path: `/channels/${channelName()}/users` }), 400);
  });

  test('channel names with every allowed character (-_=@,.;) work end to end', async () => {
    const name = `private-${crypto.randomBytes(3).toString('hex')}-a_b=c@d,e.f;g`;
    const { channel } = await subscribe(h.client(), name);
    const got = nextEvent(channel, 'odd-name');
    await sdk.trigger(name, 'odd-name', { ok: 1 });
    assert.deepEqual((await got).data, { ok: 1 });
    const res = await sdk.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } });
    assert.deepEqual(await res.json(), { occupied: true, subscription_count: 1 });
  });

  test('an unknown info attribute is 400', async () => {
    await rejectsWithStatus(sdk.trigger(channelName(), 'e', {}, { info: 'bogus' }), 400);
  });
});
