'use strict';
// Load on POST /api/webhooks/twilio: inbound SMS signed by the official
// twilio SDK exactly as Twilio signs them, each with a new MessageSid, from
// 50 senders, with a fixed number of requests in flight on keep-alive
// connections. Prints one JSON object: requests/s, p50/p99 latency, errors.
//
//   node bench/inbound-load.js --url http://127.0.0.1:3901 --public-url http://127.0.0.1:3901 \
//     --token AUTH_TOKEN --to +14155550100 [--seconds 20] [--connections 64]

const http = require('node:http');
const crypto = require('node:crypto');
const twilio = require('twilio');

function arg(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : fallback;
}

const base = new URL(arg('url', 'http://127.0.0.1:3901'));
const publicUrl = arg('public-url', base.origin);
const token = arg('token');
const to = arg('to', '+14155550100');
const seconds = Number(arg('seconds', '20'));
const connections = Number(arg('connections', '64'));
const signedUrl = `${publicUrl}/api/webhooks/twilio`;
const agent = new http.Agent({ keepAlive: true, maxSockets: connections });

function post(params) {
  const body = new URLSearchParams(params).toString();
  const signature = twilio.getExpectedTwilioSignature(token, signedUrl, params);
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    const req = http.request(
      {
        host: base.hostname,
        port: base.port,
        path: '/api/webhooks/twilio',
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': Buffer.byteLength(body),
          'x-twilio-signature': signature,
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ ok: res.statusCode === 200, ns: Number(process.hrtime.bigint() - started) }));
      }
    );
    req.on('error', () => resolve({ ok: false, ns: Number(process.hrtime.bigint() - started) }));
    req.end(body);
  });
}

async function worker(deadline, latencies, counts) {
  while (Date.now() < deadline) {
    const sender = `+1415555${String(1000 + Math.floor(Math.random() * 50)).padStart(4, '0')}`;
    const params = {
      MessageSid: `SM${crypto.randomBytes(16).toString('hex')}`,
      AccountSid: 'AC00000000000000000000000000000000',
      From: sender,
      To: to,
      Body: 'load test inbound message',
      NumMedia: '0',
    };
    const { ok, ns } = await post(params);
    if (ok) latencies.push(ns);
    else counts.errors += 1;
  }
}

(async () => {
  const latencies = [];
  const counts = { errors: 0 };
  const started = Date.now();
  const deadline = started + seconds * 1000;
  await Promise.all(Array.from({ length: connections }, () => worker(deadline, latencies, counts)));
  const elapsed = (Date.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] / 1e6 : 0);
  console.log(JSON.stringify({
    endpoint: 'POST /api/webhooks/twilio',
    connections,
    seconds: elapsed,
    requests: latencies.length,
    errors: counts.errors,
    requests_per_s: Math.round(latencies.length / elapsed),
    p50_ms: Number(pct(0.5).toFixed(2)),
    p99_ms: Number(pct(0.99).toFixed(2)),
  }));
  agent.destroy();
})();
