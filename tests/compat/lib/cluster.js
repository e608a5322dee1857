'use strict';
// Clusters of realtime-server nodes for the compatibility suite: N nodes of one
// app joined through one bus (`--cluster redis://…` or `nats://…`), bus servers
// of a test's own (to kill and restart), a webhook receiver, and readers of each
// node's /metrics. Nothing here talks the protocol: tests drive the nodes through
// the official clients (a Harness per node, see clients.js).

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const path = require('node:path');
const { isDeepStrictEqual } = require('node:util');
const { startServer, firstExecutable, keepOutput, canConnect, freePort, sleep } = require('./server');
const { Harness, subscribe, waitUntil, channelName } = require('./clients');
const { startWebhookReceiver } = require('./webhook-receiver');

/** The buses every test machine runs (see tests/compat/README.md). */
const SHARED_BUS = {
  redis: process.env.REALTIME_TEST_REDIS_URL || 'redis://127.0.0.1:6379',
  nats: process.env.REALTIME_TEST_NATS_URL || 'nats://127.0.0.1:4222',
};

// Every child this module starts, killed if the test process exits without
// cleaning up (an assertion that threw past its hooks, a ^C).
const children = new Set();
process.on('exit', () => {
  for (const proc of children) {
    try {
      proc.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});
function track(proc) {
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
}

/**
 * The shared bus of `kind` ('redis' or 'nats'): its URL, once it answers on TCP.
 * Throws (never skips) when it does not: the suite needs it.
 */
async function sharedBus(kind) {
  const url = SHARED_BUS[kind];
  if (!url) throw new Error(`no shared bus of kind ${kind}`);
  const { hostname, port } = new URL(url);
  if (!(await canConnect(Number(port), hostname))) {
    throw new Error(
      `the ${kind} bus ${url} does not answer: start it (the suite expects Redis on 127.0.0.1:6379 ` +
        `and NATS on 127.0.0.1:4222, or set REALTIME_TEST_${kind.toUpperCase()}_URL)`
    );
  }
  return url;
}

/** An executable on PATH (or in the usual sbin directories), or a loud error. */
function findExecutable(name, envVar) {
  const explicit = process.env[envVar];
  const dirs = (process.env.PATH || '').split(path.delimiter).filter(Boolean);
  dirs.push('/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin');
  const found = firstExecutable(explicit ? [explicit] : dirs.map((d) => path.join(d, name)));
  if (found) return found;
  throw new Error(
    `${name} not found (${explicit ? `${envVar}=${explicit}` : `looked in ${dirs.join(':')}`}): ` +
      `the cluster suite starts its own ${name} for the tests that kill the bus; install it or set ${envVar}`
  );
}

/**
 * A bus server of a test's own (redis-server or nats-server on a free port of
 * 127.0.0.1), to kill and to start again on the same port.
 */
class OwnBus {
  constructor(kind, port) {
    this.kind = kind;
    this.port = port;
    this.proc = null;
    this.output = '';
    this.bin =
      kind === 'redis'
        ? findExecutable('redis-server', 'REDIS_SERVER_BIN')
        : findExecutable('nats-server', 'NATS_SERVER_BIN');
  }

  static async start(kind) {
    const bus = new OwnBus(kind, await freePort());
    await bus.start();
    return bus;
  }

  get url() {
    return `${this.kind}://127.0.0.1:${this.port}`;
  }

  get running() {
    return this.proc !== null && this.exitInfo === null;
  }

  /** Starts the server on its port; resolves once it accepts connections. */
  async start() {
    const args =
      this.kind === 'redis'
        ? ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no']
        : ['-a', '127.0.0.1', '-p', String(this.port)];
    let lastError;
    for (let attempt = 0; attempt < 10; attempt++) {
      const proc = spawn(this.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      track(proc);
      this.proc = proc;
      this.exitInfo = null;
      keepOutput(proc, this, 100000);
      this.exited = new Promise((resolve) => {
        proc.once('exit', (code, signal) => {
          if (this.proc === proc) this.exitInfo = { code, signal };
          resolve({ code, signal });
        });
      });
      proc.once('error', (e) => {
        this.output += `spawn error: ${e.message}\n`;
      });
      const deadline = Date.now() + 10000;
      while (Date.now() < deadline && this.exitInfo === null) {
        if (await canConnect(this.port)) return this;
        await sleep(20);
      }
      lastError = new Error(
        `${path.basename(this.bin)} did not start on port ${this.port} (exit ${JSON.stringify(this.exitInfo)}):\n${this.output}`
      );
      if (this.exitInfo === null) {
        proc.kill('SIGKILL');
        await this.exited;
      }
      // The port may be held for a moment after a kill: try again.
      await sleep(200);
    }
    throw lastError;
  }

  /** Kills the server (SIGKILL: no goodbye to anyone) and waits for it to exit. */
  async kill() {
    if (!this.running) return;
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  /** Starts the server again, on the same port. */
  async restart() {
    await this.kill();
    return this.start();
  }

  stop() {
    return this.kill();
  }
}

/** Every sample of a Prometheus text exposition: name -> sum over its label sets. */
function parseMetrics(text) {
  const values = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const value = Number(match[3]);
    values.set(match[1], (values.get(match[1]) || 0) + value);
  }
  return values;
}

/** A node's /metrics (name -> value). */
async function metricsOf(node) {
  const server = node.server || node;
  const res = await fetch(`http://${server.host}:${server.port}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics of port ${server.port} answered ${res.status}`);
  return parseMetrics(await res.text());
}

/** One metric of a node; throws when the node does not expose it. */
async function metricOf(node, name) {
  const values = await metricsOf(node);
  if (!values.has(name)) throw new Error(`metric ${name} missing from /metrics of port ${(node.server || node).port}`);
  return values.get(name);
}

/**
 * N nodes of one app (same id, key and secret, each on its own port) joined
 * through the bus `bus`. nodes[i] is a Harness: nodes[i].client() is a pusher-js
 * client of node i, nodes[i].sdkClient the server SDK pointed at node i.
 */
class Cluster {
  constructor(options, nodes) {
    this.options = options;
    this.nodes = nodes;
    this.dead = new Set();
  }

  /**
   * Options: bus (URL, required), size (3), appId/key/secret (random),
   * clientEvents, webhookUrl, webhookLeaveDelay, args, workers (1), ready (true:
   * resolve only once every node sees every other one), viaEnv (indexes of the
   * nodes told the bus by REALTIME_CLUSTER_URL instead of --cluster).
   */
  static async start(options) {
    if (!options.bus) throw new Error('Cluster.start needs a bus URL');
    const opts = {
      size: 3,
      workers: 1,
      ...options,
      appId: options.appId || String(100000 + crypto.randomInt(800000)),
      key: options.key || 'key' + crypto.randomBytes(6).toString('hex'),
      secret: options.secret || 'secret' + crypto.randomBytes(6).toString('hex'),
    };
    const settled = await Promise.allSettled(
      Array.from({ length: opts.size }, (_, i) => startServer(Cluster.serverOptions(opts, undefined, i)))
    );
    const servers = settled.filter((s) => s.status === 'fulfilled').map((s) => s.value);
    for (const s of servers) track(s.proc);
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed) {
      await Promise.all(servers.map((s) => s.stop()));
      throw failed.reason;
    }
    const cluster = new Cluster(opts, servers.map((s) => new Harness(s)));
    if (opts.ready !== false) {
      try {
        await cluster.ready();
      } catch (e) {
        await cluster.close();
        throw e;
      }
    }
    return cluster;
  }

  static serverOptions(opts, port, index) {
    const viaEnv = (opts.viaEnv || []).includes(index);
    return {
      appId: opts.appId,
      key: opts.key,
      secret: opts.secret,
      clientEvents: opts.clientEvents,
      webhookUrl: opts.webhookUrl,
      webhookLeaveDelay: opts.webhookLeaveDelay,
      workers: opts.workers,
      port,
      args: [...(viaEnv ? [] : ['--cluster', opts.bus]), ...(opts.args || [])],
      env: viaEnv ? { REALTIME_CLUSTER_URL: opts.bus } : {},
    };
  }

  get appId() {
    return this.options.appId;
  }

  /** Indexes of the nodes running now. */
  get alive() {
    return this.nodes.map((_, i) => i).filter((i) => !this.dead.has(i));
  }

  /** The server SDK pointed at node i. */
  sdk(i) {
    return this.nodes[i].sdkClient;
  }

  /** GET `path` of the HTTP API through node i; answers the JSON body. */
  async query(i, urlPath, params = {}) {
    const res = await this.nodes[i].sdkClient.get({ path: urlPath, params });
    return res.json();
  }

  /**
   * Waits until every node in `nodes` (default: every live node) answers GET
   * `path` with `expected` (after `normalize`); throws with what each answered last.
   */
  async converge(urlPath, params, expected, { ms = 10000, nodes = this.alive, normalize = (x) => x } = {}) {
    let last = [];
    try {
      await waitUntil(
        async () => {
          last = await Promise.all(nodes.map((i) => this.query(i, urlPath, params)));
          return last.every((body) => isDeepStrictEqual(normalize(body), expected));
        },
        ms,
        'agreement'
      );
    } catch (e) {
      if (!String(e.message).startsWith('timed out')) {
        const cause = e.error ? ` (${e.error.code || ''} ${e.error.message || e.error})` : '';
        throw new Error(
          `GET ${urlPath} ${JSON.stringify(params)} on nodes ${nodes.map((i) => i + 1).join(',')} failed: ` +
            `${e.message}${cause} ${e.status || ''} ${e.body || ''}`
        );
      }
      throw new Error(
        `nodes ${nodes.map((i) => i + 1).join(',')} did not all answer GET ${urlPath} ${JSON.stringify(params)} ` +
          `with ${JSON.stringify(expected)} within ${ms} ms; last answers: ` +
          nodes.map((i, k) => `node ${i + 1}: ${JSON.stringify(last[k] && normalize(last[k]))}`).join('; ')
      );
    }
    return last;
  }

  /** Waits until the presence channel's members are `ids` on every node in `nodes`. */
  usersConverge(channel, ids, options = {}) {
    return this.converge(
      `/channels/${channel}/users`,
      {},
      { users: [...ids].sort().map((id) => ({ id })) },
      { ...options, normalize: sortUsers }
    );
  }

  /** Waits until one metric of every node in `nodes` passes `pred`; answers the values. */
  async metricConverge(name, pred, { ms = 10000, nodes = this.alive, what = name } = {}) {
    let last = [];
    try {
      await waitUntil(
        async () => {
          last = await Promise.all(nodes.map((i) => metricOf(this.nodes[i], name)));
          return last.every(pred);
        },
        ms,
        what
      );
    } catch (e) {
      if (!String(e.message).startsWith('timed out')) throw e;
      throw new Error(`${what}: ${name} of nodes ${nodes.map((i) => i + 1).join(',')} was ${JSON.stringify(last)} after ${ms} ms`);
    }
    return last;
  }

  /**
   * Resolves once every node in `nodes` counts a subscriber of a probe channel
   * on each of them: every node hears every other one.
   */
  async ready({ nodes = this.alive, ms = 15000 } = {}) {
    const probe = channelName('cluster-probe-');
    const clients = [];
    try {
      for (const i of nodes) {
        const client = this.nodes[i].client();
        clients.push(client);
        await subscribe(client, probe, 10000);
      }
      await this.converge(`/channels/${probe}`, { info: 'subscription_count' }, {
        occupied: true,
        subscription_count: nodes.length,
      }, { ms, nodes });
    } finally {
      for (const client of clients) client.unsubscribe(probe);
    }
  }

  /** Kills node i with SIGKILL and disconnects its pusher-js clients (so they stay away). */
  async kill(i) {
    const node = this.nodes[i];
    this.dead.add(i);
    await node.server.stop('SIGKILL');
    node.closeClients();
  }

  /**
   * Waits for node i to exit (after a signal sent with nodes[i].server.signal),
   * SIGKILL after 10 s; disconnects its pusher-js clients. Answers { code, signal }.
   */
  async stop(i) {
    const node = this.nodes[i];
    this.dead.add(i);
    let timer;
    const info = await Promise.race([
      node.server.exited,
      new Promise((resolve) => {
        timer = setTimeout(() => resolve(node.server.stop('SIGKILL')), 10000);
      }),
    ]);
    clearTimeout(timer);
    node.closeClients();
    return info;
  }

  /** Starts node i again on the port it had (a new process: a new node of the cluster). */
  async restart(i) {
    const old = this.nodes[i];
    if (old.server.running) await this.kill(i);
    const server = await startServer(Cluster.serverOptions(this.options, old.server.port, i));
    track(server.proc);
    this.nodes[i] = new Harness(server);
    this.dead.delete(i);
    return this.nodes[i];
  }

  /** Disconnects every client of every node. */
  closeClients() {
    for (const node of this.nodes) node.closeClients();
  }

  /**
   * Stops every node: SIGKILL by default; 'SIGTERM' lets them say goodbye
   * to the rest of the bus (they are forgotten at once, not after the lease).
   */
  async close(signal = 'SIGKILL') {
    await Promise.all(
      this.nodes.map(async (node) => {
        node.closeClients();
        await node.server.stop(signal);
      })
    );
  }

  /** Every node's logs, for failure messages. */
  logs() {
    return this.nodes.map((n, i) => `--- node ${i + 1} (port ${n.port}) ---\n${n.server.logs()}`).join('\n');
  }
}

function sortUsers(body) {
  if (!body || !Array.isArray(body.users)) return body;
  return { ...body, users: [...body.users].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)) };
}

module.exports = {
  Cluster,
  OwnBus,
  sharedBus,
  startReceiver: startWebhookReceiver,
  metricsOf,
  metricOf,
  parseMetrics,
  SHARED_BUS,
};
