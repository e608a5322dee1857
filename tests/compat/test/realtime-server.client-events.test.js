'use strict';
// Client events (client-*): relayed to the channel's other subscribers, carrying
// user_id on presence channels, refused on public channels, rate limited, and off
// unless the server runs with --client-events.
const { describe, test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { Harness, subscribe, nextEvent, collect, channelName, waitUntil, sleep } = require('../lib/clients');

const presence = (id) => ({ user_id: id, user_info: { name: id } });

describe('client events (--client-events)', () => {
  let h;
  before(async () => {
    h = await Harness.start({ clientEvents: true });
  });
  afterEach(() => h.closeClients());
  after(() => h.close());

  test('private channel: relayed to the others, not echoed to the sender', async () => {
    const name = channelName('private-');
    const sender = h.client();
    const receiver = h.client();
    const { channel: sent } = await subscribe(sender, name);
    const { channel: recv } = await subscribe(receiver, name);
    const echoed = collect(sent, 'client-typing');
    const got = nextEvent(recv, 'client-typing');
    assert.equal(sent.trigger('client-typing', { typing: true }), true);
    const { data, metadata } = await got;
    assert.deepEqual(data, { typing: true });
    assert.equal(metadata && metadata.user_id, undefined, 'no user_id on a private channel');
    await sleep(300);
    assert.deepEqual(echoed, []);
  });

  test('presence channel: the sender user_id is in the metadata', async () => {
    const name = channelName('presence-');
    const sender = h.client({ presence: presence('sender-42') });
    const receiver = h.client({ presence: presence('receiver') });
    const { channel: sent } = await subscribe(sender, name);
    const { channel: recv } = await subscribe(receiver, name);
    const got = nextEvent(recv, 'client-moved');
    sent.trigger('client-moved', { x: 1, y: 2 });
    const { data, metadata } = await got;
    assert.deepEqual(data, { x: 1, y: 2 });
    assert.equal(metadata.user_id, 'sender-42');
  });

  test('public channel: refused with pusher:error, nothing relayed', async () => {
    const name = channelName();
    const raw = await h.rawConnected();
    await raw.subscribe(name);
    const { channel: listener } = await subscribe(h.client(), name);
    const seen = collect(listener, 'client-nope');
    raw.send({ event: 'client-nope', channel: name, data: {} });
    const error = await raw.next('pusher:error');
    assert.ok(error.json && error.json.message, error.raw);
    await sleep(200);
    assert.deepEqual(seen, []);
  });

  test('a channel the sender is not subscribed to: refused, nothing relayed', async () => {
    const name = channelName('private-');
    const raw = await h.rawConnected();
    const { channel: listener } = await subscribe(h.client(), name);
    const seen = collect(listener, 'client-sneaky');
    raw.send({ event: 'client-sneaky', channel: name, data: {} });
    await raw.next('pusher:error');
    await sleep(200);
    assert.deepEqual(seen, []);
  });

  test('data over 10 KB: refused with pusher:error', async () => {
    const name = channelName('private-');
    const raw = await h.rawConnected();
    await raw.subscribe(name, { sdk: h.sdkClient });
    const { channel: listener } = await subscribe(h.client(), name);
    const seen = collect(listener, 'client-big');
    raw.send({ event: 'client-big', channel: name, data: 'x'.repeat(10 * 1024 + 1) });
    await raw.next('pusher:error');
    await sleep(200);
    assert.deepEqual(seen, []);
  });

  test('rate limit: the 11th event in a second gets pusher:error 4301, only 10 are relayed', async () => {
    const name = channelName('private-');
    const raw = await h.rawConnected();
    const answer = await raw.subscribe(name, { sdk: h.sdkClient });
    assert.equal(answer.event, 'pusher_internal:subscription_succeeded');
    const { channel: listener } = await subscribe(h.client(), name);
    const seen = collect(listener, 'client-spam');
    for (let i = 0; i < 12; i++) raw.send({ event: 'client-spam', channel: name, data: { i } });
    const error = await raw.next('pusher:error');
    assert.equal(error.json.code, 4301, error.raw);
    await waitUntil(() => seen.length >= 10, 2000, '10 relayed events');
    await sleep(200);
    assert.equal(seen.length, 10);
    assert.deepEqual(seen.map((s) => s.data.i), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // The connection is still usable.
    raw.send({ event: 'pusher:ping', data: {} });
    await raw.next('pusher:pong');
  });
});

describe('client events disabled (no --client-events)', () => {
  let h;
  before(async () => {
    h = await Harness.start({ clientEvents: false });
  });
  afterEach(() => h.closeClients());
  after(() => h.close());

  test('pusher-js client events are not relayed', async () => {
    const name = channelName('private-');
    const sender = h.client();
    const receiver = h.client();
    const { channel: sent } = await subscribe(sender, name);
    const { channel: recv } = await subscribe(receiver, name);
    const seen = collect(recv, 'client-hello');
    sent.trigger('client-hello', { hi: 1 });
    await sleep(300);
    assert.deepEqual(seen, []);
  });

  test('raw ws gets pusher:error', async () => {
    const name = channelName('private-');
    const raw = await h.rawConnected();
    await raw.subscribe(name, { sdk: h.sdkClient });
    raw.send({ event: 'client-hello', channel: name, data: {} });
    const error = await raw.next('pusher:error');
    assert.ok(error.json.message, error.raw);
  });
});
