'use strict';
// Subscribing with pusher-js to public, private, presence and private-encrypted
// channels: valid authorizations succeed; a bad signature gets
// pusher:subscription_error and the client receives nothing on that channel.
const { describe, test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const nacl = require('tweetnacl');
const {
  Harness,
  subscribe,
  subscriptionError,
  nextEvent,
  recordFrames,
  channelName,
  sleep,
} = require('../lib/clients');

const presence = (id) => ({ user_id: id, user_info: { name: `user ${id}` } });

describe('channel subscriptions', () => {
  let h;
  before(async () => {
    h = await Harness.start();
  });
  afterEach(() => h.closeClients());
  after(() => h.close());

  const kinds = [
    { kind: 'public', prefix: '' },
    { kind: 'private', prefix: 'private-' },
    { kind: 'presence', prefix: 'presence-' },
    { kind: 'private-encrypted', prefix: 'private-encrypted-' },
  ];

  for (const { kind, prefix } of kinds) {
    test(`${kind}: subscription succeeds and a triggered event arrives`, async () => {
      const name = channelName(prefix);
      const client = h.client({ presence: presence('alice'), nacl });
      const { channel } = await subscribe(client, name);
      assert.equal(channel.subscribed, true);
      const got = nextEvent(channel, 'greeting');
      await h.sdkClient.trigger(name, 'greeting', { hello: kind });
      const { data } = await got;
      assert.deepEqual(data, { hello: kind });
    });

    if (kind === 'public') continue;

    test(`${kind}: a bad signature gets pusher:subscription_error and no events`, async () => {
      const name = channelName(prefix);
      // A client with a valid authorization proves the event really was published.
      const good = h.client({ presence: presence('good'), nacl });
      const { channel: goodChannel } = await subscribe(good, name);

      const bad = h.client({ sdk: h.badSdk, presence: presence('bad'), nacl });
      const frames = recordFrames(bad);
      const { channel, data } = await subscriptionError(bad, name);
      assert.equal(data.status, 401, JSON.stringify(data));
      assert.equal(channel.subscribed, false);

      const seen = [];
      channel.bind_global((event, payload) => seen.push({ event, payload }));
      const goodGot = nextEvent(goodChannel, 'secret');
      await h.sdkClient.trigger(name, 'secret', { n: 1 });
      await goodGot;
      await sleep(300);
      assert.deepEqual(seen, [], 'the refused client got nothing on the channel');
      const leaked = frames.filter((f) => f.channel === name && f.event !== 'pusher:subscription_error');
      assert.deepEqual(leaked, [], 'no frame for the channel reached the refused connection');
    });

    test(`${kind}: an authorization signed for another socket id is refused`, async () => {
      const name = channelName(prefix);
      const client = h.client({
        nacl,
        authorize: (params) =>
          h.sdkClient.authorizeChannel(
            '1234.5678',
            params.channelName,
            prefix === 'presence-' ? presence('replay') : undefined
          ),
      });
      const { data } = await subscriptionError(client, name);
      assert.equal(data.status, 401, JSON.stringify(data));
    });
  }

  test('private: subscribing without auth (raw ws) is refused', async () => {
    const raw = await h.rawConnected();
    const name = channelName('private-');
    const answer = await raw.subscribe(name, { auth: undefined });
    assert.equal(answer.event, 'pusher:subscription_error', answer.raw);
  });

  test('presence: a valid auth without channel_data (raw ws) is refused', async () => {
    const raw = await h.rawConnected();
    const name = channelName('presence-');
    const { auth } = h.sdkClient.authorizeChannel(raw.socketId, name);
    const answer = await raw.subscribe(name, { auth });
    assert.equal(answer.event, 'pusher:subscription_error', answer.raw);
  });

  test('presence: channel_data other than the signed one (raw ws) is refused', async () => {
    const raw = await h.rawConnected();
    const name = channelName('presence-');
    const { auth } = h.sdkClient.authorizeChannel(raw.socketId, name, presence('alice'));
    raw.send({
      event: 'pusher:subscribe',
      data: { channel: name, auth, channel_data: JSON.stringify(presence('mallory')) },
    });
    const answer = await raw.next((f) => f.channel === name);
    assert.equal(answer.event, 'pusher:subscription_error', answer.raw);
  });

  test('an invalid channel name (raw ws) is refused without hurting the connection', async () => {
    const raw = await h.rawConnected();
    raw.send({ event: 'pusher:subscribe', data: { channel: 'bad channel name!' } });
    const answer = await raw.next((f) => f.event === 'pusher:subscription_error' || f.event === 'pusher:error');
    assert.ok(answer, answer.raw);
    raw.send({ event: 'pusher:ping', data: {} });
    await raw.next('pusher:pong');
  });

  test('after unsubscribe, events on the channel stop', async () => {
    const name = channelName();
    const client = h.client();
    const frames = recordFrames(client);
    await subscribe(client, name);
    client.unsubscribe(name);
    // A second client shows the event was published.
    const other = h.client();
    const { channel } = await subscribe(other, name);
    const got = nextEvent(channel, 'after');
    await h.sdkClient.trigger(name, 'after', {});
    await got;
    await sleep(200);
    assert.equal(frames.filter((f) => f.event === 'after').length, 0);
  });

  test('subscribing twice to the same channel still answers subscription_succeeded (raw ws)', async () => {
    const raw = await h.rawConnected();
    const name = channelName();
    const first = await raw.subscribe(name);
    assert.equal(first.event, 'pusher_internal:subscription_succeeded');
    const second = await raw.subscribe(name);
    assert.equal(second.event, 'pusher_internal:subscription_succeeded');
    const got = raw.next('once');
    await h.sdkClient.trigger(name, 'once', {});
    await got;
    assert.ok(await raw.nothing('once', 200), 'the event is delivered once, not twice');
  });
});
