'use strict';
// A local webhook receiver for the compatibility suite: a node:http server that keeps
// every request in arrival order, and answers the events of each, checked with the
// `pusher` SDK's webhook().isValid() (an invalid one throws, naming the request).

const http = require('node:http');

/**
 * Starts a receiver on a free loopback port. Answers
 * { url, received, events(sdk), close() }: `received` holds { at, headers, rawBody };
 * `events(sdk)` every event of every request, verified with `sdk`, with its arrival time.
 */
function startWebhookReceiver() {
  const received = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      received.push({ at: Date.now(), headers: req.headers, rawBody: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}/webhooks`,
        received,
        events(sdk) {
          const all = [];
          for (const r of received) {
            const hook = sdk.webhook({ headers: r.headers, rawBody: r.rawBody });
            if (!hook.isValid()) throw new Error(`a webhook failed the SDK's signature check: ${JSON.stringify(r.headers)} ${r.rawBody}`);
            for (const e of hook.getEvents()) all.push({ ...e, at: r.at });
          }
          return all;
        },
        close: () =>
          new Promise((r) => {
            server.closeAllConnections();
            server.close(r);
          }),
      });
    });
  });
}

module.exports = { startWebhookReceiver };
