'use strict';
// A cluster of three realtime-server nodes (--cluster redis://… and nats://…),
// driven only through pusher-js and the pusher SDK, the same tests on both buses:
// events and user events published on one node reach every node once and in
// order; presence lists, member_added/member_removed, queries and
// terminate_connections answer for the whole cluster; cluster-wide webhooks
// arrive once; a node killed with SIGKILL is forgotten once the bus says its
// connection is gone, well within 10 s (and a query never waits for it), a hung
// one (SIGSTOP) only when its lease lapses, and it comes back when resumed; a bus
// killed and restarted leaves each node serving
// its own clients and the cluster whole again afterwards.
//
// Each cluster serves an app id of its own, so clusters sharing a bus (this
// file's, other files') ignore each other. The tests that kill a node or the
// bus run on a redis-server / nats-server of their own (started here: a missing
// binary fails the suite), in parallel with the rest. The 100-member presence
// limit counted over the cluster is left to the Rust tests: realtime-server has
// no flag to lower it, and 100 pusher-js clients per case would be slow.
//
// Waits are conditions with deadlines (waitUntil, Cluster.converge); the only
// sleeps are quiet periods before asserting that nothing more (a duplicate)
// arrived, and the length of the bus outage.
const { describe, test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const http = require('node:http');
const {
  subscribe,
  nextEvent,
  collect,
  reachesState,
  channelName,
  waitUntil,
  sleep,
  signin,
} = require('../lib/clients');
const { Cluster, OwnBus, sharedBus, startReceiver, metricOf } = require('../lib/cluster');

const presence = (id) => ({ user_id: id, user_info: { name: `name of ${id}` } });
const hex = () => crypto.randomBytes(4).toString('hex');
const range = (n) => Array.from({ length: n }, (_, i) => i);

/** The members a pusher-js presence channel holds, sorted by id. */
function membersOf(channel) {
  const list = [];
  channel.members.each((m) => list.push({ id: m.id, info: m.info }));
  return list.sort((a, b) => (a.id < b.id ? -1 : 1));
}
const memberIds = (channel) => membersOf(channel).map((m) => m.id);
const ids = (events) => events.map((e) => e.data.id);

/** Signs a pusher-js client in and waits until its #server-to-user- channel is subscribed. */
async function signedIn(client) {
  const { answer } = await signin(client, 10000);
  assert.equal(answer.event, 'pusher:signin_success', JSON.stringify(answer));
  await waitUntil(
    () => client.user.serverToUserChannel && client.user.serverToUserChannel.subscribed,
    10000,
    '#server-to-user- subscription'
  );
}

/** A webhook event as "name" or "name:user_id". */
const hookName = (e) => (e.user_id && e.name.startsWith('member') ? `${e.name}:${e.user_id}` : e.name);

const count = (list, pred) => list.filter(pred).length;

// Both buses at once, and within each the three groups at once: the groups use
// clusters (and app ids) of their own.
describe('realtime-server cluster', { concurrency: true }, () => {
  for (const kind of ['redis', 'nats']) {
    describe(`over ${kind}`, { concurrency: true }, () => {
      // ---------------------------------------------------------------------
      // Tests 1-5 and the foreign app: one cluster of three nodes on the shared bus.
      // ---------------------------------------------------------------------
      // One test at a time within (the groups run at once: concurrency is inherited).
      describe('three nodes on the shared bus', { concurrency: false }, () => {
        let c;
        let receiver;
        let sdk;
        const events = () => receiver.events(sdk);
        const hooksOn = (channel) => events().filter((e) => e.channel === channel);

        before(async () => {
          const bus = await sharedBus(kind);
          receiver = await startReceiver();
          c = await Cluster.start({
            bus,
            clientEvents: true,
            webhookUrl: receiver.url,
            webhookLeaveDelay: 0,
            // Node 3 is told its bus by REALTIME_CLUSTER_URL, the others by --cluster.
            viaEnv: [2],
          });
          sdk = c.sdk(0);
        });
        afterEach(() => c && c.closeClients());
        after(async () => {
          if (c) await c.close();
          if (receiver) await receiver.close();
        });

        test('50 events triggered on node 1 reach subscribers on nodes 1, 2 and 3 once each, in trigger order', async () => {
          const name = channelName();
          const seen = [];
          for (const node of c.nodes) {
            const { channel } = await subscribe(node.client(), name);
            seen.push({ seq: collect(channel, 'seq'), end: collect(channel, 'end'), end2: collect(channel, 'end2') });
          }
          const metric = (name) => Promise.all(c.nodes.map((n) => metricOf(n, name)));
          const outBefore = await metric('realtime_cluster_payloads_out_total');
          const inBefore = await metric('realtime_cluster_reports_in_total');
          for (let i = 0; i < 50; i++) await c.sdk(0).trigger(name, 'seq', { i });
          // Events from one node keep their order: 'end' comes after every 'seq'.
          await c.sdk(0).trigger(name, 'end', {});
          await waitUntil(() => seen.every((s) => s.end.length > 0), 10000, "'end' on every node");
          // And one through another node, for any late duplicate on node 1.
          await c.sdk(2).trigger(name, 'end2', {});
          await waitUntil(() => seen.every((s) => s.end2.length > 0), 10000, "'end2' on every node");
          seen.forEach((s, k) => {
            assert.deepEqual(s.seq.map((e) => e.data.i), range(50), `the events as node ${k + 1}'s subscriber got them`);
            assert.equal(s.end.length, 1, `node ${k + 1}: 'end' once`);
            assert.equal(s.end2.length, 1, `node ${k + 1}: 'end2' once`);
          });
          // The bus carried them: node 1 sent payloads, nodes 2 and 3 took in (at least) the 51 reports.
          const outAfter = await metric('realtime_cluster_payloads_out_total');
          const inAfter = await metric('realtime_cluster_reports_in_total');
          assert.ok(outAfter[0] > outBefore[0], `node 1 payloads_out ${outBefore[0]} -> ${outAfter[0]}`);
          for (const k of [1, 2]) {
            assert.ok(inAfter[k] - inBefore[k] >= 51, `node ${k + 1} reports_in ${inBefore[k]} -> ${inAfter[k]}`);
          }
        });

        test('socket_id exclusion works for a socket on another node', async () => {
          const name = channelName();
          const excluded = c.nodes[1].client();
          const got = [];
          for (const client of [c.nodes[0].client(), excluded, c.nodes[2].client()]) {
            const { channel } = await subscribe(client, name);
            got.push({ x: collect(channel, 'x'), after: collect(channel, 'after') });
          }
          await c.sdk(0).trigger(name, 'x', { n: 1 }, { socket_id: excluded.connection.socket_id });
          await c.sdk(0).trigger(name, 'after', {});
          await waitUntil(() => got.every((g) => g.after.length > 0), 10000, "'after' on every node");
          assert.equal(got[0].x.length, 1, 'node 1 subscriber got the event');
          assert.equal(got[1].x.length, 0, 'the excluded socket on node 2 did not get the event');
          assert.equal(got[2].x.length, 1, 'node 3 subscriber got the event');
        });

        for (const prefix of ['private-', 'presence-']) {
          test(`client events on a ${prefix} channel reach subscribers on other nodes, never the sender`, async () => {
            const name = channelName(prefix);
            const clients = c.nodes.map((node, k) => node.client({ presence: presence(`member-${k + 1}`) }));
            const got = [];
            for (const client of clients) {
              const { channel } = await subscribe(client, name);
              got.push({ channel, hello: collect(channel, 'client-hello'), done: collect(channel, 'client-done') });
            }
            assert.equal(got[0].channel.trigger('client-hello', { from: 1 }), true);
            await waitUntil(() => got[1].hello.length > 0 && got[2].hello.length > 0, 10000, 'client-hello on nodes 2 and 3');
            // A later event from node 2 reaches node 1 after any echo of node 1's own.
            assert.equal(got[1].channel.trigger('client-done', {}), true);
            await waitUntil(() => got[0].done.length > 0 && got[2].done.length > 0, 10000, 'client-done on nodes 1 and 3');
            assert.equal(got[0].hello.length, 0, 'the sender did not get its own client event');
            for (const k of [1, 2]) {
              assert.equal(got[k].hello.length, 1, `node ${k + 1}: client-hello once`);
              assert.deepEqual(got[k].hello[0].data, { from: 1 });
              if (prefix === 'presence-') {
                assert.equal(got[k].hello[0].metadata && got[k].hello[0].metadata.user_id, 'member-1', 'user_id of the sender');
              }
            }
            assert.equal(got[1].done.length, 0, 'the sender of client-done did not get it');
          });
        }

        test("sendToUser through node 1 reaches the user's connections on every node", async () => {
          const user = `user-${hex()}`;
          const conns = c.nodes.map((node) => node.client({ user: { id: user } }));
          const other = c.nodes[1].client({ user: { id: `${user}-other` } });
          await Promise.all([...conns, other].map(signedIn));
          const notes = conns.map((client) => collect(client.user, 'note'));
          const ends = conns.map((client) => collect(client.user, 'end'));
          const otherNotes = collect(other.user, 'note');
          const otherEnd = collect(other.user, 'end');
          const res = await c.sdk(0).sendToUser(user, 'note', { text: 'hello' });
          assert.equal(res.status, 200);
          await c.sdk(0).sendToUser(user, 'end', {});
          await c.sdk(0).sendToUser(`${user}-other`, 'end', {});
          await waitUntil(() => ends.every((e) => e.length > 0) && otherEnd.length > 0, 10000, "'end' on every connection");
          notes.forEach((n, k) => {
            assert.deepEqual(n.map((e) => e.data), [{ text: 'hello' }], `node ${k + 1}: the note once`);
          });
          assert.deepEqual(otherNotes, [], 'another user got nothing');
        });

        test('presence: subscription_succeeded lists the members on other nodes', async () => {
          const name = channelName('presence-');
          const { channel: alice } = await subscribe(c.nodes[0].client({ presence: presence('alice') }), name);
          const { channel: bob } = await subscribe(c.nodes[1].client({ presence: presence('bob') }), name);
          await c.usersConverge(name, ['alice', 'bob']);
          const { channel, data } = await subscribe(c.nodes[2].client({ presence: presence('carol') }), name);
          assert.equal(data.count, 3);
          assert.equal(data.me.id, 'carol');
          assert.deepEqual(membersOf(channel), ['alice', 'bob', 'carol'].map((id) => ({ id, info: { name: `name of ${id}` } })));
          await waitUntil(
            () => alice.members.count === 3 && bob.members.count === 3,
            10000,
            'carol in the member lists of nodes 1 and 2'
          );
          assert.deepEqual(membersOf(alice), membersOf(channel));
          assert.deepEqual(membersOf(bob), membersOf(channel));
        });

        // FAILS at main 02e0c84 (server bug): a member whose channel_data has no user_info
        // is reported to the other nodes as Member { i: Some(None) }, serialised "i": null,
        // which deserialises as None, "gone": nodes 1 and 3 never list "bare".
        test('presence: a member without user_info (it is optional) is a member on every node', async () => {
          const name = channelName('presence-');
          const { channel: watcher } = await subscribe(c.nodes[0].client({ presence: presence('watcher') }), name);
          await c.usersConverge(name, ['watcher']);
          const added = collect(watcher, 'pusher:member_added');
          // channel_data {"user_id":"bare"}: no user_info at all.
          const { channel: bare } = await subscribe(c.nodes[1].client({ presence: { user_id: 'bare' } }), name);
          let users;
          try {
            await c.usersConverge(name, ['bare', 'watcher'], { ms: 5000 });
          } catch (e) {
            users = e.message;
          }
          await waitUntil(() => ids(added).includes('bare'), 3000, 'member_added bare on node 1').catch(() => {});
          assert.deepEqual(
            { watcherSees: memberIds(watcher), bareSees: memberIds(bare), addedOnNode1: ids(added), queries: users || 'agree' },
            { watcherSees: ['bare', 'watcher'], bareSees: ['bare', 'watcher'], addedOnNode1: ['bare'], queries: 'agree' }
          );
        });

        test("presence: member_added on a user's first connection in the cluster, member_removed on its last, once each", async () => {
          const name = channelName('presence-');
          const watchers = [];
          for (const [k, node] of c.nodes.entries()) {
            const { channel } = await subscribe(node.client({ presence: presence(`watcher-${k + 1}`) }), name);
            watchers.push({ channel, added: collect(channel, 'pusher:member_added'), removed: collect(channel, 'pusher:member_removed') });
          }
          const w = ['watcher-1', 'watcher-2', 'watcher-3'];
          await c.usersConverge(name, w);
          const dave1 = c.nodes[0].client({ presence: presence('dave') });
          await subscribe(dave1, name);
          await waitUntil(() => watchers.every((x) => ids(x.added).includes('dave')), 10000, 'member_added dave everywhere');
          await c.usersConverge(name, [...w, 'dave']);
          // The same user on node 2: no new member anywhere.
          const dave2 = c.nodes[1].client({ presence: presence('dave') });
          const { data: daveView } = await subscribe(dave2, name);
          assert.equal(daveView.count, 4, 'the second connection sees the watchers and itself');
          await c.converge(`/channels/${name}`, { info: 'user_count,subscription_count' }, { occupied: true, user_count: 4, subscription_count: 5 });
          // Its first connection leaves: still a member through node 2.
          dave1.disconnect();
          await c.converge(`/channels/${name}`, { info: 'user_count,subscription_count' }, { occupied: true, user_count: 4, subscription_count: 4 });
          // The last one leaves: member_removed.
          dave2.disconnect();
          await waitUntil(() => watchers.every((x) => ids(x.removed).includes('dave')), 10000, 'member_removed dave everywhere');
          // A later member, added through node 1, shows nothing more came for dave before it.
          await subscribe(c.nodes[0].client({ presence: presence('zed') }), name);
          await waitUntil(() => watchers.every((x) => ids(x.added).includes('zed')), 10000, 'member_added zed everywhere');
          await c.usersConverge(name, [...w, 'zed']);
          const seen = watchers.map((x) => ({
            added: count(ids(x.added), (id) => id === 'dave'),
            removed: count(ids(x.removed), (id) => id === 'dave'),
          }));
          const gaps = await Promise.all(c.nodes.map((n) => metricOf(n, 'realtime_cluster_gaps_total')));
          assert.deepEqual(
            seen,
            [1, 2, 3].map(() => ({ added: 1, removed: 1 })),
            `member_added / member_removed of dave per watcher (nodes 1-3); all they saw: ` +
              `${watchers.map((x, k) => `node ${k + 1}: +[${ids(x.added)}] -[${ids(x.removed)}]`).join('; ')}; ` +
              `realtime_cluster_gaps_total ${gaps}`
          );
          watchers.forEach((x) => assert.deepEqual(memberIds(x.channel), [...w, 'zed'].sort()));
        });

        test('queries through any node answer for the whole cluster, the same on every node', async () => {
          const tag = hex();
          const pprefix = `presence-q${tag}-`;
          const both = `${pprefix}both`;
          const solo = `${pprefix}solo`;
          const qprefix = `q${tag}-`;
          const pubX = `${qprefix}x`;
          const pubY = `${qprefix}y`;
          const priv = `private-q${tag}`;
          const [n1, n2, n3] = c.nodes;
          await subscribe(n1.client({ presence: presence('alice') }), both);
          const bobOn2 = n2.client({ presence: presence('bob') });
          await subscribe(bobOn2, both);
          await subscribe(n3.client({ presence: presence('bob') }), both);
          const carol = n3.client({ presence: presence('carol') });
          await subscribe(carol, solo);
          await subscribe(n2.client(), pubX);
          await subscribe(n3.client(), pubX);
          await subscribe(n1.client(), pubY);
          await subscribe(n1.client(), priv);
          await subscribe(n3.client(), priv);

          await c.converge('/channels', { filter_by_prefix: pprefix, info: 'user_count,subscription_count' }, {
            channels: {
              [both]: { user_count: 2, subscription_count: 3 },
              [solo]: { user_count: 1, subscription_count: 1 },
            },
          });
          await c.converge('/channels', { filter_by_prefix: qprefix, info: 'subscription_count' }, {
            channels: { [pubX]: { subscription_count: 2 }, [pubY]: { subscription_count: 1 } },
          });
          await c.converge('/channels', { filter_by_prefix: qprefix }, { channels: { [pubX]: {}, [pubY]: {} } });
          await c.converge(`/channels/${both}`, { info: 'user_count,subscription_count' }, {
            occupied: true,
            user_count: 2,
            subscription_count: 3,
          });
          await c.converge(`/channels/${priv}`, { info: 'subscription_count' }, { occupied: true, subscription_count: 2 });
          await c.converge(`/channels/${pubY}`, {}, { occupied: true });
          await c.usersConverge(both, ['alice', 'bob']);

          // Leaving on one node shows on all of them.
          bobOn2.unsubscribe(both);
          carol.disconnect();
          await c.converge('/channels', { filter_by_prefix: pprefix, info: 'user_count,subscription_count' }, {
            channels: { [both]: { user_count: 2, subscription_count: 2 } },
          });
          await c.converge(`/channels/${solo}`, { info: 'user_count,subscription_count' }, {
            occupied: false,
            user_count: 0,
            subscription_count: 0,
          }, { normalize: (b) => ({ user_count: 0, subscription_count: 0, ...b }) });
          await c.usersConverge(solo, []);
          await c.usersConverge(both, ['alice', 'bob']);
        });

        test("terminateUserConnections through node 1 closes the user's connections on nodes 2 and 3", async () => {
          const user = `kicked-${hex()}`;
          const victims = c.nodes.map((node) => node.client({ user: { id: user } }));
          const bystander = c.nodes[1].client({ user: { id: `${user}-bystander` } });
          await Promise.all([...victims, bystander].map(signedIn));
          const res = await c.sdk(0).terminateUserConnections(user);
          assert.equal(res.status, 200);
          await Promise.all(victims.map((v, k) => reachesState(v, 'disconnected', 10000).catch(() => {
            throw new Error(`node ${k + 1}: the user's connection is still ${v.connection.state}`);
          })));
          // The bystander on node 2 is untouched and still served.
          assert.equal(bystander.connection.state, 'connected');
          const note = nextEvent(bystander.user, 'still-here', 10000);
          await c.sdk(0).sendToUser(`${user}-bystander`, 'still-here', {});
          await note;
        });

        test('webhooks of cluster-wide changes arrive once, validly signed; client_event once per event', async () => {
          const [n1, n2, n3] = c.nodes;
          // channel_occupied / channel_vacated: the cluster's first and last subscriber.
          const pub = channelName();
          const s2 = n2.client();
          await subscribe(s2, pub);
          await waitUntil(() => hooksOn(pub).some((e) => e.name === 'channel_occupied'), 10000, 'channel_occupied');
          const s3 = n3.client();
          await subscribe(s3, pub);
          const s1 = n1.client();
          await subscribe(s1, pub);
          await c.converge(`/channels/${pub}`, { info: 'subscription_count' }, { occupied: true, subscription_count: 3 });
          s2.disconnect();
          s1.disconnect();
          await c.converge(`/channels/${pub}`, { info: 'subscription_count' }, { occupied: true, subscription_count: 1 });
          s3.disconnect();
          await waitUntil(() => hooksOn(pub).some((e) => e.name === 'channel_vacated'), 10000, 'channel_vacated');

          // member_added / member_removed: the user's first and last connection in the cluster.
          const pres = channelName('presence-');
          const d2 = n2.client({ presence: presence('dave') });
          await subscribe(d2, pres);
          await c.usersConverge(pres, ['dave']);
          const d3 = n3.client({ presence: presence('dave') });
          await subscribe(d3, pres);
          await c.converge(`/channels/${pres}`, { info: 'subscription_count' }, { occupied: true, subscription_count: 2 });
          d2.disconnect();
          await c.converge(`/channels/${pres}`, { info: 'subscription_count' }, { occupied: true, subscription_count: 1 });
          d3.disconnect();
          await waitUntil(() => hooksOn(pres).some((e) => e.name === 'member_removed'), 10000, 'member_removed');

          // client_event: one per event, from whichever node the sender is on.
          const priv = channelName('presence-');
          const senders = [];
          for (const [k, node] of c.nodes.entries()) {
            const client = node.client({ presence: presence(`sender-${k + 1}`) });
            const { channel } = await subscribe(client, priv);
            senders.push({ client, channel, got: collect(channel, 'client-ping') });
          }
          for (const [k, s] of senders.entries()) assert.equal(s.channel.trigger('client-ping', { from: k + 1 }), true);
          await waitUntil(() => senders.every((s) => s.got.length === 2), 10000, 'every client-ping relayed');
          await waitUntil(
            () => count(hooksOn(priv), (e) => e.name === 'client_event') >= 3,
            10000,
            'three client_event webhooks'
          );

          // Nothing more: duplicates from the other nodes would have come by now.
          await sleep(1000);
          assert.deepEqual(hooksOn(pub).map(hookName), ['channel_occupied', 'channel_vacated'], 'public channel webhooks');
          assert.deepEqual(
            hooksOn(pres).map(hookName).sort(),
            ['channel_occupied', 'channel_vacated', 'member_added:dave', 'member_removed:dave'],
            'presence channel webhooks'
          );
          const clientEvents = hooksOn(priv).filter((e) => e.name === 'client_event');
          assert.equal(clientEvents.length, 3, JSON.stringify(clientEvents));
          for (const [k, s] of senders.entries()) {
            const mine = clientEvents.filter((e) => e.socket_id === s.client.connection.socket_id);
            assert.equal(mine.length, 1, `one client_event for the sender on node ${k + 1}: ${JSON.stringify(clientEvents)}`);
            assert.equal(mine[0].event, 'client-ping');
            assert.equal(mine[0].user_id, `sender-${k + 1}`);
            assert.deepEqual(JSON.parse(mine[0].data), { from: k + 1 });
          }
        });

        test("another app's cluster on the same bus: no crosstalk, and each app's webhooks still arrive once", async (t) => {
          const otherReceiver = await startReceiver();
          let other;
          t.after(async () => {
            // SIGTERM: its nodes leave the bus at once instead of after their lease
            // (and flush their webhooks to a receiver still listening).
            if (other) await other.close('SIGTERM');
            await otherReceiver.close();
          });
          other = await Cluster.start({ bus: c.options.bus, webhookUrl: otherReceiver.url, webhookLeaveDelay: 0 });
          const name = channelName('presence-');
          const mine = collect((await subscribe(c.nodes[1].client({ presence: presence('mine') }), name)).channel, 'e');
          const { channel: theirs } = await subscribe(other.nodes[2].client({ presence: presence('theirs') }), name);
          const theirEvents = collect(theirs, 'e');
          await c.usersConverge(name, ['mine']);
          await other.usersConverge(name, ['theirs']);
          await c.sdk(0).trigger(name, 'e', { app: 'mine' });
          await other.sdk(0).trigger(name, 'e', { app: 'theirs' });
          await waitUntil(() => mine.length > 0 && theirEvents.length > 0, 10000, 'each app its event');
          await c.converge(`/channels/${name}`, { info: 'user_count,subscription_count' }, { occupied: true, user_count: 1, subscription_count: 1 });
          await other.converge(`/channels/${name}`, { info: 'user_count,subscription_count' }, {
            occupied: true,
            user_count: 1,
            subscription_count: 1,
          });
          // Both apps' webhooks: the leader of each app's cluster sends them.
          const otherHooks = () => otherReceiver.events(other.sdk(0)).filter((e) => e.channel === name);
          const deadline = Date.now() + 10000;
          while (Date.now() < deadline && !(hooksOn(name).length >= 2 && otherHooks().length >= 2)) await sleep(50);
          await sleep(500);
          assert.deepEqual(mine.map((e) => e.data), [{ app: 'mine' }]);
          assert.deepEqual(theirEvents.map((e) => e.data), [{ app: 'theirs' }]);
          assert.deepEqual(
            hooksOn(name).map(hookName).sort(),
            ['channel_occupied', 'member_added:mine'],
            "this app's webhooks (none at all: the cluster-wide webhooks are sent by no node of this app?)"
          );
          assert.deepEqual(
            otherHooks().map(hookName).sort(),
            ['channel_occupied', 'member_added:theirs'],
            "the other app's webhooks (none at all: the cluster-wide webhooks are sent by no node of that app?)"
          );
        });
      });

      // ---------------------------------------------------------------------
      // 6. A node killed with SIGKILL, then restarted on its port.
      // ---------------------------------------------------------------------
      describe('a node killed with SIGKILL', { concurrency: false }, () => {
        let bus;
        let c;
        let receiver;
        let victim; // the index of the node killed: the one sending the webhooks
        let survivors;
        let name; // presence channel: alice@s0, bob@s1, carol@victim, dave@victim+s0
        let only; // public channel with its one subscriber on the victim
        let alice;
        let bob;
        let killedAt;
        let restartedAt;
        let removedAt = null;
        let latencies = [];
        const hooks = () => receiver.events(c.sdk(survivors[0]));

        /**
         * The node that sends the cluster's webhooks (the leader): the one whose
         * webhook counter grows when a probe channel becomes occupied.
         */
        async function findLeader() {
          const probe = channelName('leader-probe-');
          const nodes = c.alive;
          const before = await Promise.all(nodes.map((i) => metricOf(c.nodes[i], 'realtime_webhook_requests_total')));
          const client = c.nodes[nodes[0]].client();
          await subscribe(client, probe);
          await waitUntil(() => receiver.events(c.sdk(nodes[0])).some((e) => e.channel === probe), 10000, 'a webhook from the leader');
          const afterHook = await Promise.all(nodes.map((i) => metricOf(c.nodes[i], 'realtime_webhook_requests_total')));
          client.disconnect();
          const senders = nodes.filter((_, k) => afterHook[k] > before[k]);
          assert.equal(
            senders.length,
            1,
            `exactly one node sends the webhooks (counters of nodes ${nodes.map((i) => i + 1)}: ${before} -> ${afterHook})`
          );
          return senders[0];
        }

        before(async () => {
          bus = await OwnBus.start(kind);
          receiver = await startReceiver();
          c = await Cluster.start({ bus: bus.url, webhookUrl: receiver.url, webhookLeaveDelay: 0 });
        });
        after(async () => {
          if (c) await c.close();
          if (bus) await bus.stop();
          if (receiver) await receiver.close();
        });

        test('nodes joining a running cluster send no webhooks for what it already had', async (t) => {
          const existing = channelName('presence-');
          const occupied = channelName();
          for (const [k, node] of c.nodes.entries()) {
            await subscribe(node.client({ presence: presence(`x${k + 1}`) }), existing);
          }
          await subscribe(c.nodes[1].client(), occupied);
          await c.usersConverge(existing, ['x1', 'x2', 'x3']);
          const about = () =>
            receiver.events(c.sdk(0)).filter((e) => e.channel === existing || e.channel === occupied);
          await waitUntil(() => about().length >= 5, 10000, 'the webhooks of the channels as they filled');
          await sleep(300);
          const before = about().map(hookName).sort();
          assert.deepEqual(before, ['channel_occupied', 'channel_occupied', 'member_added:x1', 'member_added:x2', 'member_added:x3']);
          // Five more nodes of the app join (each a new random node id: whichever
          // becomes the leader must not announce what was there before it).
          const joinedAt = Date.now();
          let extra;
          t.after(() => extra && extra.close('SIGTERM'));
          extra = await Cluster.start({
            ...c.options,
            webhookUrl: receiver.url,
            webhookLeaveDelay: 0,
            size: 5,
            ready: false,
          });
          for (const node of [...c.nodes, ...extra.nodes]) {
            await waitUntil(
              async () => {
                const body = await (await node.sdkClient.get({ path: `/channels/${existing}/users` })).json();
                const info = await (await node.sdkClient.get({ path: `/channels/${occupied}`, params: { info: 'subscription_count' } })).json();
                return body.users.length === 3 && info.subscription_count === 1;
              },
              10000,
              `node on port ${node.port} to know the cluster's channels`
            );
          }
          // Late duplicates would come within a moment of the snapshots.
          await sleep(1000);
          await extra.close('SIGTERM');
          extra = null;
          // Back to three nodes (the next tests need to know who leads) before judging.
          await c.metricConverge('realtime_cluster_nodes', (n) => n === 3, { ms: 10000 });
          await c.usersConverge(existing, ['x1', 'x2', 'x3']);
          const since = about().filter((e) => e.at >= joinedAt).map(hookName);
          assert.deepEqual(since, [], 'webhooks sent while five nodes joined (nothing changed for the cluster)');
        });

        test('the killed node\'s users get member_removed within 10 s, queries stop counting it and never wait for it', async (t) => {
          // The node killed is the one sending the webhooks, so that another must take over.
          victim = await findLeader();
          survivors = c.alive.filter((i) => i !== victim);
          name = channelName('presence-');
          only = channelName();
          const [s0, s1] = survivors.map((i) => c.nodes[i]);
          const v = c.nodes[victim];
          ({ channel: alice } = await subscribe(s0.client({ presence: presence('alice') }), name));
          ({ channel: bob } = await subscribe(s1.client({ presence: presence('bob') }), name));
          await subscribe(v.client({ presence: presence('carol') }), name);
          await subscribe(v.client({ presence: presence('dave') }), name);
          await subscribe(s0.client({ presence: presence('dave') }), name);
          await subscribe(v.client(), only);
          await c.usersConverge(name, ['alice', 'bob', 'carol', 'dave']);
          await c.converge(`/channels/${name}`, { info: 'user_count,subscription_count' }, { occupied: true, user_count: 4, subscription_count: 5 });
          await c.converge(`/channels/${only}`, { info: 'subscription_count' }, { occupied: true, subscription_count: 1 });
          await c.metricConverge('realtime_cluster_nodes', (n) => n === 3);
          // The webhooks of the channels filling up are in before the kill.
          await waitUntil(
            () => receiver.events(c.sdk(0)).filter((e) => e.channel === name || e.channel === only).length >= 6,
            10000,
            'channel_occupied (2) and member_added (4) webhooks'
          );
          const removed = [collect(alice, 'pusher:member_removed'), collect(bob, 'pusher:member_removed')];

          killedAt = Date.now();
          await c.kill(victim);

          // Every query to a survivor, from the kill until they stop counting the
          // dead node (once the bus says it is gone: about 1 s), is timed.
          latencies = [];
          // Through kept-alive connections: the time measured is the node's answer, not TCP set-up.
          const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
          t.after(() => agent.destroy());
          const sdks = new Map(survivors.map((i) => [i, c.nodes[i].sdk({ agent })]));
          const once = async (i, urlPath, params) => {
            const start = process.hrtime.bigint();
            const body = await (await sdks.get(i).get({ path: urlPath, params })).json();
            return { body, ms: Number(process.hrtime.bigint() - start) / 1e6 };
          };
          // GET / of the same node: the same HTTP path, nothing of the app or the cluster.
          const control = async (i) => {
            const start = process.hrtime.bigint();
            await (await fetch(`http://127.0.0.1:${c.nodes[i].port}/`)).text();
            return Number(process.hrtime.bigint() - start) / 1e6;
          };
          // A query over 100 ms is asked again at once, then GET / of the node: a node
          // waiting for the dead one is slow again while its GET / is not; a stall of this
          // shared machine slows everything alike. All three times are kept.
          const timed = async (i, urlPath, params) => {
            const sent = Date.now() - killedAt;
            const { body, ms } = await once(i, urlPath, params);
            const entry = { node: i + 1, urlPath, ms, sinceKill: sent };
            if (ms >= 100) {
              entry.again = (await once(i, urlPath, params)).ms;
              entry.control = await control(i);
            }
            latencies.push(entry);
            return body;
          };
          await waitUntil(
            async () => {
              if (removedAt === null && removed.every((r) => ids(r).includes('carol'))) removedAt = Date.now();
              const answers = await Promise.all(
                survivors.map(async (i) => [
                  await timed(i, `/channels/${name}`, { info: 'user_count,subscription_count' }),
                  await timed(i, '/channels', { filter_by_prefix: only }),
                  await timed(i, `/channels/${name}/users`, {}),
                ])
              );
              return answers.every(
                ([info, list, users]) =>
                  info.user_count === 3 &&
                  info.subscription_count === 3 &&
                  Object.keys(list.channels).length === 0 &&
                  users.users.map((u) => u.id).sort().join() === 'alice,bob,dave'
              );
            },
            15000,
            'the survivors to forget the killed node'
          );
          await waitUntil(
            () => removed.every((r) => ids(r).includes('carol')),
            Math.max(0, 10000 - (Date.now() - killedAt)),
            'member_removed carol within 10 s of the kill'
          );
          if (removedAt === null) removedAt = Date.now();
          assert.ok(removedAt - killedAt <= 10000, `member_removed came ${removedAt - killedAt} ms after the kill`);
          // The 100 ms goal is the benchmark's (scripts/bench-cluster, release build,
          // quiet machine); what a test can hold on a shared machine is that no query
          // waits for the dead node: a node that asked it would take seconds (soketi and
          // sockudo wait up to 5 s), twice in a row, while its GET / is fast.
          const overs = latencies.filter((l) => l.ms >= 100);
          const waited = overs.filter((l) => l.ms >= 1000 && l.again >= 1000 && l.control < l.again / 4);
          const sorted = latencies.map((l) => l.ms).sort((x, y) => x - y);
          const p99 = sorted[Math.floor(0.99 * (sorted.length - 1))];
          t.diagnostic(
            `member_removed ${removedAt - killedAt} ms after the kill; ${latencies.length} queries to the survivors, ` +
              `p99 ${p99.toFixed(1)} ms, slowest ${sorted[sorted.length - 1].toFixed(1)} ms; ${overs.length} over 100 ms`
          );
          for (const l of overs) t.diagnostic(`over 100 ms: ${JSON.stringify(l)}`);
          assert.deepEqual(waited, [], `queries that waited seconds, twice in a row, while GET / of the node was fast (${latencies.length} queries)`);
          // Only carol left the cluster; dave is still on a survivor.
          removed.forEach((r, k) => assert.deepEqual(ids(r), ['carol'], `member_removed seen on survivor ${k + 1}`));
          assert.deepEqual(memberIds(alice), ['alice', 'bob', 'dave']);
          assert.deepEqual(memberIds(bob), ['alice', 'bob', 'dave']);
          await c.converge(`/channels/${only}`, { info: 'subscription_count' }, { occupied: false, subscription_count: 0 }, {
            normalize: (b) => ({ subscription_count: 0, ...b }),
          });
          await c.metricConverge('realtime_cluster_nodes', (n) => n === 2);
        });

        // FAILS at main 02e0c84 (server bug): Node::forget applies the dead node's empty
        // snapshot before peers_changed() makes a survivor the leader, so no node sends
        // member_removed / channel_vacated for what the dead leader held.
        test('the new leader sends the webhooks of what the killed leader held (member_removed, channel_vacated), once', async () => {
          assert.ok(killedAt, 'the node was killed');
          const wanted = () => {
            const list = hooks();
            return (
              list.some((e) => e.channel === name && e.name === 'member_removed' && e.user_id === 'carol') &&
              list.some((e) => e.channel === only && e.name === 'channel_vacated')
            );
          };
          const deadline = killedAt + 10000;
          while (Date.now() < deadline && !wanted()) await sleep(50);
          await sleep(500);
          const list = hooks();
          const about = (channel) => list.filter((e) => e.channel === channel && e.at >= killedAt).map(hookName);
          // dave is still on a survivor: nothing for him; `only` had its one subscriber on the dead node.
          assert.deepEqual(
            { presence: about(name), only: about(only) },
            { presence: ['member_removed:carol'], only: ['channel_vacated'] },
            'webhooks sent after the leader was killed'
          );
        });

        test('restarted on the same port, the node rejoins with a clean slate and sees the others\' members', async () => {
          assert.ok(killedAt, 'the node was killed');
          const port = c.nodes[victim].port;
          restartedAt = Date.now();
          const node = await c.restart(victim);
          assert.equal(node.port, port);
          await c.metricConverge('realtime_cluster_nodes', (n) => n === 3, { ms: 15000 });
          // Its old users (carol, its dave) are gone everywhere, the others' are listed on it.
          await c.usersConverge(name, ['alice', 'bob', 'dave']);
          await c.converge(`/channels/${name}`, { info: 'user_count,subscription_count' }, { occupied: true, user_count: 3, subscription_count: 3 });
          const added = collect(alice, 'pusher:member_added');
          const { channel: erin, data } = await subscribe(node.client({ presence: presence('erin') }), name);
          assert.equal(data.count, 4);
          assert.deepEqual(memberIds(erin), ['alice', 'bob', 'dave', 'erin']);
          await waitUntil(() => ids(added).includes('erin'), 10000, 'member_added erin on a survivor');
          await c.usersConverge(name, ['alice', 'bob', 'dave', 'erin']);
          assert.deepEqual(memberIds(alice), ['alice', 'bob', 'dave', 'erin']);
          // Webhooks: erin's arrival, and nothing for the members that were there already.
          const about = () => hooks().filter((e) => e.channel === name && e.at >= restartedAt).map(hookName);
          await waitUntil(() => about().includes('member_added:erin'), 10000, 'member_added webhook for erin').catch(() => {});
          await sleep(300);
          assert.deepEqual(about(), ['member_added:erin'], 'webhooks for the presence channel since the restart');
        });

        test('a node other than the leader killed: the leader sends the webhooks of what it held, once', async () => {
          const lead = await findLeader();
          const gone = c.alive.find((i) => i !== lead);
          const name2 = channelName('presence-');
          const only2 = channelName();
          const counters = async () =>
            (await Promise.all(c.alive.map(async (i) => `node ${i + 1}: ${await metricOf(c.nodes[i], 'realtime_webhook_requests_total')}`))).join(', ');
          const countersBefore = await counters();
          const { channel: gina } = await subscribe(c.nodes[lead].client({ presence: presence('gina') }), name2);
          await subscribe(c.nodes[gone].client({ presence: presence('frank') }), name2);
          await subscribe(c.nodes[gone].client(), only2);
          await c.usersConverge(name2, ['frank', 'gina']);
          await c.converge(`/channels/${only2}`, { info: 'subscription_count' }, { occupied: true, subscription_count: 1 });
          // The webhooks of the channels filling up are in before the kill.
          await waitUntil(
            () => hooks().filter((e) => e.channel === name2 || e.channel === only2).length >= 4,
            10000,
            'channel_occupied (2) and member_added (2) webhooks'
          );
          const removed = collect(gina, 'pusher:member_removed');
          const countersSetUp = await counters();
          const at = Date.now();
          await c.kill(gone);
          const about = (channel) => hooks().filter((e) => e.channel === channel && e.at >= at).map(hookName);
          await waitUntil(
            () => ids(removed).includes('frank') && about(name2).length > 0 && about(only2).length > 0,
            10000,
            'member_removed (event and webhook) and channel_vacated (webhook) within 10 s of the kill'
          ).catch(() => {});
          await sleep(300);
          assert.deepEqual(ids(removed), ['frank'], 'member_removed on the leader');
          const countersAfter = await counters();
          const story = hooks()
            .filter((e) => e.channel === name2 || e.channel === only2)
            .map((e) => `${e.at - at} ms: ${hookName(e)} ${e.channel === only2 ? 'only2' : 'name2'}`);
          assert.deepEqual(
            { presence: about(name2), only: about(only2) },
            { presence: ['member_removed:frank'], only: ['channel_vacated'] },
            `leader node ${lead + 1}, killed node ${gone + 1}; webhook requests: ` +
              `[${countersBefore}] -> [${countersSetUp}] (set-up) -> [${countersAfter}]; webhooks (times from the kill): ${story.join('; ')}`
          );
          await c.usersConverge(name2, ['gina']);
        });

        // A hung process keeps its TCP connections (the bus still has it): the others
        // must not take it for dead while it is only late (they ask the bus, which says it
        // is there), only once its lease lapses; resumed, it is a node again and what it
        // holds is announced again, once: by the leader, or, when the node that hung led
        // (and leads again at once), by the node that announced its departure.
        async function hangAndResume(t, { hungLeads }) {
          const leader = await findLeader();
          const hung = hungLeads ? leader : c.alive.find((i) => i !== leader);
          const other = c.alive.find((i) => i !== hung);
          const name4 = channelName('presence-');
          const { channel: kim } = await subscribe(c.nodes[other].client({ presence: presence('kim') }), name4);
          const { channel: lou } = await subscribe(c.nodes[hung].client({ presence: presence('lou') }), name4);
          await c.usersConverge(name4, ['kim', 'lou']);
          await waitUntil(() => memberIds(kim).includes('lou'), 10000, 'lou among kim\'s members');
          // The hung node, resumed, knows it was the one stalled: kim never leaves lou's list.
          const louSaw = [collect(lou, 'pusher:member_removed'), collect(lou, 'pusher:member_added')];
          await waitUntil(() => hooks().filter((e) => e.channel === name4).length >= 3, 10000, 'channel_occupied and member_added (2) webhooks');
          const removed = collect(kim, 'pusher:member_removed');
          const added = collect(kim, 'pusher:member_added');
          const at = Date.now();
          c.nodes[hung].server.signal('SIGSTOP');
          let resumed = false;
          const resume = () => {
            if (!resumed) c.nodes[hung].server.signal('SIGCONT');
            resumed = true;
          };
          t.after(resume);
          await waitUntil(() => ids(removed).includes('lou'), 10000, 'member_removed lou within 10 s of the hang');
          const took = Date.now() - at;
          t.diagnostic(`hung node forgotten ${took} ms after SIGSTOP`);
          // Silent past SUSPECT (750 ms) the node is looked for on the bus and found
          // there: only the 5 s lease (from its last heartbeat, up to 0.5 s before the
          // SIGSTOP) forgets it.
          assert.ok(took >= 3500, `forgotten ${took} ms after it hung, before its lease lapsed`);
          resume();
          await waitUntil(() => ids(added).includes('lou'), 10000, 'member_added lou once the node resumed');
          await c.usersConverge(name4, ['kim', 'lou']);
          // Settled: a flap would show by now.
          await sleep(1000);
          // A return within the webhook batch (or the leave delay) cancels the leave
          // (as a page reload does): either none, or the two in order.
          const since = hooks().filter((e) => e.channel === name4 && e.at >= at).map(hookName);
          assert.ok(
            since.length === 0 || JSON.stringify(since) === JSON.stringify(['member_removed:lou', 'member_added:lou']),
            `webhooks since the hang: ${JSON.stringify(since)}`
          );
          assert.deepEqual(ids(removed), ['lou']);
          assert.deepEqual(ids(added), ['lou']);
          assert.deepEqual(louSaw.map(ids), [[], []], 'member events seen on the node that hung');
          assert.deepEqual(memberIds(lou), ['kim', 'lou']);
          if (hungLeads) assert.equal(await findLeader(), hung, 'the node that hung leads again');
        }

        test('a hung node (SIGSTOP) is forgotten only when its lease lapses, and comes back when resumed', (t) =>
          hangAndResume(t, { hungLeads: false }));

        test('the leader hung (SIGSTOP) and resumed: its members come back, announced once', (t) =>
          hangAndResume(t, { hungLeads: true }));

        // FAILS about half the time at main 02e0c84 (server bug): the goodbye (and the
        // member reports before it) is handed to the bus task, but the node task then ends,
        // the bus task sees its `incoming` closed and may return before publishing them;
        // the others forget the node only when its 5 s lease lapses.
        test('SIGTERM: the node tells the others it leaves, and is forgotten at once (not after its lease)', async () => {
          const [stay, leave] = c.alive;
          const name3 = channelName('presence-');
          const { channel: jay } = await subscribe(c.nodes[stay].client({ presence: presence('jay') }), name3);
          await subscribe(c.nodes[leave].client({ presence: presence('ivy') }), name3);
          await c.usersConverge(name3, ['ivy', 'jay']);
          await waitUntil(() => hooks().filter((e) => e.channel === name3).length >= 3, 10000, 'channel_occupied and member_added (2) webhooks');
          const nodesBefore = await metricOf(c.nodes[stay], 'realtime_cluster_nodes');
          const removed = collect(jay, 'pusher:member_removed');
          const at = Date.now();
          c.nodes[leave].server.signal('SIGTERM');
          // Well under the 5 s lease.
          await waitUntil(() => ids(removed).includes('ivy'), 2000, 'member_removed ivy within 2 s of the SIGTERM');
          await c.metricConverge('realtime_cluster_nodes', (n) => n === nodesBefore - 1, {
            nodes: [stay],
            ms: 2000,
            what: 'the node that left to be forgotten within 2 s',
          });
          const exit = await c.stop(leave);
          assert.equal(exit.code, 0, `exit of the node told to leave: ${JSON.stringify(exit)}`);
          await waitUntil(() => hooks().some((e) => e.channel === name3 && e.at >= at), 5000, 'a webhook').catch(() => {});
          await sleep(300);
          assert.deepEqual(
            hooks().filter((e) => e.channel === name3 && e.at >= at).map(hookName),
            ['member_removed:ivy'],
            'webhooks after the node left'
          );
          await c.usersConverge(name3, ['jay']);
        });
      });

      // ---------------------------------------------------------------------
      // 7. The bus killed and restarted.
      // ---------------------------------------------------------------------
      describe('the bus killed and restarted', { concurrency: false }, () => {
        let bus;
        let c;
        let name; // presence: a@1, b@2, c@3, e@2 (leaves during the outage), d@3 (joins during it)
        let pub; // public channel, one subscriber per node
        const subs = []; // per node: { channel, local, again }
        const members = []; // per node: its presence channel
        let eve;
        let reconnectsBefore;
        let restartedAt;
        let outageAt;
        let receiver;
        let changes; // per node: member_added / member_removed its presence client saw from the outage on

        before(async () => {
          bus = await OwnBus.start(kind);
          receiver = await startReceiver();
          c = await Cluster.start({ bus: bus.url, webhookUrl: receiver.url, webhookLeaveDelay: 0 });
          name = channelName('presence-');
          pub = channelName();
          for (const [k, node] of c.nodes.entries()) {
            const { channel } = await subscribe(node.client(), pub);
            subs.push({ channel, local: collect(channel, 'local'), again: collect(channel, 'again') });
            const user = ['a', 'b', 'c'][k];
            members.push((await subscribe(node.client({ presence: presence(user) }), name)).channel);
          }
          eve = c.nodes[1].client({ presence: presence('e') });
          await subscribe(eve, name);
          await c.usersConverge(name, ['a', 'b', 'c', 'e']);
          await c.converge(`/channels/${pub}`, { info: 'subscription_count' }, { occupied: true, subscription_count: 3 });
          await c.metricConverge('realtime_cluster_nodes', (n) => n === 3);
          await c.metricConverge('realtime_cluster_bus_connected', (n) => n === 1);
          reconnectsBefore = await Promise.all(c.nodes.map((n) => metricOf(n, 'realtime_cluster_bus_reconnects_total')));
          await waitUntil(() => members.every((ch) => ch.members.count === 4), 10000, 'a, b, c and e in every member list');
          await waitUntil(
            () => receiver.events(c.sdk(0)).filter((e) => e.channel === name).length >= 5,
            10000,
            'channel_occupied and member_added (4) webhooks'
          );
          changes = members.map((ch) => ({ added: collect(ch, 'pusher:member_added'), removed: collect(ch, 'pusher:member_removed') }));
        });
        after(async () => {
          if (c) await c.close();
          if (bus) await bus.stop();
          if (receiver) await receiver.close();
        });

        test('during an outage longer than the lease each node still serves its own clients', async () => {
          const droppedBefore = await Promise.all(c.nodes.map((n) => metricOf(n, 'realtime_cluster_reports_dropped_total')));
          outageAt = Date.now();
          await bus.kill();
          await c.metricConverge('realtime_cluster_bus_connected', (n) => n === 0, { what: 'every node to see the bus gone' });
          for (const [k] of c.nodes.entries()) {
            await c.sdk(k).trigger(pub, 'local', { node: k + 1 });
            await waitUntil(
              () => subs[k].local.some((e) => e.data.node === k + 1),
              5000,
              `node ${k + 1}'s own subscriber to get its event during the outage`
            );
          }
          // What the bus could not carry is counted as dropped (the snapshot after it replaces it).
          const dropped = await Promise.all(c.nodes.map((n) => metricOf(n, 'realtime_cluster_reports_dropped_total')));
          dropped.forEach((d, i) => assert.ok(d > droppedBefore[i], `node ${i + 1}: reports_dropped ${droppedBefore[i]} -> ${d}`));
          // Changes during the outage: e leaves node 2, d joins on node 3.
          eve.disconnect();
          const { data } = await subscribe(c.nodes[2].client({ presence: presence('d') }), name);
          assert.ok(data.count >= 2);
          for (const node of c.nodes) assert.equal(await metricOf(node, 'realtime_cluster_bus_connected'), 0, 'still disconnected');
          // The outage outlasts the 5 s lease (a scenario, not a synchronisation): a node
          // unheard because the bus is away must not be taken for dead.
          const rest = 6000 - (Date.now() - outageAt);
          if (rest > 0) await sleep(rest);
          for (const node of c.nodes) assert.equal(await metricOf(node, 'realtime_cluster_bus_connected'), 0, 'still disconnected');
        });

        test('after the restart, cross-node events flow within 10 s, presence lists are whole, metrics show it', async (t) => {
          await bus.restart();
          restartedAt = Date.now();
          // Cross-node events: triggered on node 1 until nodes 2 and 3 get one.
          let k = 0;
          await waitUntil(
            async () => {
              await c.sdk(0).trigger(pub, 'again', { k: k++ });
              return subs[1].again.length > 0 && subs[2].again.length > 0;
            },
            10000,
            'an event from node 1 on nodes 2 and 3 after the bus came back'
          );
          const flowing = Date.now() - restartedAt;
          t.diagnostic(`events flowed again ${flowing} ms after the bus restarted`);
          // The presence lists: what changed during the outage is known everywhere.
          await c.usersConverge(name, ['a', 'b', 'c', 'd'], { ms: Math.max(1000, 10000 - (Date.now() - restartedAt)) });
          await waitUntil(
            () => members.every((ch) => memberIds(ch).join() === 'a,b,c,d'),
            Math.max(1000, 10000 - (Date.now() - restartedAt)),
            'every pusher-js member list to be a,b,c,d'
          );
          await c.converge(`/channels/${name}`, { info: 'user_count,subscription_count' }, { occupied: true, user_count: 4, subscription_count: 4 });
          await c.metricConverge('realtime_cluster_bus_connected', (n) => n === 1);
          await c.metricConverge('realtime_cluster_nodes', (n) => n === 3);
          const reconnects = await Promise.all(c.nodes.map((n) => metricOf(n, 'realtime_cluster_bus_reconnects_total')));
          reconnects.forEach((r, i) =>
            assert.ok(r > reconnectsBefore[i], `node ${i + 1}: realtime_cluster_bus_reconnects_total ${reconnectsBefore[i]} -> ${r}`)
          );
          assert.ok(flowing <= 10000, `events flowed again ${flowing} ms after the restart`);
          // Each presence client saw e leave and d arrive, once, and no one else come or go
          // (nobody was taken for dead during the outage).
          changes.forEach((ch, i) => {
            assert.deepEqual(
              { added: ids(ch.added), removed: ids(ch.removed) },
              { added: ['d'], removed: ['e'] },
              `member events on node ${i + 1} from the outage on`
            );
          });
          // And the webhooks of those two changes, once each (from the leader, whether it
          // saw them during the outage or learnt them after it).
          const about = () => receiver.events(c.sdk(0)).filter((e) => e.channel === name && e.at >= outageAt).map(hookName);
          await waitUntil(() => about().length >= 2, 10000, 'the webhooks of the changes made during the outage').catch(() => {});
          await sleep(300);
          assert.deepEqual(about().sort(), ['member_added:d', 'member_removed:e'], 'webhooks of the changes made during the outage');
        });
      });
    });
  }
});
