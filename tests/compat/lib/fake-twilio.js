'use strict';
// A local stand-in for Twilio's REST API, enough for api-server's outbound path and
// `api-server doctor` (point TWILIO_API_BASE at `fake.base`):
//
//   POST /2010-04-01/Accounts/{AccountSid}/Messages.json   create a message
//   GET  /2010-04-01/Accounts/{AccountSid}/Messages.json   list the messages created, newest
//        first, filtered as Twilio does by To, From and DateSent (DateSent=, DateSent<=,
//        DateSent>= with a YYYY-MM-DD date; the fake sends at once, so a message's
//        date_sent is its creation time), PageSize (default 50) and Page, with
//        next_page_uri while more remain
//   GET  /2010-04-01/Accounts/{AccountSid}.json            fetch the account
//
// Like Twilio it checks HTTP basic auth (AccountSid:AuthToken; otherwise 401
// {"code":20003,"message":"Authenticate"}) and the form (To, From, Body and, for
// these tests, StatusCallback: a missing one is a 400 with a Twilio error code).
// Every request is recorded (method, path, auth, form, what was answered).
//
// Like Twilio, a message it accepts is kept (and listed) from the moment the request
// arrived, even when its answer is held back.
//
// What a message creation answers is switchable:
//   fake.succeed()              201 {"sid":"SM<32 hex>","status":"queued",...} (default)
//   fake.succeed({ delayMs, sid })  the same, answered after delayMs, with that SID
//   fake.refuse(code, message)  400 {"code":21211,"message":"Invalid 'To' Phone Number",...}
//   fake.unavailable(times, status = 503)  503 (or 429) `times` times, then 201 again
//   fake.serverError()          500 every time (a client must not retry it)

const http = require('node:http');
const crypto = require('node:crypto');

const MESSAGES_PATH = /^\/2010-04-01\/Accounts\/([^/]+)\/Messages\.json$/;
const ACCOUNT_PATH = /^\/2010-04-01\/Accounts\/([^/]+)\.json$/;

/** A Twilio-shaped SID: two letters and 32 hex digits. */
function sid(prefix) {
  return prefix + crypto.randomBytes(16).toString('hex');
}

/** Parses `Authorization: Basic …`; answers { user, pass } or null. */
function basicAuth(header) {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header || '');
  if (!m) return null;
  const text = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon < 0) return null;
  return { user: text.slice(0, colon), pass: text.slice(colon + 1) };
}

function twilioError(status, code, message) {
  return {
    status,
    body: { code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status },
  };
}

class FakeTwilio {
  constructor({ accountSid, authToken }) {
    this.accountSid = accountSid;
    this.authToken = authToken;
    this.requests = []; // every answered request, in order of answer
    this.created = []; // every message created (201 answered or held back), oldest first
    this.arrivals = []; // every request as soon as it arrived (answered or not)
    this.waiters = [];
    this.succeed();
    this.server = http.createServer((req, res) => this._handle(req, res));
    this.sockets = new Set();
    this.timers = new Set();
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  /** Starts a fake on a loopback port (`port`, default a free one). */
  static async start(credentials, { port = 0 } = {}) {
    const fake = new FakeTwilio(credentials);
    await new Promise((resolve, reject) => {
      fake.server.once('error', reject);
      fake.server.listen(port, '127.0.0.1', resolve);
    });
    fake.port = fake.server.address().port;
    fake.base = `http://127.0.0.1:${fake.port}`;
    return fake;
  }

  /**
   * Message creations answer 201 queued (the default). `delayMs` holds the answer back
   * that long; `sid` is the SID of the next accepted message (then random again).
   */
  succeed({ delayMs = 0, sid: nextSid = null } = {}) {
    this.mode = { kind: 'succeed', delayMs, nextSid };
  }

  /** Message creations answer a Twilio error (default 400, 21211). */
  refuse(code = 21211, message = "Invalid 'To' Phone Number", status = 400) {
    this.mode = { kind: 'refuse', code, message, status };
  }

  /** The next `times` message creations answer `status` (503 or 429), then 201 again. */
  unavailable(times, status = 503) {
    this.mode = { kind: 'unavailable', remaining: times, status, delayMs: 0, nextSid: null };
  }

  /** Message creations answer 500 (which may have sent the SMS: never retry it). */
  serverError() {
    this.mode = { kind: 'serverError' };
  }

  /** Recorded message creations (POST …/Messages.json), optionally only those matching `pred`. */
  messageRequests(pred = () => true) {
    return this.requests.filter((r) => r.kind === 'message' && pred(r));
  }

  /** Recorded reads of the Messages list (lookups), optionally only those matching `pred`. */
  lookups(pred = () => true) {
    return this.requests.filter((r) => r.kind === 'lookup' && pred(r));
  }

  /** Resolves the answered requests once `pred(requests)` holds. */
  waitFor(pred, ms = 5000, what = 'requests') {
    return this._wait('requests', pred, ms, what);
  }

  /** Resolves the arrived requests (answered or still held back) once `pred(arrivals)` holds. */
  waitForArrival(pred, ms = 5000, what = 'arrivals') {
    return this._wait('arrivals', pred, ms, what);
  }

  _wait(source, pred, ms, what) {
    return new Promise((resolve, reject) => {
      const waiter = { source, pred, resolve, timer: null };
      waiter.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`fake Twilio: timed out after ${ms} ms waiting for ${what}; seen ${JSON.stringify(this.requests)}`));
      }, ms);
      this.waiters.push(waiter);
      this._check();
    });
  }

  _check() {
    this.waiters = this.waiters.filter((w) => {
      const list = this[w.source];
      if (!w.pred(list)) return true;
      clearTimeout(w.timer);
      w.resolve(list);
      return false;
    });
  }

  _answer(res, record, { status, body }) {
    record.answer = { status, body };
    this.requests.push(record);
    const text = JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
    this._check();
  }

  _handle(req, res) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const url = new URL(req.url, 'http://fake.twilio');
      const auth = basicAuth(req.headers.authorization);
      const form = {};
      if (/application\/x-www-form-urlencoded/i.test(req.headers['content-type'] || '')) {
        for (const [k, v] of new URLSearchParams(raw)) form[k] = v;
      }
      const record = {
        at: Date.now(),
        method: req.method,
        path: url.pathname,
        contentType: req.headers['content-type'] || null,
        auth,
        authorized: !!auth && auth.user === this.accountSid && auth.pass === this.authToken,
        form,
        raw,
        kind: 'other',
      };
      const messages = MESSAGES_PATH.exec(url.pathname);
      const account = ACCOUNT_PATH.exec(url.pathname);
      record.query = Object.fromEntries(url.searchParams);
      if (messages && req.method === 'GET') record.kind = 'lookup';
      else if (messages) record.kind = 'message';
      else if (account) record.kind = 'account';
      this.arrivals.push(record);
      this._check();

      if (!messages && !account) {
        return this._answer(res, record, twilioError(404, 20404, 'The requested resource was not found'));
      }
      if (!record.authorized || (messages || account)[1] !== this.accountSid) {
        return this._answer(res, record, { status: 401, body: { code: 20003, message: 'Authenticate', more_info: 'https://www.twilio.com/docs/errors/20003', status: 401 } });
      }
      if (account) {
        if (req.method !== 'GET') return this._answer(res, record, twilioError(405, 20004, 'Method not allowed'));
        return this._answer(res, record, {
          status: 200,
          body: { sid: this.accountSid, friendly_name: 'Fake account', status: 'active', type: 'Full' },
        });
      }
      if (req.method === 'GET') return this._answer(res, record, this._list(url));
      if (req.method !== 'POST') return this._answer(res, record, twilioError(405, 20004, 'Method not allowed'));
      if (!form.To) return this._answer(res, record, twilioError(400, 21604, "A 'To' phone number is required."));
      if (!form.From) return this._answer(res, record, twilioError(400, 21603, "A 'From' phone number is required."));
      if (!form.Body) return this._answer(res, record, twilioError(400, 21602, 'Message body is required.'));
      if (!form.StatusCallback) {
        return this._answer(res, record, twilioError(400, 21609, 'StatusCallback is required by this fake.'));
      }

      const mode = this.mode;
      if (mode.kind === 'refuse') return this._answer(res, record, twilioError(mode.status, mode.code, mode.message));
      if (mode.kind === 'serverError') return this._answer(res, record, twilioError(500, 20500, 'Internal Server Error'));
      if (mode.kind === 'unavailable' && mode.remaining > 0) {
        mode.remaining -= 1;
        return this._answer(
          res,
          record,
          mode.status === 429 ? twilioError(429, 20429, 'Too Many Requests') : twilioError(mode.status, 20503, 'Service Unavailable')
        );
      }
      const now = new Date().toUTCString();
      const messageSid = mode.nextSid || sid('SM');
      mode.nextSid = null;
      const created = {
        account_sid: this.accountSid,
        api_version: '2010-04-01',
        body: form.Body,
        date_created: now,
        date_sent: now,
        date_updated: now,
        direction: 'outbound-api',
        error_code: null,
        error_message: null,
        from: form.From,
        num_media: '0',
        num_segments: '1',
        price: null,
        price_unit: 'USD',
        sid: messageSid,
        status: 'queued',
        to: form.To,
        uri: `/2010-04-01/Accounts/${this.accountSid}/Messages/${messageSid}.json`,
        createdAt: new Date(),
      };
      // The message exists at Twilio from here on, whether or not the answer arrives.
      this.created.push(created);
      const answer = () => this._answer(res, record, {
        status: 201,
        body: {
          account_sid: this.accountSid,
          api_version: '2010-04-01',
          body: form.Body,
          date_created: now,
          date_sent: null,
          date_updated: now,
          direction: 'outbound-api',
          error_code: null,
          error_message: null,
          from: form.From,
          messaging_service_sid: null,
          num_media: '0',
          num_segments: '1',
          price: null,
          price_unit: 'USD',
          sid: messageSid,
          status: 'queued',
          subresource_uris: { media: `/2010-04-01/Accounts/${this.accountSid}/Messages/${messageSid}/Media.json` },
          to: form.To,
          uri: `/2010-04-01/Accounts/${this.accountSid}/Messages/${messageSid}.json`,
        },
      });
      if (mode.delayMs) {
        const timer = setTimeout(answer, mode.delayMs);
        this.timers.add(timer);
        return undefined;
      }
      return answer();
    });
  }

  /** Messages created whose Body is `body`. */
  createdWithBody(body) {
    return this.created.filter((m) => m.body === body);
  }

  /** The Messages list resource: filters, newest first, pages. */
  _list(url) {
    const q = url.searchParams;
    const day = (d) => d.toISOString().slice(0, 10);
    const checks = [];
    for (const [name, test] of [
      ['DateSent', (d, v) => day(d) === v],
      ['DateSent<', (d, v) => day(d) <= v],
      ['DateSent>', (d, v) => day(d) >= v],
    ]) {
      const value = q.get(name);
      if (value === null) continue;
      if (!/^\d{4}-\d{2}-\d{2}$/.test(value)) return twilioError(400, 20001, `Invalid ${name}: ${value}`);
      checks.push((m) => test(m.createdAt, value));
    }
    const pageSize = Math.min(Number(q.get('PageSize') || 50), 1000);
    const page = Number(q.get('Page') || 0);
    if (!Number.isInteger(pageSize) || pageSize < 1 || !Number.isInteger(page) || page < 0) {
      return twilioError(400, 20001, 'Invalid PageSize or Page');
    }
    const all = this.created
      .filter((m) => (!q.has('To') || m.to === q.get('To')) && (!q.has('From') || m.from === q.get('From')))
      .filter((m) => checks.every((check) => check(m)))
      .slice()
      .reverse();
    const messages = all.slice(page * pageSize, (page + 1) * pageSize).map(({ createdAt, ...m }) => m);
    const base = `/2010-04-01/Accounts/${this.accountSid}/Messages.json`;
    const next = new URLSearchParams(q);
    next.set('Page', String(page + 1));
    next.set('PageSize', String(pageSize));
    return {
      status: 200,
      body: {
        messages,
        page,
        page_size: pageSize,
        uri: `${base}?${q}`,
        first_page_uri: `${base}?${new URLSearchParams({ ...Object.fromEntries(q), Page: '0', PageSize: String(pageSize) })}`,
        next_page_uri: (page + 1) * pageSize < all.length ? `${base}?${next}` : null,
        previous_page_uri: null,
        start: page * pageSize,
        end: page * pageSize + messages.length - 1,
      },
    };
  }

  async stop() {
    for (const w of this.waiters.splice(0)) clearTimeout(w.timer);
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.sockets) s.destroy();
    await new Promise((resolve) => this.server.close(() => resolve()));
  }
}

module.exports = { FakeTwilio, sid };
