'use strict';
// Clients for the compatibility suite: pusher-js (the official client), the `pusher`
// server SDK (HTTP API, auth signatures, webhooks) and raw `ws` sockets for the
// frames the official client never sends. A Harness owns one server and every
// client a test file opens, so cleanup is one call.

const crypto = require('node:crypto');
const WebSocket = require('ws');
const Pusher = require('pusher');
const PusherJS = require('pusher-js');
const { startServer, sleep } = require('./server');

// pusher-js logs through console when this is on; keep test output quiet.
PusherJS.logToConsole = false;

/** Rejects after `ms` with a message naming what was awaited. */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `fn` until it answers truthy. */
async function waitUntil(fn, ms = 2000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(15);
  }
}

/** Resolves when a pusher-js client is connected. */
function connected(client, ms = 3000) {
  if (client.connection.state === 'connected') return Promise.resolve(client.connection.socket_id);
  return withTimeout(
    new Promise((resolve, reject) => {
      const onChange = ({ current }) => {
        if (current === 'connected') {
          client.connection.unbind('state_change', onChange);
          resolve(client.connection.socket_id);
        } else if (current === 'failed') {
          client.connection.unbind('state_change', onChange);
          reject(new Error('pusher-js connection failed'));
        }
      };
      client.connection.bind('state_change', onChange);
    }),
    ms,
    'pusher-js to connect'
  );
}

/** Resolves when a pusher-js client reaches `state`. */
function reachesState(client, state, ms = 3000) {
  if (client.connection.state === state) return Promise.resolve();
  return withTimeout(
    new Promise((resolve) => {
      const onChange = ({ current }) => {
        if (current === state) {
          client.connection.unbind('state_change', onChange);
          resolve();
        }
      };
      client.connection.bind('state_change', onChange);
    }),
    ms,
    `pusher-js state ${state}`
  );
}

/**
 * Subscribes a pusher-js client; resolves { channel, data } on
 * pusher:subscription_succeeded, rejects (err.status, err.data) on
 * pusher:subscription_error.
 */
function subscribe(client, name, ms = 3000) {
  const channel = client.subscribe(name);
  return withTimeout(
    new Promise((resolve, reject) => {
      channel.bind('pusher:subscription_succeeded', (data) => resolve({ channel, data }));
      channel.bind('pusher:subscription_error', (data) => {
        const err = new Error(`subscription_error on ${name}: ${JSON.stringify(data)}`);
        err.status = data && data.status;
        err.data = data;
        reject(err);
      });
    }),
    ms,
    `subscription to ${name}`
  );
}

/** Subscribes and resolves the pusher:subscription_error data (rejects on success). */
function subscriptionError(client, name, ms = 3000) {
  return subscribe(client, name, ms).then(
    () => {
      throw new Error(`subscription to ${name} unexpectedly succeeded`);
    },
    (err) => {
      if (!err.data) throw err;
      return { channel: client.channel(name), data: err.data };
    }
  );
}

/** Resolves { data, metadata } for the next `event` on a pusher-js channel (or user facade). */
function nextEvent(target, event, ms = 2000) {
  return withTimeout(
    new Promise((resolve) => {
      const cb = (data, metadata) => {
        target.unbind(event, cb);
        resolve({ data, metadata });
      };
      target.bind(event, cb);
    }),
    ms,
    `event ${event}`
  );
}

/** Collects every `event` on a pusher-js channel into an array. */
function collect(target, event) {
  const seen = [];
  target.bind(event, (data, metadata) => seen.push({ data, metadata }));
  return seen;
}

/** Every frame a pusher-js connection receives (the raw protocol messages). */
function recordFrames(client) {
  const frames = [];
  client.connection.bind('message', (message) => frames.push(message));
  return frames;
}

/** A raw WebSocket client that records every frame and the close. */
class RawClient {
  constructor(url, wsOptions = {}) {
    this.url = url;
    this.frames = [];
    this.waiters = [];
    this.closeInfo = null;
    this.errors = [];
    this.socketId = null;
    this.ws = new WebSocket(url, { handshakeTimeout: 3000, ...wsOptions });
    this.ws.on('error', (e) => this.errors.push(e));
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('close', () => reject(new Error('closed before open')));
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        this._check();
      });
    });
    this.ws.on('message', (raw, isBinary) => {
      const text = raw.toString();
      let frame;
      try {
        frame = JSON.parse(text);
      } catch {
        frame = { event: undefined, unparsable: true };
      }
      frame.raw = text;
      frame.binary = isBinary;
      if (typeof frame.data === 'string') {
        try {
          frame.json = JSON.parse(frame.data);
        } catch {
          frame.json = undefined;
        }
      } else {
        frame.json = frame.data;
      }
      this.frames.push(frame);
      if (frame.event === 'pusher:connection_established' && frame.json) {
        this.socketId = frame.json.socket_id;
      }
      this._check();
    });
  }

  _check() {
    this.waiters = this.waiters.filter((w) => {
      const found = this.frames.find((f) => !f.consumed && w.pred(f));
      if (found) {
        found.consumed = true;
        w.resolve(found);
        return false;
      }
      if (this.closeInfo) {
        w.reject(
          new Error(`connection closed (${this.closeInfo.code} ${this.closeInfo.reason}) while waiting for ${w.what}; frames: ${this.describe()}`)
        );
        return false;
      }
      return true;
    });
  }

  describe() {
    return JSON.stringify(this.frames.map((f) => f.raw));
  }

  /** Next unconsumed frame matching `pred` (an event name or a function). */
  next(pred, ms = 2000) {
    const test = typeof pred === 'string' ? (f) => f.event === pred : pred;
    const what = typeof pred === 'string' ? pred : 'a matching frame';
    return withTimeout(
      new Promise((resolve, reject) => {
        this.waiters.push({ pred: test, resolve, reject, what });
        this._check();
      }),
      ms,
      `${what} (frames so far: ${this.describe()})`
    );
  }

  /** Resolves true when no frame matching `pred` arrives within `ms`. */
  async nothing(pred, ms = 300) {
    const test = typeof pred === 'string' ? (f) => f.event === pred : pred;
    const start = this.frames.length;
    await sleep(ms);
    return !this.frames.slice(start).some(test);
  }

  /** Waits for pusher:connection_established; answers the socket id. */
  async established(ms = 3000) {
    await this.next('pusher:connection_established', ms);
    return this.socketId;
  }

  send(message, options) {
    const payload = typeof message === 'string' || Buffer.isBuffer(message) ? message : JSON.stringify(message);
    this.ws.send(payload, options);
  }

  /** Subscribes with a signature from `sdk` (for private/presence); resolves the answer frame. */
  async subscribe(channel, { sdk, channelData, auth } = {}) {
    const data = { channel };
    if (auth !== undefined) {
      data.auth = auth;
    } else if (sdk && /^(private-|presence-)/.test(channel)) {
      const signed = sdk.authorizeChannel(this.socketId, channel, channelData);
      data.auth = signed.auth;
      if (signed.channel_data) data.channel_data = signed.channel_data;
    }
    this.send({ event: 'pusher:subscribe', data });
    return this.next(
      (f) =>
        (f.event === 'pusher_internal:subscription_succeeded' || f.event === 'pusher:subscription_error') &&
        f.channel === channel
    );
  }

  waitClosed(ms = 3000) {
    return withTimeout(this.closed, ms, `close of ${this.url} (frames: ${this.describe()})`);
  }

  close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      try {
        this.ws.terminate();
      } catch {
        // already gone
      }
    }
  }
}

// pusher-js's Node build bundles faye-websocket, whose close() arms a 30 s timer even
// when the socket is already closed (pusher-js calls it after a 4000-4099 close from
// the server). That timer would keep the test process alive for 30 s, so the
// sockets are remembered and their close timers cleared once the client is done.
function trackSockets(client) {
  client.__sockets = [];
  client.connection.bind('state_change', ({ current }) => {
    const socket = client.connection.connection && client.connection.connection.transport
      ? client.connection.connection.transport.socket
      : null;
    if (current === 'connected' && socket && !client.__sockets.includes(socket)) client.__sockets.push(socket);
  });
}

function releaseSockets(client) {
  for (const socket of client.__sockets || []) {
    if (socket && socket._closeTimer) clearTimeout(socket._closeTimer);
  }
}

/** One server plus every client a test file opened. */
class Harness {
  constructor(server) {
    this.server = server;
    this.clients = [];
    this.raws = [];
    this.sdkClient = this.sdk({ encryptionMasterKeyBase64: Harness.masterKey });
    // Same key, wrong secret: its signatures are refused.
    this.badSdk = this.sdk({ secret: 'not-the-secret', encryptionMasterKeyBase64: Harness.masterKey });
  }

  static async start(options = {}) {
    return new Harness(await startServer(options));
  }

  get port() {
    return this.server.port;
  }

  /** The official server SDK pointed at this server. */
  sdk(overrides = {}) {
    return new Pusher({
      appId: this.server.appId,
      key: this.server.key,
      secret: this.server.secret,
      host: this.server.host,
      port: String(this.server.port),
      useTLS: false,
      timeout: 5000,
      ...overrides,
    });
  }

  /**
   * A pusher-js client. Options:
   *  presence: presence data ({user_id, user_info}) or (params) => data
   *  user: user data for signin ({id, ...})
   *  sdk: which SDK signs (default: correct credentials)
   *  authorize: (params) => authData, overriding everything
   *  nacl: tweetnacl, for private-encrypted channels
   *  key: app key to connect with (default: the server's)
   */
  client(options = {}) {
    const sdk = options.sdk || this.sdkClient;
    const opts = {
      cluster: 'local',
      wsHost: this.server.host,
      wsPort: this.server.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      channelAuthorization: {
        customHandler: (params, cb) => {
          try {
            if (options.authorize) return cb(null, options.authorize(params));
            let data;
            if (params.channelName.startsWith('presence-')) {
              data = typeof options.presence === 'function' ? options.presence(params) : options.presence;
            }
            cb(null, sdk.authorizeChannel(params.socketId, params.channelName, data));
          } catch (e) {
            cb(e, null);
          }
        },
      },
      userAuthentication: {
        customHandler: (params, cb) => {
          try {
            cb(null, sdk.authenticateUser(params.socketId, options.user || { id: 'anonymous' }));
          } catch (e) {
            cb(e, null);
          }
        },
      },
    };
    if (options.nacl) opts.nacl = options.nacl;
    const client = new PusherJS(options.key || this.server.key, opts);
    trackSockets(client);
    this.clients.push(client);
    return client;
  }

  /** A connected pusher-js client. */
  async connectedClient(options = {}) {
    const client = this.client(options);
    await connected(client);
    return client;
  }

  wsUrl(pathAndQuery = `/app/${this.server.key}?protocol=7&client=js&version=8.6.0`) {
    return `ws://${this.server.host}:${this.server.port}${pathAndQuery}`;
  }

  /** A raw ws client (not awaited: call .established() or .waitClosed()). */
  raw(pathAndQuery, wsOptions) {
    const raw = new RawClient(this.wsUrl(pathAndQuery), wsOptions);
    this.raws.push(raw);
    return raw;
  }

  /** A raw ws client that got pusher:connection_established. */
  async rawConnected(wsOptions) {
    const raw = this.raw(undefined, wsOptions);
    await raw.established();
    return raw;
  }

  /** Disconnects every client opened so far. */
  closeClients() {
    for (const c of this.clients.splice(0)) {
      try {
        c.disconnect();
      } catch {
        // ignore
      }
      releaseSockets(c);
    }
    for (const r of this.raws.splice(0)) r.close();
  }

  async close() {
    this.closeClients();
    await this.server.stop();
  }
}

Harness.masterKey = crypto.randomBytes(32).toString('base64');

/** A fresh channel name with a prefix, so tests never share channels. */
function channelName(prefix = '') {
  return prefix + 'c-' + crypto.randomBytes(5).toString('hex');
}

/** Asserts a promise rejects with a pusher SDK RequestError of `status`; answers the error. */
async function rejectsWithStatus(promise, status) {
  try {
    await promise;
  } catch (err) {
    if (err && err.status === status) return err;
    throw new Error(`expected HTTP ${status}, got ${err && err.status} (${err && err.message}) ${err && err.body}`);
  }
  throw new Error(`expected HTTP ${status}, but the request succeeded`);
}

/**
 * Signs a pusher-js client in (once connected); resolves the answer,
 * pusher:signin_success or pusher:error, and every frame it received.
 */
async function signin(client, ms = 3000) {
  const frames = recordFrames(client);
  await connected(client, ms);
  client.signin();
  const answered = () => frames.find((f) => f.event === 'pusher:signin_success' || f.event === 'pusher:error');
  await waitUntil(answered, ms, 'pusher:signin_success');
  return { answer: answered(), frames };
}

module.exports = {
  signin,
  Harness,
  RawClient,
  Pusher,
  PusherJS,
  releaseSockets,
  withTimeout,
  waitUntil,
  connected,
  reachesState,
  subscribe,
  subscriptionError,
  nextEvent,
  collect,
  recordFrames,
  channelName,
  rejectsWithStatus,
  sleep,
};
