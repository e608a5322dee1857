'use strict';
// Malformed input on raw ws: each gets a pusher:error or a close, never a crash.
// After each one a second, healthy pusher-js client still receives a triggered
// event (the server is alive and other connections are unaffected).
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Harness, subscribe, nextEvent, channelName, withTimeout, sleep } = require('../lib/clients');

describe('malformed frames', () => {
  let h;
  let healthy;
  let healthyChannel;
  let channel;
  let n = 0;

  before(async () => {
    h = await Harness.start({ clientEvents: true });
    channel = channelName();
    healthy = h.client();
    ({ channel: healthyChannel } = await subscribe(healthy, channel));
  });
  after(() => h.close());

  /** The healthy client still gets a triggered event. */
  async function serverStillServes() {
    assert.equal(h.server.running, true, `server exited: ${h.server.logs()}`);
    const event = `alive-${++n}`;
    const got = nextEvent(healthyChannel, event, 2000);
    await h.sdkClient.trigger(channel, event, { n });
    assert.deepEqual((await got).data, { n });
    assert.equal(healthy.connection.state, 'connected');
  }

  /** Either a pusher:error frame or a close; answers which. */
  async function errorOrClose(raw, ms = 2000) {
    const outcome = await withTimeout(
      Promise.race([
        raw.next('pusher:error', ms).then((f) => ({ error: f })),
        raw.closed.then((c) => ({ close: c })),
      ]),
      ms + 100,
      'pusher:error or close'
    );
    return outcome;
  }

  /** A connection that only got a pusher:error must still work. */
  async function stillUsable(raw) {
    raw.send({ event: 'pusher:ping', data: {} });
    await raw.next('pusher:pong');
  }

  const textCases = [
    ['not JSON', 'this is {not json'],
    ['a JSON array', '[1,2,3]'],
    ['JSON null', 'null'],
    ['a JSON string', '"pusher:ping"'],
    ['an object without event', '{"data":{}}'],
    ['a non-string event', '{"event":123,"data":{}}'],
    ['pusher:subscribe with data "garbage"', '{"event":"pusher:subscribe","data":"garbage"}'],
    ['pusher:subscribe with a numeric channel', '{"event":"pusher:subscribe","data":{"channel":123}}'],
    ['pusher:subscribe with no data', '{"event":"pusher:subscribe"}'],
    ['pusher:unsubscribe with data null', '{"event":"pusher:unsubscribe","data":null}'],
    ['deeply nested JSON (10000 levels)', '{"event":"client-x","channel":"private-x","data":' + '['.repeat(10000) + ']'.repeat(10000) + '}'],
  ];

  for (const [what, text] of textCases) {
    test(`${what}: pusher:error, connection and server unaffected`, async () => {
      const raw = await h.rawConnected();
      raw.send(text);
      const outcome = await errorOrClose(raw);
      assert.ok(outcome.error && !outcome.close, `${what}: ${JSON.stringify(outcome)}`);
      await stillUsable(raw);
      await serverStillServes();
      raw.close();
    });
  }

  test('pusher:signin with data "garbage": pusher:error 4009 and close 4009', async () => {
    const raw = await h.rawConnected();
    raw.send('{"event":"pusher:signin","data":"garbage"}');
    const error = await raw.next('pusher:error');
    assert.equal(error.json.code, 4009, error.raw);
    const { code } = await raw.waitClosed();
    assert.equal(code, 4009);
    await serverStillServes();
  });

  test('an unknown pusher: event is ignored, connection unaffected', async () => {
    const raw = await h.rawConnected();
    raw.send({ event: 'pusher:does_not_exist', data: {} });
    await stillUsable(raw);
    await serverStillServes();
  });

  test('a channel name over 164 characters: subscription_error', async () => {
    const raw = await h.rawConnected();
    const answer = await raw.subscribe('x'.repeat(200));
    assert.equal(answer.event, 'pusher:subscription_error', answer.raw);
    await stillUsable(raw);
    await serverStillServes();
  });

  test('a binary frame: pusher:error, connection unaffected', async () => {
    const raw = await h.rawConnected();
    raw.send(Buffer.from(JSON.stringify({ event: 'pusher:ping', data: {} })), { binary: true });
    const outcome = await errorOrClose(raw);
    assert.ok(outcome.error && !outcome.close, JSON.stringify(outcome));
    await stillUsable(raw);
    await serverStillServes();
  });

  test('a huge 100 KB frame: pusher:error, then close 1009, never a crash', async () => {
    const raw = await h.rawConnected();
    raw.send(JSON.stringify({ event: 'client-huge', channel: 'private-x', data: 'x'.repeat(100 * 1024) }));
    const error = await raw.next('pusher:error', 2000);
    assert.match(JSON.stringify(error.data), /too large/i);
    const { code } = await raw.waitClosed(3000);
    assert.equal(code, 1009);
    await serverStillServes();
  });

  test('a message in fragments over the frame limit altogether: close 1009', async () => {
    const raw = await h.rawConnected();
    const part = 'x'.repeat(40 * 1024);
    raw.ws.send(part, { fin: false });
    raw.ws.send(part, { fin: true });
    const { code } = await raw.waitClosed(3000);
    assert.equal(code, 1009);
    await serverStillServes();
  });

  test('a text message in fragments is read whole', async () => {
    const raw = await h.rawConnected();
    const ping = JSON.stringify({ event: 'pusher:ping', data: {} });
    raw.ws.send(ping.slice(0, 5), { fin: false });
    raw.ws.send(ping.slice(5, 12), { fin: false });
    raw.ws.send(ping.slice(12), { fin: true });
    await raw.next('pusher:pong', 2000);
    await stillUsable(raw);
  });

  test('a WebSocket ping is answered with a pong carrying its payload', async () => {
    const raw = await h.rawConnected();
    const pong = new Promise((resolve) => raw.ws.once('pong', resolve));
    raw.ws.ping(Buffer.from('are you there'));
    const payload = await withTimeout(pong, 2000);
    assert.equal(payload.toString(), 'are you there');
    await stillUsable(raw);
  });

  test('invalid UTF-8 in a text frame: close 1007, never a crash', async () => {
    const raw = await h.rawConnected();
    // ws does not validate outgoing text; these bytes are not UTF-8.
    raw.send(Buffer.from([0x7b, 0xff, 0xfe, 0xfd, 0x7d]), { binary: false });
    const { code } = await raw.waitClosed(3000);
    assert.equal(code, 1007);
    await serverStillServes();
  });

  test('a burst of 500 malformed frames: server unaffected', async () => {
    const raw = await h.rawConnected();
    for (let i = 0; i < 500; i++) raw.send(i % 2 ? '[]' : '{');
    await sleep(200);
    await serverStillServes();
  });

  test('many connections dropped mid-handshake and abruptly: server unaffected', async () => {
    const raws = await Promise.all(Array.from({ length: 20 }, () => h.rawConnected()));
    for (const raw of raws) raw.ws._socket.destroy();
    const half = Array.from({ length: 10 }, () => h.raw());
    for (const raw of half) raw.ws.once('upgrade', () => raw.ws._req && raw.ws._req.destroy());
    await sleep(200);
    await serverStillServes();
    const res = await fetch(`http://127.0.0.1:${h.port}/metrics`);
    const text = await res.text();
    const open = Number((text.match(/^realtime_connections (\d+)/m) || [])[1]);
    assert.ok(open < 20, `dropped connections are forgotten (realtime_connections ${open})`);
  });

  test(
    'a fragmented text message (continuation frames) is reassembled',
    async () => {
      const raw = await h.rawConnected();
      raw.send('{"event":"pusher:', { fin: false });
      raw.send('ping","data":{}}', { fin: true });
      await raw.next('pusher:pong', 1000);
    }
  );

  test('after all of it the server still serves', async () => {
    await serverStillServes();
  });
});
