'use strict';
// GET /apps/{id}/channels on a cluster's survivor right after another node was
// killed (scripts/bench-cluster).
//
// One raw WebSocket per node of --ports subscribes to --channels-per-node
// channels named after its node. Once --query-port lists them all, the script
// times --count sequential queries there (signed by the official `pusher` SDK,
// keep-alive), sends SIGKILL to --kill-pid (the node on --dead-port), and at
// once times --count more. It then polls until the dead node's channels are no
// longer listed (or --gone-timeout-ms), and prints ONE JSON object:
//   {"label", "count", "before": {p50_ms, p99_ms, max_ms, errors},
//    "after_kill": {p50_ms, p99_ms, max_ms, errors, seconds, done},
//    "dead_channels_listed_after_kill": queries of the 1,000 that still listed
//    them, "dead_channels_gone_ms": from the kill to the first answer without
//    them (null: not within the timeout)}
// The after-kill phase stops early after --max-seconds (a server that waits on
// the dead node); "done" says how many were made.
//
//   node bench/query-during-kill.js --ports 7111,7112,7113 --query-port 7111 \
//     --dead-port 7113 --kill-pid PID --app-id 1 --key app-key --secret app-secret
//
// Send this only to servers on this machine (loopback).
const http = require('node:http');
const { parseArgs } = require('node:util');
const WebSocket = require('ws');
const Pusher = require('pusher');
const { sleep, waitUntil } = require('../lib/clients');

const { values: opt } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    ports: { type: 'string' },
    'query-port': { type: 'string' },
    'dead-port': { type: 'string' },
    'kill-pid': { type: 'string' },
    'app-id': { type: 'string', default: '1' },
    key: { type: 'string', default: 'app-key' },
    secret: { type: 'string', default: 'app-secret' },
    count: { type: 'string', default: '1000' },
    'channels-per-node': { type: 'string', default: '20' },
    'max-seconds': { type: 'string', default: '60' },
    'gone-timeout-ms': { type: 'string', default: '20000' },
    label: { type: 'string', default: 'server' },
  },
});
for (const k of ['ports', 'query-port', 'dead-port', 'kill-pid']) {
  if (!opt[k]) { console.error(`missing --${k}`); process.exit(2); }
}
const ports = opt.ports.split(',').map(Number);
const deadPort = Number(opt['dead-port']);
const count = Number(opt.count);
const perNode = Number(opt['channels-per-node']);
const channelsOf = (port) => Array.from({ length: perNode }, (_, i) => `q-${port}-${i}`);

const pusher = new Pusher({
  appId: opt['app-id'], key: opt.key, secret: opt.secret,
  host: opt.host, port: opt['query-port'], useTLS: false, timeout: 10000,
  agent: new http.Agent({ keepAlive: true, maxSockets: 1 }),
});

const now = () => Number(process.hrtime.bigint()) / 1e6;

/** One socket per node, subscribed to that node's channels. */
async function subscribeAll() {
  const sockets = [];
  for (const port of ports) {
    const ws = new WebSocket(`ws://${opt.host}:${port}/app/${opt.key}?protocol=7&client=js&version=8.6.0`);
    ws.on('error', () => {});
    let pending = new Set(channelsOf(port));
    const subscribed = new Promise((resolve, reject) => {
      ws.on('message', (raw) => {
        const frame = JSON.parse(raw.toString());
        if (frame.event === 'pusher:connection_established') {
          for (const channel of pending) ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel } }));
        } else if (frame.event === 'pusher_internal:subscription_succeeded') {
          pending.delete(frame.channel);
          if (pending.size === 0) resolve();
        } else if (frame.event === 'pusher:error' || frame.event === 'pusher:subscription_error') {
          reject(new Error(`${port}: ${raw}`));
        }
      });
      ws.once('close', () => reject(new Error(`${port} closed before subscribing`)));
    });
    await subscribed;
    pending = new Set();
    sockets.push(ws);
  }
  return sockets;
}

/** One signed query: its time in ms, and its channel names (null on error). */
async function query() {
  const t0 = now();
  try {
    const res = await pusher.get({ path: '/channels' });
    const body = await res.json();
    return { ms: now() - t0, channels: Object.keys(body.channels || {}) };
  } catch (err) {
    return { ms: now() - t0, channels: null, error: err };
  }
}

function stats(results, extra = {}) {
  const times = results.map((r) => r.ms).sort((a, b) => a - b);
  const at = (p) => (times.length ? times[Math.min(times.length - 1, Math.round((p / 100) * (times.length - 1)))] : null);
  const round = (x) => (x === null ? null : Number(x.toFixed(2)));
  return {
    p50_ms: round(at(50)),
    p99_ms: round(at(99)),
    max_ms: round(times.length ? times[times.length - 1] : null),
    errors: results.filter((r) => r.channels === null).length,
    ...extra,
  };
}

(async () => {
  const sockets = await subscribeAll();
  const every = ports.flatMap(channelsOf);
  const dead = new Set(channelsOf(deadPort));
  const listsDead = (channels) => channels !== null && channels.some((c) => dead.has(c));
  await waitUntil(async () => {
    const { channels } = await query();
    return channels && every.every((c) => channels.includes(c));
  }, 15000, `every node's channels listed on ${opt['query-port']}`);

  const before = [];
  for (let i = 0; i < count; i++) before.push(await query());

  process.kill(Number(opt['kill-pid']), 'SIGKILL');
  const killedAt = now();
  const after = [];
  let goneAt = null;
  const stopAt = killedAt + Number(opt['max-seconds']) * 1000;
  while (after.length < count && now() < stopAt) {
    const r = await query();
    after.push(r);
    if (goneAt === null && r.channels !== null && !listsDead(r.channels)) goneAt = now();
  }
  const afterSeconds = (now() - killedAt) / 1000;
  const goneDeadline = killedAt + Number(opt['gone-timeout-ms']);
  while (goneAt === null && now() < goneDeadline) {
    const r = await query();
    if (r.channels !== null && !listsDead(r.channels)) goneAt = now();
    else await sleep(100);
  }
  const firstError = after.find((r) => r.error);
  if (firstError) console.error('first error after the kill:', firstError.error.message);
  console.log(JSON.stringify({
    label: opt.label,
    count,
    channels: every.length,
    before: stats(before),
    after_kill: stats(after, { seconds: Number(afterSeconds.toFixed(2)), done: after.length }),
    dead_channels_listed_after_kill: after.filter((r) => listsDead(r.channels)).length,
    dead_channels_gone_ms: goneAt === null ? null : Number((goneAt - killedAt).toFixed(0)),
  }));
  for (const ws of sockets) ws.terminate();
  pusher.config.agent.destroy();
  process.exit(0);
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
