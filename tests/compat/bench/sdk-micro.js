'use strict';
// Micro-benchmark of the official `pusher` Node server SDK (the reference
// implementation realtime-core is compared against). Prints ONE JSON object:
//   {"sdk":"pusher@x.y.z","node":"vNN","iterations":N,"runs":5,"ns_per_call":{...}}
// Each figure is the median over 5 runs of N calls, after a warm-up run.
//
//   node bench/sdk-micro.js [--iterations 20000]
//
// What each entry measures:
//   private_auth   pusher.authorizeChannel(socketId, 'private-foobar')
//   presence_auth  pusher.authorizeChannel(socketId, 'presence-foobar', {user_id, user_info})
//   user_auth      pusher.authenticateUser(socketId, {id, user_info})
//   webhook_verify pusher.webhook({headers, rawBody}).isValid() on a ~200 byte body
//                  signed with HMAC-SHA256 hex (the SDK also needs
//                  content-type: application/json or isValid() is false)
//   sign_request   pusher/lib/requests.createSignedQueryString(token, {POST,
//                  /apps/ID/events, body}) -- exactly the signing step the SDK's
//                  send() does per trigger: body_md5 + sorted query + HMAC-SHA256.
//                  The body is pre-serialised (JSON.stringify is not counted).
//   encrypt        pusher/lib/events.trigger() on a 'private-encrypted-' channel
//                  with pusher.post stubbed out: the SDK's private encrypt()
//                  (sha256 channel key + nacl secretbox + base64) for a ~100 byte
//                  payload, plus building the event object; no HTTP.
const crypto = require('node:crypto');
const Pusher = require('pusher');
const requests = require('pusher/lib/requests');
const events = require('pusher/lib/events');
const sdkVersion = require('pusher/package.json').version;

const argIdx = process.argv.indexOf('--iterations');
const N = argIdx > 0 ? Number(process.argv[argIdx + 1]) : 20000;
const RUNS = 5;

const key = '278d425bdf160c739803';
const secret = '7ad3773142a6692b25b8';
const socketId = '1234.1234';
const pusher = new Pusher({
  appId: '1', key, secret,
  encryptionMasterKeyBase64: crypto.randomBytes(32).toString('base64'),
});

// Webhook body (~200 bytes) and its correct signature.
const webhookBody = JSON.stringify({
  time_ms: 1327078148132,
  events: [{ name: 'channel_occupied', channel: 'private-foobar-channel-0001' },
           { name: 'member_added', channel: 'presence-foobar', user_id: 'u1' },
           { name: 'channel_vacated', channel: 'c' }],
});
if (webhookBody.length < 190 || webhookBody.length > 230) throw new Error('webhook body size');
const webhookSig = crypto.createHmac('sha256', secret).update(webhookBody).digest('hex');
const webhookHeaders = {
  'x-pusher-key': key,
  'x-pusher-signature': webhookSig,
  'content-type': 'application/json',
};

// Request that trigger() would sign for POST /events.
const triggerPath = pusher.config.prefixPath('/events');
const triggerBody = JSON.stringify({ name: 'my-event', channels: ['my-channel'], data: '{"message":"hello world"}' });

// Encrypt: ~100 byte payload, post() stubbed so no request is made.
const encPayload = { message: 'x'.repeat(86) };
if (JSON.stringify(encPayload).length !== 100) throw new Error('payload size');
const encPusher = Object.create(pusher);
encPusher.post = (opts) => opts.body;

const presenceData = { user_id: 'u1', user_info: { name: 'Alice' } };
const userData = { id: 'u1', user_info: { name: 'Alice' } };

const cases = {
  private_auth: () => pusher.authorizeChannel(socketId, 'private-foobar'),
  presence_auth: () => pusher.authorizeChannel(socketId, 'presence-foobar', presenceData),
  user_auth: () => pusher.authenticateUser(socketId, userData),
  webhook_verify: () => pusher.webhook({ headers: webhookHeaders, rawBody: webhookBody }).isValid(),
  sign_request: () => requests.createSignedQueryString(pusher.config.token,
    { method: 'POST', path: triggerPath, body: triggerBody }),
  encrypt: () => events.trigger(encPusher, ['private-encrypted-foobar'], 'my-event', encPayload),
};

// Sanity checks so we never benchmark a failing path.
if (cases.webhook_verify() !== true) throw new Error('webhook did not verify');
if (!/auth_signature=[0-9a-f]{64}$/.test(cases.sign_request())) throw new Error('bad signature');
if (!JSON.parse(cases.encrypt().data).ciphertext) throw new Error('no ciphertext');

let sink = 0; // keep results observable so nothing is optimised away
function timeRun(fn) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) sink ^= (fn() ? 1 : 0);
  return Number(process.hrtime.bigint() - t0) / N;
}

const ns_per_call = {};
for (const [name, fn] of Object.entries(cases)) {
  timeRun(fn); // warm-up
  const runs = Array.from({ length: RUNS }, () => timeRun(fn)).sort((a, b) => a - b);
  ns_per_call[name] = Math.round(runs[RUNS >> 1]);
}

console.log(JSON.stringify({
  sdk: `pusher@${sdkVersion}`, node: process.version, iterations: N, runs: RUNS, ns_per_call,
}));
if (sink === 42) console.error(''); // unreachable-ish, defeats dead-code elimination
