'use strict';
// Graceful shutdown: SIGTERM tells every client to reconnect (4200), the process
// exits, and webhooks still queued are delivered first.
const { describe, test } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { Harness, connected, channelName, waitUntil, withTimeout } = require('../lib/clients');

describe('graceful shutdown (SIGTERM)', () => {
  test('a raw ws client gets close 4200; pusher-js is told to reconnect; the process exits', async (t) => {
    const h = await Harness.start();
    t.after(() => h.close());
    const raw = await h.rawConnected();
    await raw.subscribe(channelName());
    const client = h.client();
    await connected(client);

    h.server.signal('SIGTERM');
    const { code } = await raw.waitClosed(3000);
    assert.equal(code, 4200);
    const error = raw.frames.find((f) => f.event === 'pusher:error');
    if (error) assert.equal(error.json.code, 4200, error.raw);

    await waitUntil(() => client.connection.state !== 'connected', 3000, 'pusher-js to leave connected');
    const exit = await withTimeout(h.server.exited, 8000, 'the server process to exit');
    assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}\n${h.server.logs()}`);
  });

  test(
    'webhooks held by the leave delay are delivered before exit',
    async (t) => {
      const received = [];
      const receiver = http.createServer((req, res) => {
        let body = '';
        req.on('data', (c) => (body += c));
        req.on('end', () => {
          received.push({ headers: req.headers, rawBody: body });
          res.end('{}');
        });
      });
      await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
      t.after(() => new Promise((r) => receiver.close(r)));
      const h = await Harness.start({
        webhookUrl: `http://127.0.0.1:${receiver.address().port}/`,
        webhookLeaveDelay: 3,
      });
      t.after(() => h.close());
      const name = channelName();
      // A raw client: unlike pusher-js it does not reconnect and rejoin after 4200.
      const raw = await h.rawConnected();
      await raw.subscribe(name);
      const events = () =>
        received.flatMap((r) => {
          const hook = h.sdkClient.webhook({ headers: r.headers, rawBody: r.rawBody });
          assert.equal(hook.isValid(), true);
          return hook.getEvents();
        });
      await waitUntil(() => events().some((e) => e.name === 'channel_occupied'), 2000, 'channel_occupied');

      h.server.signal('SIGTERM');
      assert.equal((await raw.waitClosed()).code, 4200);
      await withTimeout(h.server.exited, 8000, 'the server process to exit');
      assert.deepEqual(
        events().filter((e) => e.channel === name).map((e) => e.name),
        ['channel_occupied', 'channel_vacated']
      );
    }
  );
});
