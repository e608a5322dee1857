'use strict';
// Presence churn over a cluster's nodes, seen by watchers (scripts/bench-cluster).
//
// --users distinct users (pusher-js clients, authorized by the official `pusher`
// SDK's authorizeChannel) each join one presence channel on a node of
// --user-ports (user i on port i mod n), stay --hold-ms, and leave: even users
// unsubscribe then disconnect, odd users just disconnect. At most --concurrency
// users are in flight at once, so the channel stays under the 100-member limit;
// a user the server refuses anyway (pusher:error or subscription_error) is
// counted in "refused" and expected by no watcher.
// Watchers (pusher-js, one per --watcher-ports entry, subscribed before the
// churn) count every pusher:member_added / pusher:member_removed per user.
// Once every user has left, the script waits until each watcher has seen every
// joined user added and removed (or --settle-timeout-ms), then --linger-ms more for
// late duplicates, and prints ONE JSON object:
//   {"label", "users", "joined", "refused", "join_errors", "concurrency",
//    "hold_ms", "churn_ms", "settle_ms", "watchers": [{"port", "added",
//    "removed", "missed_added", "missed_removed", "duplicate_added",
//    "duplicate_removed", "removed_before_added", "phantom", "settle_ms",
//    "members_left"}],
//    "user_count_by_port": {port: user_count from GET /channels/{name}/users}}
// settle_ms is from the last user's leave to the watcher's first sight of the
// last joined user's member_added/member_removed it needed (null: some never
// came within --settle-timeout-ms); "missed" and "duplicate" count over the
// joined users.
//
//   node bench/presence-churn.js --user-ports 7111,7112,7113 --watcher-ports 7114 \
//     --app-id 1 --key app-key --secret app-secret [--users 1000] [--concurrency 50]
//
// Send this only to servers on this machine (loopback).
const { parseArgs } = require('node:util');
const {
  Harness, connected, subscribe, withTimeout, releaseSockets, sleep,
} = require('../lib/clients');

const { values: opt } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    'user-ports': { type: 'string' },
    'watcher-ports': { type: 'string' },
    'app-id': { type: 'string', default: '1' },
    key: { type: 'string', default: 'app-key' },
    secret: { type: 'string', default: 'app-secret' },
    users: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '50' },
    'hold-ms': { type: 'string', default: '100' },
    'settle-timeout-ms': { type: 'string', default: '30000' },
    'linger-ms': { type: 'string', default: '2000' },
    channel: { type: 'string' },
    label: { type: 'string', default: 'server' },
  },
});
for (const k of ['user-ports', 'watcher-ports']) {
  if (!opt[k]) { console.error(`missing --${k}`); process.exit(2); }
}
const ports = (list) => list.split(',').map((p) => Number(p.trim())).filter(Boolean);
const userPorts = ports(opt['user-ports']);
const watcherPorts = ports(opt['watcher-ports']);
const users = Number(opt.users);
const concurrency = Number(opt.concurrency);
const holdMs = Number(opt['hold-ms']);
const channelName = opt.channel || `presence-churn-${process.pid}-${Date.now()}`;

// One Harness per node: its pusher-js clients connect there, its SDK signs.
const harnesses = new Map();
function harness(port) {
  if (!harnesses.has(port)) {
    harnesses.set(port, new Harness({
      host: opt.host, port, appId: opt['app-id'], key: opt.key, secret: opt.secret,
      stop: async () => {},
    }));
  }
  return harnesses.get(port);
}

const now = () => Number(process.hrtime.bigint()) / 1e6;

async function startWatcher(port, k) {
  const client = harness(port).client({ presence: { user_id: `watcher-${k}`, user_info: { port } } });
  await connected(client, 10000);
  const { channel } = await subscribe(client, channelName, 10000);
  const w = {
    port, client, channel,
    // Per user: how many times seen, and when first seen.
    added: new Map(), removed: new Map(), addedAt: new Map(), removedAt: new Map(), removedBeforeAdded: 0,
  };
  channel.bind('pusher:member_added', (member) => {
    if (!String(member.id).startsWith('u')) return;
    w.added.set(member.id, (w.added.get(member.id) || 0) + 1);
    if (!w.addedAt.has(member.id)) w.addedAt.set(member.id, now());
  });
  channel.bind('pusher:member_removed', (member) => {
    if (!String(member.id).startsWith('u')) return;
    if (!w.added.has(member.id)) w.removedBeforeAdded++;
    w.removed.set(member.id, (w.removed.get(member.id) || 0) + 1);
    if (!w.removedAt.has(member.id)) w.removedAt.set(member.id, now());
  });
  return w;
}

// Users whose subscription succeeded; the others (refused by the server, or
// timed out) are counted apart and expected by no watcher.
const joined = new Set();
let joinErrors = 0;
let refused = 0;
let firstJoinError;
async function user(i) {
  const port = userPorts[i % userPorts.length];
  const client = harness(port).client({ presence: { user_id: `u${i}`, user_info: { n: i } } });
  // A refusal may come as pusher:error on the connection (not as a
  // subscription_error): pusher-js reports it as the connection's `error`.
  const refusal = new Promise((_, reject) => {
    client.connection.bind('error', (e) => {
      if (e && e.type === 'PusherError') {
        reject(Object.assign(new Error(`pusher:error ${JSON.stringify(e.data)}`), { refused: true }));
      }
    });
  });
  refusal.catch(() => {});
  try {
    await connected(client, 10000);
    await Promise.race([subscribe(client, channelName, 10000), refusal]);
    joined.add(`u${i}`);
    await sleep(holdMs);
    if (i % 2 === 0) client.unsubscribe(channelName);
  } catch (err) {
    if (err.refused || err.status) refused++;
    else joinErrors++;
    firstJoinError ??= err;
  } finally {
    client.disconnect();
    // pusher-js's Node socket keeps a 30 s close timer: cleared once it is closed.
    setTimeout(() => releaseSockets(client), 1000).unref();
  }
}

/** Whether a watcher has seen every joined user added and removed. */
const complete = (w) => [...joined].every((id) => w.addedAt.has(id) && w.removedAt.has(id));

function summary(w, leftAt) {
  let missedAdded = 0; let missedRemoved = 0; let dupAdded = 0; let dupRemoved = 0; let lastNeeded = 0;
  for (const id of joined) {
    const a = w.added.get(id) || 0;
    const r = w.removed.get(id) || 0;
    if (a === 0) missedAdded++; else dupAdded += a - 1;
    if (r === 0) missedRemoved++; else dupRemoved += r - 1;
    lastNeeded = Math.max(lastNeeded, w.addedAt.get(id) || 0, w.removedAt.get(id) || 0);
  }
  // Events of users who never joined (should be none).
  const phantom = [...w.added.keys(), ...w.removed.keys()].filter((id) => !joined.has(id)).length;
  const membersLeft = [];
  w.channel.members.each((m) => { if (String(m.id).startsWith('u')) membersLeft.push(m.id); });
  return {
    port: w.port,
    added: [...w.added.values()].reduce((a, b) => a + b, 0),
    removed: [...w.removed.values()].reduce((a, b) => a + b, 0),
    missed_added: missedAdded,
    missed_removed: missedRemoved,
    duplicate_added: dupAdded,
    duplicate_removed: dupRemoved,
    removed_before_added: w.removedBeforeAdded,
    phantom,
    settle_ms: complete(w) ? Number(Math.max(0, lastNeeded - leftAt).toFixed(1)) : null,
    members_left: membersLeft.length,
  };
}

(async () => {
  const watchers = [];
  for (const [k, port] of watcherPorts.entries()) watchers.push(await startWatcher(port, k));
  // Let watchers learn of each other before counting starts (they are not counted anyway).
  await sleep(500);

  const started = now();
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, users) }, async () => {
    while (next < users) await user(next++);
  }));
  const leftAt = now();

  const settled = () => watchers.every(complete);
  const deadline = leftAt + Number(opt['settle-timeout-ms']);
  while (!settled() && now() < deadline) await sleep(10);
  const settledAll = settled();
  await sleep(Number(opt['linger-ms']));

  const userCountByPort = {};
  for (const port of [...new Set([...userPorts, ...watcherPorts])]) {
    try {
      const res = await harness(port).sdkClient.get({ path: `/channels/${channelName}/users` });
      const body = await res.json();
      userCountByPort[port] = body.users.filter((u) => String(u.id).startsWith('u')).length;
    } catch (err) {
      userCountByPort[port] = `error: ${err.message}`;
    }
  }

  const report = watchers.map((w) => summary(w, leftAt));
  if (firstJoinError) console.error('first join error:', firstJoinError.message);
  console.log(JSON.stringify({
    label: opt.label,
    channel: channelName,
    users,
    concurrency,
    hold_ms: holdMs,
    user_ports: userPorts,
    churn_ms: Number((leftAt - started).toFixed(1)),
    settled: settledAll,
    settle_ms: settledAll ? Math.max(...report.map((r) => r.settle_ms)) : null,
    joined: joined.size,
    refused,
    join_errors: joinErrors,
    first_join_error: firstJoinError ? firstJoinError.message : null,
    watchers: report,
    user_count_by_port: userCountByPort,
  }));
  for (const w of watchers) w.client.disconnect();
  for (const h of harnesses.values()) h.closeClients();
  await sleep(200);
  process.exit(0);
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
