'use strict';
// Trigger throughput through the official `pusher` Node SDK against a running
// Channels-compatible HTTP API (e.g. realtime-core on localhost). Fires --count
// triggers of {"body":"hello","n":i} on 'bench-channel' / 'bench-event',
// keeping --concurrency requests in flight over a keep-alive http.Agent, and
// prints ONE JSON object:
//   {"client":"node pusher@x","count":..,"concurrency":..,"errors":..,
//    "elapsed_s":..,"triggers_per_s":..,"cpu_us_per_trigger":..}
// cpu_us_per_trigger is this client's process.cpuUsage() (user+system) over the
// run divided by count: the client-side cost, not the server's.
//
//   node bench/trigger-throughput.js --host 127.0.0.1 --port 6001 \
//     --app-id ID --key KEY --secret SECRET [--count 20000] [--concurrency 32]
//
// Send this only to servers on this machine (loopback).
const http = require('node:http');
const { parseArgs } = require('node:util');
const Pusher = require('pusher');
const sdkVersion = require('pusher/package.json').version;

const { values: opt } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '6001' },
    'app-id': { type: 'string' },
    key: { type: 'string' },
    secret: { type: 'string' },
    count: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '32' },
  },
});
for (const k of ['app-id', 'key', 'secret']) {
  if (!opt[k]) { console.error(`missing --${k}`); process.exit(2); }
}
const count = Number(opt.count);
const concurrency = Number(opt.concurrency);

const pusher = new Pusher({
  appId: opt['app-id'], key: opt.key, secret: opt.secret,
  host: opt.host, port: opt.port, useTLS: false,
  agent: new http.Agent({ keepAlive: true, maxSockets: concurrency }),
});

let next = 0;
let errors = 0;
let firstError;
async function worker() {
  while (next < count) {
    const n = next++;
    try {
      const res = await pusher.trigger('bench-channel', 'bench-event', { body: 'hello', n });
      await res.text(); // drain so the keep-alive socket is reused
    } catch (err) {
      errors++;
      firstError ??= err;
    }
  }
}

(async () => {
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  if (firstError) console.error('first error:', firstError.message, firstError.status ?? firstError.error?.code ?? '', firstError.body ?? '');
  console.log(JSON.stringify({
    client: `node pusher@${sdkVersion}`,
    count, concurrency, errors,
    elapsed_s: Number(elapsed.toFixed(3)),
    triggers_per_s: Math.round(count / elapsed),
    cpu_us_per_trigger: Number(((cpu.user + cpu.system) / count).toFixed(1)),
  }));
  pusher.config.agent.destroy();
})();
