'use strict';
// Webhooks: a local node:http receiver checks each request with the SDK's
// webhook().isValid(); the lifecycle events arrive, leaves wait out
// --webhook-leave-delay, and a quick leave + rejoin sends nothing.
const { describe, test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { Harness, subscribe, connected, channelName, waitUntil, sleep } = require('../lib/clients');

const LEAVE_DELAY = 0.2;

/** A webhook receiver: every request, verified with the SDK, in arrival order. */
function startReceiver() {
  const received = [];
  let failNext = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      if (failNext > 0) {
        failNext--;
        received.push({ failed: true, at: Date.now(), rawBody });
        res.writeHead(500);
        res.end('try again');
        return;
      }
      received.push({ at: Date.now(), headers: req.headers, rawBody });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}/webhooks`,
        received,
        failNextRequests(n) {
          failNext = n;
        },
        close: () => new Promise((r) => server.close(r)),
      });
    });
  });
}

describe('webhooks', () => {
  let h;
  let receiver;
  let sdk;

  /** Every event of every valid delivered webhook, with its arrival time. */
  function events() {
    const all = [];
    for (const r of receiver.received) {
      if (r.failed) continue;
      const hook = sdk.webhook({ headers: r.headers, rawBody: r.rawBody });
      if (!hook.isValid()) throw new Error(`invalid webhook: ${JSON.stringify(r.headers)} ${r.rawBody}`);
      for (const e of hook.getEvents()) all.push({ ...e, at: r.at });
    }
    return all;
  }
  const on = (channel) => events().filter((e) => e.channel === channel);
  const names = (list) => list.map((e) => (e.user_id && e.name.startsWith('member') ? `${e.name}:${e.user_id}` : e.name));

  before(async () => {
    receiver = await startReceiver();
    h = await Harness.start({ webhookUrl: receiver.url, webhookLeaveDelay: LEAVE_DELAY, clientEvents: true });
    sdk = h.sdkClient;
  });
  afterEach(() => h.closeClients());
  after(async () => {
    await h.close();
    await receiver.close();
  });

  test('every webhook is signed (SDK isValid) and sent as application/json', async () => {
    const name = channelName();
    await subscribe(h.client(), name);
    await waitUntil(() => receiver.received.length > 0, 2000, 'a webhook');
    const r = receiver.received[0];
    assert.equal(r.headers['content-type'], 'application/json');
    assert.equal(r.headers['x-pusher-key'], h.server.key);
    const hook = sdk.webhook({ headers: r.headers, rawBody: r.rawBody });
    assert.equal(hook.isValid(), true);
    assert.ok(Math.abs(hook.getTime().getTime() - Date.now()) < 60000, 'time_ms is now');
    // Signed with the app secret, not anything else.
    const wrong = h.sdk({ secret: 'not-the-secret' });
    assert.equal(wrong.webhook({ headers: r.headers, rawBody: r.rawBody }).isValid(), false);
  });

  test('channel_occupied, member_added, client_event, member_removed, channel_vacated', async () => {
    const name = channelName('presence-');
    const alice = h.client({ presence: { user_id: 'alice', user_info: {} } });
    const bob = h.client({ presence: { user_id: 'bob', user_info: {} } });
    const { channel: aliceChannel } = await subscribe(alice, name);
    await subscribe(bob, name);
    aliceChannel.trigger('client-wave', { hello: 'bob' });
    await waitUntil(() => on(name).some((e) => e.name === 'client_event'), 2000, 'client_event webhook');

    const client = on(name).find((e) => e.name === 'client_event');
    assert.equal(client.event, 'client-wave');
    assert.deepEqual(JSON.parse(client.data), { hello: 'bob' });
    assert.equal(client.socket_id, alice.connection.socket_id);
    assert.equal(client.user_id, 'alice');

    const leftAt = Date.now();
    bob.disconnect();
    alice.disconnect();
    await waitUntil(() => on(name).some((e) => e.name === 'channel_vacated'), 3000, 'channel_vacated webhook');
    await sleep(100);

    const seen = names(on(name));
    assert.deepEqual(
      [...seen].sort(),
      ['channel_occupied', 'channel_vacated', 'client_event', 'member_added:alice', 'member_added:bob', 'member_removed:alice', 'member_removed:bob'].sort(),
      JSON.stringify(seen)
    );
    assert.equal(seen[0], 'channel_occupied');
    assert.ok(seen.indexOf('member_added:alice') < seen.indexOf('member_removed:alice'));
    const vacated = on(name).find((e) => e.name === 'channel_vacated');
    assert.ok(vacated.at - leftAt >= LEAVE_DELAY * 1000 * 0.75, `channel_vacated waited the leave delay (${vacated.at - leftAt} ms)`);
  });

  test('a private channel client_event has no user_id', async () => {
    const name = channelName('private-');
    const a = h.client();
    const { channel } = await subscribe(a, name);
    await subscribe(h.client(), name);
    channel.trigger('client-ping', 'text data');
    await waitUntil(() => on(name).some((e) => e.name === 'client_event'), 2000, 'client_event webhook');
    const e = on(name).find((x) => x.name === 'client_event');
    assert.equal(e.user_id, undefined);
    assert.equal(e.data, 'text data');
    assert.equal(e.socket_id, a.connection.socket_id);
  });

  test('a quick leave + rejoin within the delay sends no vacated/occupied flap', async () => {
    const name = channelName();
    const client = h.client();
    await subscribe(client, name);
    await waitUntil(() => on(name).some((e) => e.name === 'channel_occupied'), 2000, 'channel_occupied');
    client.unsubscribe(name);
    await sleep(20);
    await subscribe(client, name);
    await sleep(LEAVE_DELAY * 1000 + 400);
    assert.deepEqual(names(on(name)), ['channel_occupied'], 'no flap');

    // A real leave is still reported.
    client.unsubscribe(name);
    await waitUntil(() => on(name).some((e) => e.name === 'channel_vacated'), 2000, 'channel_vacated');
    assert.deepEqual(names(on(name)), ['channel_occupied', 'channel_vacated']);
  });

  test('a presence reconnect within the delay sends no member_removed/member_added flap', async () => {
    const name = channelName('presence-');
    const observer = h.client({ presence: { user_id: 'observer', user_info: {} } });
    await subscribe(observer, name);
    const first = h.client({ presence: { user_id: 'reloader', user_info: {} } });
    await subscribe(first, name);
    await waitUntil(() => names(on(name)).includes('member_added:reloader'), 2000, 'member_added');
    first.disconnect();
    const second = h.client({ presence: { user_id: 'reloader', user_info: {} } });
    await subscribe(second, name);
    await sleep(LEAVE_DELAY * 1000 + 400);
    assert.deepEqual(names(on(name)), ['channel_occupied', 'member_added:observer', 'member_added:reloader']);
  });

  test('the only member reloading within the delay sends nothing at all', async () => {
    const name = channelName('presence-');
    const first = h.client({ presence: { user_id: 'solo', user_info: {} } });
    await subscribe(first, name);
    await waitUntil(() => names(on(name)).includes('member_added:solo'), 2000, 'member_added');
    first.disconnect();
    await sleep(30);
    await subscribe(h.client({ presence: { user_id: 'solo', user_info: {} } }), name);
    await sleep(LEAVE_DELAY * 1000 + 400);
    assert.deepEqual(names(on(name)), ['channel_occupied', 'member_added:solo']);
  });

  test('user channels (#server-to-user-) send no webhooks', async () => {
    const client = h.client({ user: { id: 'hooked-user' } });
    await connected(client);
    client.signin();
    await waitUntil(() => client.user.user_data, 2000, 'signin');
    client.disconnect();
    await sleep(LEAVE_DELAY * 1000 + 300);
    assert.deepEqual(events().filter((e) => String(e.channel).startsWith('#server-to-user-')), []);
  });

  test('a failed delivery (500) is retried', async () => {
    const name = channelName();
    receiver.failNextRequests(1);
    await subscribe(h.client(), name);
    await waitUntil(() => on(name).some((e) => e.name === 'channel_occupied'), 4000, 'the retried webhook');
    assert.ok(receiver.received.some((r) => r.failed && r.rawBody.includes(name)), 'the first attempt failed');
  });
});
