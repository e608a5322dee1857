'use strict';
// Connecting: connection_established, ping/pong, the activity timeout, the close
// codes of refused connections, and /metrics.
const { describe, test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { Harness, connected, withTimeout, waitUntil, channelName } = require('../lib/clients');

describe('connection', () => {
  let h;
  before(async () => {
    h = await Harness.start();
  });
  afterEach(() => h.closeClients());
  after(() => h.close());

  test('pusher-js connects and gets a socket id like 123.456', async () => {
    const client = h.client();
    const socketId = await connected(client);
    assert.match(socketId, /^\d+\.\d+$/);
  });

  test('raw connection_established carries socket_id and activity_timeout (data is a JSON string)', async () => {
    const raw = h.raw();
    const frame = await raw.next('pusher:connection_established');
    assert.equal(typeof frame.data, 'string', 'data is JSON text, as Pusher sends it');
    assert.match(frame.json.socket_id, /^\d+\.\d+$/);
    assert.equal(frame.json.activity_timeout, 120);
  });

  test('two connections get different socket ids', async () => {
    const [a, b] = await Promise.all([h.rawConnected(), h.rawConnected()]);
    assert.notEqual(a.socketId, b.socketId);
  });

  test('pusher:ping is answered with pusher:pong', async () => {
    const raw = await h.rawConnected();
    raw.send({ event: 'pusher:ping', data: {} });
    const pong = await raw.next('pusher:pong');
    assert.equal(pong.event, 'pusher:pong');
    // pusher-js sends data as a string on some paths: that works too.
    raw.send({ event: 'pusher:ping', data: '{}' });
    await raw.next('pusher:pong');
  });

  test("a client's close frame is answered with one echoing its code", async () => {
    const raw = await h.rawConnected();
    raw.ws.close(4000, 'bye');
    // Without the server's close frame, ws would report 1006 (abnormal).
    const { code } = await raw.waitClosed();
    assert.equal(code, 4000);
  });

  test('unknown app key: close 4001', async () => {
    const raw = h.raw('/app/wrongkey?protocol=7');
    const { code } = await raw.waitClosed();
    assert.equal(code, 4001);
    const error = raw.frames.find((f) => f.event === 'pusher:error');
    if (error) assert.equal(error.json.code, 4001);
  });

  test('pusher-js with an unknown key reports error 4001 and does not connect', async () => {
    const bad = h.client({ key: 'wrongkey' });
    const error = await withTimeout(
      new Promise((resolve) => bad.connection.bind('error', resolve)),
      3000,
      'pusher-js error event'
    );
    const data = (error.error && error.error.data) || error.data || {};
    assert.equal(data.code, 4001, JSON.stringify(error));
    assert.notEqual(bad.connection.state, 'connected');
  });

  test('missing protocol: close 4006', async () => {
    const raw = h.raw(`/app/${h.server.key}`);
    const { code } = await raw.waitClosed();
    assert.equal(code, 4006);
  });

  test('non-numeric protocol: close 4006', async () => {
    const raw = h.raw(`/app/${h.server.key}?protocol=seven`);
    const { code } = await raw.waitClosed();
    assert.equal(code, 4006);
  });

  test('unsupported protocol=99: close 4007', async () => {
    const raw = h.raw(`/app/${h.server.key}?protocol=99`);
    const { code } = await raw.waitClosed();
    assert.equal(code, 4007);
  });

  test('wrong path /app/{key}/extra: close 4005', async () => {
    const raw = h.raw(`/app/${h.server.key}/extra?protocol=7`);
    const { code } = await raw.waitClosed();
    assert.equal(code, 4005);
  });

  test('/metrics answers Prometheus text with realtime_connections', async () => {
    await h.rawConnected();
    const res = await fetch(`http://127.0.0.1:${h.port}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /realtime_connections/);
    const value = Number((text.match(/^realtime_connections (\d+)/m) || [])[1]);
    assert.ok(value >= 1, `realtime_connections is ${value} with a client connected`);
  });
});

describe('a client that stops reading', () => {
  let h;
  before(async () => {
    h = await Harness.start();
  });
  afterEach(() => h.closeClients());
  after(() => h.close());

  test('is told 4100 and closed once its queue is full; the others get every event', async () => {
    const name = channelName('firehose-');
    const stalled = await h.rawConnected();
    const reader = await h.rawConnected();
    await stalled.subscribe(name);
    await reader.subscribe(name);
    // The stalled client stops reading its socket: the kernel's buffers,
    // then the server's queue for it, fill up.
    stalled.ws._socket.pause();
    const sdk = h.sdk();
    const data = 'x'.repeat(9000);
    const subscribers = async () => {
      const res = await sdk.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } });
      return (await res.json()).subscription_count;
    };
    let sent = 0;
    while ((await subscribers()) === 2) {
      assert.ok(sent < 5000, 'the stalled client was never disconnected');
      const batch = Array.from({ length: 10 }, (_, i) => ({ channel: name, name: 'flood', data: `${sent + i}:${data}` }));
      const res = await sdk.triggerBatch(batch);
      assert.equal(res.status, 200);
      sent += batch.length;
    }
    // The server keeps at most OUTBOX_CAPACITY (512) frames for a client.
    assert.ok(sent > 512, `disconnected after only ${sent} events`);
    await waitUntil(() => reader.frames.filter((f) => f.event === 'flood').length === sent, 10000, 'every event at the reader');
    const flood = reader.frames.filter((f) => f.event === 'flood').map((f) => Number(f.data.split(':')[0]));
    assert.deepEqual(flood, Array.from({ length: sent }, (_, i) => i), 'in order, none lost');

    // Reading again, the stalled client gets what was queued, then why it is closed.
    stalled.ws._socket.resume();
    const { code } = await stalled.waitClosed(20000);
    assert.equal(code, 4100);
    const error = stalled.frames.find((f) => f.event === 'pusher:error');
    assert.equal(error && error.json.code, 4100);
    const received = stalled.frames.filter((f) => f.event === 'flood').map((f) => Number(f.data.split(':')[0]));
    assert.deepEqual(received, Array.from({ length: received.length }, (_, i) => i), 'a prefix, in order');
    assert.ok(stalled.frames.indexOf(error) > stalled.frames.findLastIndex((f) => f.event === 'flood'), 'the error comes last');
  });
});

describe('connection limit (--max-connections 2)', () => {
  let h;
  before(async () => {
    h = await Harness.start({ args: ['--max-connections', '2'] });
  });
  after(() => h.close());

  test('the third connection is refused with 4100; a slot frees up when one leaves', async () => {
    const first = await h.rawConnected();
    await h.rawConnected();
    const third = h.raw();
    const { code } = await third.waitClosed();
    assert.equal(code, 4100);
    first.close();
    await first.closed;
    // The server notices the close asynchronously; retry briefly.
    let socketId = null;
    for (let i = 0; i < 20 && !socketId; i++) {
      const next = h.raw();
      socketId = await next.established(500).catch(() => null);
      if (!socketId) await new Promise((r) => setTimeout(r, 50));
    }
    assert.match(String(socketId), /^\d+\.\d+$/);
  });
});

describe('activity timeout (--activity-timeout 1)', () => {
  let h;
  before(async () => {
    h = await Harness.start({ activityTimeout: 1 });
  });
  after(() => h.close());

  test('a silent client gets pusher:ping then close 4201; one that answers stays', async () => {
    // autoPong:false so the ws library does not answer the server's protocol-level ping.
    const silent = h.raw(undefined, { autoPong: false });
    const polite = h.raw(undefined, { autoPong: false });
    polite.ws.on('message', (m) => {
      if (JSON.parse(m.toString()).event === 'pusher:ping') polite.send({ event: 'pusher:pong', data: {} });
    });
    const established = await silent.next('pusher:connection_established');
    assert.equal(established.json.activity_timeout, 1);
    await polite.established();
    const ping = await silent.next('pusher:ping', 2500);
    assert.equal(ping.event, 'pusher:ping');
    const { code } = await silent.waitClosed(3000);
    assert.equal(code, 4201);
    await polite.next('pusher:ping', 1000).catch(() => {});
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(polite.closeInfo, null, 'a client answering pusher:pong stays connected');
  });

  test('pusher-js keeps its connection alive through the pings', async () => {
    const client = h.client();
    const socketId = await connected(client);
    await new Promise((r) => setTimeout(r, 2600));
    assert.equal(client.connection.state, 'connected');
    assert.equal(client.connection.socket_id, socketId, 'same connection, no reconnect');
  });
});
