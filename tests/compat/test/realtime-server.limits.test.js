'use strict';
// The server's limits as the official clients meet them: a connection holds at most
// --max-channels-per-connection channels (beyond, pusher:subscription_error and a
// pusher:error 4303, the connection stays up); a client address holds at most
// --max-connections-per-address sockets (beyond, close 4100), counted by the address
// trusted proxies name, never by one a client forges; and api-server's embedded server
// refuses public channels (pusher:error 4302) unless REALTIME_PUBLIC_CHANNELS=true.
const { describe, test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { Harness, connected, subscribe, subscriptionError, nextEvent, channelName, waitUntil } = require('../lib/clients');
const { ApiServer } = require('../lib/api-server');

const presence = (id) => ({ user_id: id, user_info: {} });

/** Every pusher:error a pusher-js connection reports. */
function pusherErrors(client) {
  const errors = [];
  client.connection.bind('error', (e) => {
    if (e && e.type === 'PusherError') errors.push(e.data);
  });
  return errors;
}

describe('channels per connection (--max-channels-per-connection 3)', () => {
  let h;
  before(async () => {
    h = await Harness.start({ args: ['--max-channels-per-connection', '3'] });
  });
  afterEach(() => h.closeClients());
  after(() => h.close());

  test('the fourth subscription is refused; the three kept still get events; one left makes room', async () => {
    const client = await h.connectedClient({ presence: presence('alice') });
    const errors = pusherErrors(client);
    const names = [channelName(''), channelName('private-'), channelName('presence-')];
    const channels = [];
    for (const name of names) channels.push((await subscribe(client, name)).channel);

    const fourth = channelName('');
    const { data } = await subscriptionError(client, fourth);
    assert.equal(data.status, 400, JSON.stringify(data));
    await waitUntil(() => errors.length > 0, 2000, 'the pusher:error');
    assert.equal(errors[0].code, 4303, JSON.stringify(errors));
    assert.equal(client.connection.state, 'connected', 'the connection stays up');
    const res = await h.sdkClient.get({ path: `/channels/${fourth}` });
    assert.equal((await res.json()).occupied, false, 'nothing was added');

    for (const [i, name] of names.entries()) {
      const got = nextEvent(channels[i], 'still-here');
      await h.sdkClient.trigger(name, 'still-here', { i });
      assert.deepEqual((await got).data, { i });
    }

    client.unsubscribe(names[0]);
    await waitUntil(async () => {
      const info = await h.sdkClient.get({ path: `/channels/${names[0]}` });
      return (await info.json()).occupied === false;
    }, 3000, 'the unsubscribe');
    // pusher-js keeps the refused channel object; a new name subscribes afresh.
    const fifth = channelName('');
    const { channel } = await subscribe(client, fifth);
    assert.equal(channel.subscribed, true);
  });
});

describe('connections per address (--max-connections-per-address 2)', () => {
  let h;
  before(async () => {
    h = await Harness.start({ args: ['--max-connections-per-address', '2'] });
  });
  afterEach(() => h.closeClients());
  after(() => h.close());

  test('the third socket from one address is closed with 4100; a closed one frees its place', async () => {
    const first = await h.rawConnected();
    await h.rawConnected();
    const third = h.raw();
    const { code } = await third.waitClosed();
    assert.equal(code, 4100);
    const error = third.frames.find((f) => f.event === 'pusher:error');
    assert.equal(error && error.json.code, 4100);

    first.close();
    await first.closed;
    // The server notices the close asynchronously; retry until the place is free.
    const socketId = await waitUntil(async () => h.raw().established(500).catch(() => null), 5000, 'a freed place');
    assert.match(String(socketId), /^\d+\.\d+$/);
  });

  test('a forged X-Forwarded-For from an untrusted peer changes nothing', async () => {
    await h.rawConnected({ headers: { 'X-Forwarded-For': '198.51.100.1' } });
    await h.rawConnected({ headers: { 'X-Forwarded-For': '198.51.100.2' } });
    const forged = h.raw(undefined, { headers: { 'X-Forwarded-For': '198.51.100.3', Forwarded: 'for=198.51.100.4' } });
    assert.equal((await forged.waitClosed()).code, 4100);
  });
});

describe('connections per address behind a trusted proxy (--trusted-proxies 127.0.0.1)', () => {
  let h;
  before(async () => {
    h = await Harness.start({ args: ['--max-connections-per-address', '1', '--trusted-proxies', '127.0.0.1'] });
  });
  afterEach(() => h.closeClients());
  after(() => h.close());

  test('each client the proxy names is counted apart', async () => {
    await h.rawConnected({ headers: { 'X-Forwarded-For': '198.51.100.1' } });
    await h.rawConnected({ headers: { 'X-Forwarded-For': '198.51.100.2' } });
    const again = h.raw(undefined, { headers: { 'X-Forwarded-For': '198.51.100.1' } });
    assert.equal((await again.waitClosed()).code, 4100);
  });
});

describe("api-server's embedded server: public channels", () => {
  test('refused by default with pusher:error 4302; the connection stays up for the inbox channels', async () => {
    const server = await ApiServer.start();
    try {
      const alice = await server.login('alice@example.com');
      const client = await server.client(alice.token);
      const errors = pusherErrors(client);
      await connected(client);
      const { data } = await subscriptionError(client, 'news');
      assert.equal(data.status, 403, JSON.stringify(data));
      await waitUntil(() => errors.length > 0, 2000, 'the pusher:error');
      assert.equal(errors[0].code, 4302, JSON.stringify(errors));
      assert.equal(client.connection.state, 'connected');
      const { channel } = await subscribe(client, 'private-contact-1');
      assert.equal(channel.subscribed, true);
    } finally {
      await server.stop();
    }
  });

  test('accepted with REALTIME_PUBLIC_CHANNELS=true', async () => {
    const server = await ApiServer.start({ env: { REALTIME_PUBLIC_CHANNELS: 'true' } });
    try {
      const alice = await server.login('alice@example.com');
      const client = await server.client(alice.token);
      await connected(client);
      const { channel } = await subscribe(client, 'news');
      assert.equal(channel.subscribed, true);
    } finally {
      await server.stop();
    }
  });
});
