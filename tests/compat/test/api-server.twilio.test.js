'use strict';
// api-server's Twilio side, driven by the official `twilio` SDK (every webhook is signed
// with twilio.getExpectedTwilioSignature, exactly as Twilio signs) and a local fake of
// Twilio's REST API (lib/fake-twilio.js, TWILIO_API_BASE):
//   - inbound SMS/MMS webhooks: signature over PUBLIC_URL + path + query (not the Host the
//     request reached), To picks the team, unknown From becomes a contact, retried
//     MessageSid stores nothing new, events through pusher-js;
//   - outbound sends: the request Twilio gets, its SID/status stored, status callbacks only
//     moving forwards, Twilio's refusals, retries only when nothing can have been sent (a
//     5xx or a timeout is first looked up in the Messages list, and a SID found adopted),
//     failed with twilio_unavailable once the attempts are spent;
//   - PUBLIC_URL = the server's own http://127.0.0.1:<port>, and Twilio not reachable yet;
//   - no Twilio configured: webhooks refused, sends say not_sent;
//   - `api-server doctor` against the fake.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { execFile } = require('node:child_process');
const twilio = require('twilio');
const { ApiServer, OTHER_USER } = require('../lib/api-server');
const { FakeTwilio, sid } = require('../lib/fake-twilio');
const { connected, subscribe, waitUntil, withTimeout, sleep } = require('../lib/clients');
const { freePort } = require('../lib/server');

const ACCOUNT_SID = sid('AC');
const AUTH_TOKEN = crypto.randomBytes(16).toString('hex');
// Deliberately not the address the server listens on: signatures must be checked against
// PUBLIC_URL, never against the Host header of the request.
const PUBLIC_URL = 'https://inbox.example.test';
const TEAM_PHONE = '+14155550100';
const OTHER_TEAM_PHONE = '+14155550199';
const CONTACT_PHONES = { 1: '+14155550111', 2: '+14155550122', 3: '+14155550133' };
const INBOUND = '/api/webhooks/twilio';
// Retries fast enough for a test: 4 attempts, 100 ms doubling up to 1 s, 2 s per request.
const SEND_SETTINGS = {
  TWILIO_SEND_ATTEMPTS: '4',
  TWILIO_RETRY_BASE_MS: '100',
  TWILIO_RETRY_MAX_MS: '1000',
  TWILIO_TIMEOUT_MS: '2000',
};
const STATUS = '/api/webhooks/twilio/status';

let fake;
let server; // Twilio configured, PUBLIC_URL = https://inbox.example.test
let plain; // no Twilio, PUBLIC_URL = its own address
let direct; // Twilio configured with PUBLIC_URL = its own address, TWILIO_API_BASE not listening yet
let offlinePort; // where `direct` looks for Twilio
let alice; // { token, user, client, contacts: {id: channel}, self }

before(async () => {
  fake = await FakeTwilio.start({ accountSid: ACCOUNT_SID, authToken: AUTH_TOKEN });
  offlinePort = await freePort();
  [server, plain, direct] = await Promise.all([
    ApiServer.start({
      env: {
        TWILIO_ACCOUNT_SID: ACCOUNT_SID,
        TWILIO_AUTH_TOKEN: AUTH_TOKEN,
        TWILIO_API_BASE: fake.base,
        PUBLIC_URL,
        ...SEND_SETTINGS,
      },
    }),
    ApiServer.start({ env: ({ base }) => ({ PUBLIC_URL: base }) }),
    ApiServer.start({
      env: ({ base }) => ({
        TWILIO_ACCOUNT_SID: ACCOUNT_SID,
        TWILIO_AUTH_TOKEN: AUTH_TOKEN,
        TWILIO_API_BASE: `http://127.0.0.1:${offlinePort}`,
        PUBLIC_URL: base,
        ...SEND_SETTINGS,
      }),
    }),
  ]);
  const { token, user } = await server.login('alice@example.com');
  // The realtime options name PUBLIC_URL's host (wss://inbox.example.test), as a frontend
  // behind that proxy would use; here pusher-js reaches the server directly.
  const client = await server.client(token, { wsHost: '127.0.0.1', wsPort: server.port, wssPort: server.port, forceTLS: false });
  await connected(client);
  const subs = await Promise.all([
    subscribe(client, 'private-contact-1'),
    subscribe(client, 'private-contact-2'),
    subscribe(client, `private-user-${user.id}`),
  ]);
  alice = { token, user, client, contacts: { 1: subs[0].channel, 2: subs[1].channel }, self: subs[2].channel };
});

after(async () => {
  await Promise.all([server && server.stop(), plain && plain.stop(), direct && direct.stop()]);
  if (fake) await fake.stop();
});

// ---------------------------------------------------------------------------- helpers

/** Twilio's inbound SMS form, as Twilio posts it. */
function inboundParams({ from, to = TEAM_PHONE, body = 'hello', messageSid = sid('SM'), media = [] }) {
  const params = {
    ToCountry: 'US',
    ToState: 'CA',
    SmsMessageSid: messageSid,
    NumMedia: String(media.length),
    ToCity: 'SAN FRANCISCO',
    FromZip: '94105',
    SmsSid: messageSid,
    FromState: 'CA',
    SmsStatus: 'received',
    FromCity: 'SAN FRANCISCO',
    Body: body,
    FromCountry: 'US',
    To: to,
    ToZip: '94105',
    NumSegments: '1',
    MessageSid: messageSid,
    AccountSid: ACCOUNT_SID,
    From: from,
    ApiVersion: '2010-04-01',
  };
  media.forEach((m, i) => {
    params[`MediaUrl${i}`] = m.url;
    params[`MediaContentType${i}`] = m.contentType;
  });
  return params;
}

/** Twilio's status callback form. */
function statusParams({ messageSid, status, errorCode, to = CONTACT_PHONES[1] }) {
  const params = {
    SmsSid: messageSid,
    SmsStatus: status,
    MessageStatus: status,
    To: to,
    MessageSid: messageSid,
    AccountSid: ACCOUNT_SID,
    From: TEAM_PHONE,
    ApiVersion: '2010-04-01',
  };
  if (errorCode !== undefined) params.ErrorCode = String(errorCode);
  return params;
}

/**
 * POSTs a Twilio webhook form to `target` (default `server`). The signature is the official
 * SDK's over `signUrl` (default PUBLIC_URL + pathAndQuery) with `token` (default AUTH_TOKEN),
 * over `signParams` (default the posted params); `signature: null` sends none, a string sends
 * that one.
 */
async function postWebhook(pathAndQuery, params, { target, signUrl, token = AUTH_TOKEN, signParams, signature } = {}) {
  const srv = target || server;
  const headers = { 'Content-Type': 'application/x-www-form-urlencoded', 'I-Twilio-Idempotency-Token': crypto.randomUUID() };
  if (signature === undefined) {
    const url = signUrl || (srv === server ? PUBLIC_URL : srv.base) + pathAndQuery;
    headers['X-Twilio-Signature'] = twilio.getExpectedTwilioSignature(token, url, signParams || params);
  } else if (signature !== null) {
    headers['X-Twilio-Signature'] = signature;
  }
  const res = await fetch(srv.base + pathAndQuery, {
    method: 'POST',
    headers,
    body: new URLSearchParams(params).toString(),
  });
  const text = await res.text();
  return { status: res.status, text, contentType: res.headers.get('content-type') || '' };
}

function assertTwiml(res) {
  assert.equal(res.status, 200, res.text);
  assert.match(res.contentType, /^text\/xml/, `content-type ${res.contentType}`);
  assert.equal(res.text.replace(/^<\?xml[^>]*\?>\s*/, '').trim(), '<Response></Response>');
}

async function get(srv, urlPath, token) {
  const res = await srv.request('GET', urlPath, { token });
  assert.equal(res.status, 200, `GET ${urlPath}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

async function contactsOf(srv, token) {
  return (await get(srv, '/api/contacts', token)).contacts;
}

async function messagesOf(srv, token, contactId) {
  return (await get(srv, `/api/contacts/${contactId}/messages?limit=100`, token)).messages;
}

/** Resolves the data of the first `event` on `channel` for which `pred(data)` holds. */
function waitEvent(channel, event, pred, ms = 5000) {
  let cb;
  const found = new Promise((resolve) => {
    cb = (data) => {
      if (pred(data)) resolve(data);
    };
    channel.bind(event, cb);
  });
  return withTimeout(found, ms, `${event} matching ${pred}`).finally(() => channel.unbind(event, cb));
}

/** Polls alice's view of one message until `pred(message)` holds; answers it. */
function waitMessage(contactId, id, pred, what, { ms = 6000, srv = server, token = alice.token } = {}) {
  return waitUntil(
    async () => {
      const found = (await messagesOf(srv, token, contactId)).find((m) => String(m.id) === String(id));
      return found && pred(found) ? found : null;
    },
    ms,
    what
  ).catch(async (e) => {
    const now = (await messagesOf(srv, token, contactId)).find((m) => String(m.id) === String(id));
    throw new Error(`${e.message}; message is now ${JSON.stringify(now)}`);
  });
}

/** Alice sends `body` to contact `contactId`; answers the 201 message. */
async function send(contactId, body, srv = server, token = alice.token) {
  const res = await srv.request('POST', '/api/messages/send', { token, body: { contactId: String(contactId), body } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.message;
}

function unique(prefix) {
  return `${prefix} ${crypto.randomBytes(4).toString('hex')}`;
}

/** A phone number no contact has yet. */
let nextNumber = 1000;
function freshNumber() {
  nextNumber += 1;
  return `+1415556${String(nextNumber).padStart(4, '0')}`;
}

// ------------------------------------------------------------------------------ inbound

test('inbound from a known contact: TwiML, stored as received, message:created, unread 1, then read → 0', async () => {
  const body = unique('Hi there & welcome, ünïcode 👋 +1=2');
  const messageSid = sid('SM');
  const created = waitEvent(alice.contacts[1], 'message:created', (d) => d && d.message && d.message.twilioSid === messageSid);
  const unread = waitEvent(
    alice.self,
    'contact:updated',
    (d) => d && d.contact && String(d.contact.id) === '1' && d.contact.lastMessage && d.contact.lastMessage.body === body
  );

  const res = await postWebhook(INBOUND, inboundParams({ from: CONTACT_PHONES[1], body, messageSid }));
  assertTwiml(res);

  const messages = await messagesOf(server, alice.token, 1);
  const stored = messages.find((m) => m.twilioSid === messageSid);
  assert.ok(stored, `not in GET /api/contacts/1/messages: ${JSON.stringify(messages)}`);
  assert.equal(stored.direction, 'inbound');
  assert.equal(stored.status, 'received');
  assert.equal(stored.body, body);
  assert.equal(String(stored.contactId), '1');
  assert.deepEqual(stored.media, []);
  assert.equal(stored.readAt, null);

  const event = await created;
  assert.equal(String(event.message.id), String(stored.id));
  assert.equal(event.message.direction, 'inbound');
  assert.equal(event.message.body, body);

  const update = await unread;
  assert.equal(update.contact.unreadCount, 1, JSON.stringify(update));
  assert.equal(update.contact.phone, CONTACT_PHONES[1]);

  const cleared = waitEvent(alice.self, 'contact:updated', (d) => d && d.contact && String(d.contact.id) === '1' && d.contact.unreadCount === 0);
  const read = await server.request('POST', `/api/messages/${stored.id}/read`, { token: alice.token });
  assert.equal(read.status, 200, JSON.stringify(read.body));
  assert.ok(read.body.message.readAt);
  const after = await cleared;
  assert.equal(after.contact.unreadCount, 0);
  const listed = (await contactsOf(server, alice.token)).find((c) => String(c.id) === '1');
  assert.equal(listed.unreadCount, 0);
});

test('inbound from an unknown number: a new contact named by its number', async () => {
  const from = freshNumber();
  const body = unique('who is this');
  const res = await postWebhook(INBOUND, inboundParams({ from, body }));
  assertTwiml(res);
  const contact = (await contactsOf(server, alice.token)).find((c) => c.phone === from);
  assert.ok(contact, `no contact with phone ${from}`);
  assert.equal(contact.name, from);
  assert.equal(contact.unreadCount, 1);
  assert.equal(contact.lastMessage && contact.lastMessage.body, body);
  const messages = await messagesOf(server, alice.token, contact.id);
  assert.equal(messages.length, 1);
  assert.equal(messages[0].direction, 'inbound');
  assert.equal(messages[0].body, body);
});

test('signature: forged, missing, other token, altered body, Host URL → 403 and nothing stored; default port and query accepted', async () => {
  const countBefore = (await messagesOf(server, alice.token, 3)).length;
  const contactsBefore = (await contactsOf(server, alice.token)).length;
  const unknown = freshNumber();

  const cases = {
    forged: [inboundParams({ from: CONTACT_PHONES[3] }), { signature: crypto.randomBytes(20).toString('base64') }],
    missing: [inboundParams({ from: CONTACT_PHONES[3] }), { signature: null }],
    empty: [inboundParams({ from: CONTACT_PHONES[3] }), { signature: '' }],
    'other token': [inboundParams({ from: unknown }), { token: crypto.randomBytes(16).toString('hex') }],
    'signed for the Host, not PUBLIC_URL': [inboundParams({ from: unknown }), { signUrl: server.base + INBOUND }],
    'signed for another path': [inboundParams({ from: unknown }), { signUrl: PUBLIC_URL + STATUS }],
  };
  const signed = inboundParams({ from: CONTACT_PHONES[3], body: 'pay 10 dollars' });
  cases['altered body'] = [{ ...signed, Body: 'pay 1000 dollars' }, { signParams: signed }];
  const extra = inboundParams({ from: unknown });
  cases['added field'] = [{ ...extra, MediaUrl0: 'https://evil.example/x.png' }, { signParams: extra }];

  for (const [name, [params, options]] of Object.entries(cases)) {
    const res = await postWebhook(INBOUND, params, options);
    assert.equal(res.status, 403, `${name}: ${res.status} ${res.text}`);
    assert.doesNotMatch(res.text, /<Response>/, name);
  }
  assert.equal((await messagesOf(server, alice.token, 3)).length, countBefore, 'a refused webhook stored a message');
  const contactsAfter = await contactsOf(server, alice.token);
  assert.equal(contactsAfter.length, contactsBefore, 'a refused webhook created a contact');
  assert.ok(!contactsAfter.some((c) => c.phone === unknown));

  // Twilio's SDKs accept the URL with the default port made explicit...
  const withPort = inboundParams({ from: CONTACT_PHONES[3], body: unique('explicit port') });
  assertTwiml(await postWebhook(INBOUND, withPort, { signUrl: 'https://inbox.example.test:443' + INBOUND }));
  // ...and a webhook URL with a query string is signed with it.
  const query = '?team=demo&note=a%20b';
  const withQuery = inboundParams({ from: CONTACT_PHONES[3], body: unique('with query') });
  assertTwiml(await postWebhook(INBOUND + query, withQuery));

  const bodies = (await messagesOf(server, alice.token, 3)).map((m) => m.body);
  assert.ok(bodies.includes(withPort.Body), `default-port signature not stored: ${JSON.stringify(bodies)}`);
  assert.ok(bodies.includes(withQuery.Body), `query-string webhook not stored: ${JSON.stringify(bodies)}`);
  assert.equal(bodies.length, countBefore + 2);
});

test('a MessageSid posted 20 times at once: all 200, one message, one message:created', async () => {
  const messageSid = sid('SM');
  const body = unique('retried by Twilio');
  const createdEvents = [];
  const cb = (d) => {
    if (d && d.message && (d.message.twilioSid === messageSid || d.message.body === body)) createdEvents.push(d);
  };
  alice.contacts[2].bind('message:created', cb);
  try {
    const params = inboundParams({ from: CONTACT_PHONES[2], body, messageSid });
    const answers = await Promise.all(Array.from({ length: 20 }, () => postWebhook(INBOUND, params)));
    assert.deepEqual(
      answers.map((a) => a.status),
      Array(20).fill(200),
      JSON.stringify(answers.filter((a) => a.status !== 200))
    );
    for (const a of answers) assertTwiml(a);
    const stored = (await messagesOf(server, alice.token, 2)).filter((m) => m.twilioSid === messageSid);
    assert.equal(stored.length, 1, JSON.stringify(stored));
    await waitUntil(() => createdEvents.length >= 1, 5000, 'message:created');
    await sleep(500);
    assert.equal(createdEvents.length, 1, JSON.stringify(createdEvents));
    const contact = (await contactsOf(server, alice.token)).find((c) => String(c.id) === '2');
    assert.equal(contact.unreadCount, 1);
  } finally {
    alice.contacts[2].unbind('message:created', cb);
  }
});

test("To picks the team: another team's number stores in that team; a number no team has stores nothing", async () => {
  const eve = await server.login(OTHER_USER.email);
  const from = freshNumber();
  const body = unique('for the other team');
  const messageSid = sid('SM');
  assertTwiml(await postWebhook(INBOUND, inboundParams({ from, to: OTHER_TEAM_PHONE, body, messageSid })));

  const eveContact = (await contactsOf(server, eve.token)).find((c) => c.phone === from);
  assert.ok(eveContact, 'eve does not see the new contact');
  const eveMessages = await messagesOf(server, eve.token, eveContact.id);
  assert.deepEqual(eveMessages.map((m) => [m.twilioSid, m.body, m.direction]), [[messageSid, body, 'inbound']]);
  assert.ok(!(await contactsOf(server, alice.token)).some((c) => c.phone === from), 'alice sees the other team\'s contact');
  const denied = await server.request('GET', `/api/contacts/${eveContact.id}/messages`, { token: alice.token });
  assert.equal(denied.status, 404);

  // A number no team has: 200 (so Twilio stops retrying), nothing stored.
  const stray = freshNumber();
  const straySid = sid('SM');
  const strayBody = unique('to nobody');
  const [aliceBefore, eveBefore] = await Promise.all([contactsOf(server, alice.token), contactsOf(server, eve.token)]);
  assertTwiml(await postWebhook(INBOUND, inboundParams({ from: stray, to: '+14155550177', body: strayBody, messageSid: straySid })));
  const [aliceAfter, eveAfter] = await Promise.all([contactsOf(server, alice.token), contactsOf(server, eve.token)]);
  assert.equal(aliceAfter.length, aliceBefore.length);
  assert.equal(eveAfter.length, eveBefore.length);
  assert.ok(![...aliceAfter, ...eveAfter].some((c) => c.phone === stray));
  // Not even its MessageSid was remembered: posted to a real number later, it is stored.
  assertTwiml(await postWebhook(INBOUND, inboundParams({ from: stray, to: TEAM_PHONE, body: strayBody, messageSid: straySid })));
  const nowKnown = (await contactsOf(server, alice.token)).find((c) => c.phone === stray);
  assert.ok(nowKnown, 'the MessageSid of the dropped webhook was remembered');
  assert.deepEqual((await messagesOf(server, alice.token, nowKnown.id)).map((m) => m.twilioSid), [straySid]);
});

test('media: NumMedia=2 with MediaUrl{N}/MediaContentType{N} → message.media', async () => {
  const from = freshNumber();
  const media = [
    { url: `https://api.twilio.com/2010-04-01/Accounts/${ACCOUNT_SID}/Messages/${sid('MM')}/Media/${sid('ME')}`, contentType: 'image/jpeg' },
    { url: `https://api.twilio.com/2010-04-01/Accounts/${ACCOUNT_SID}/Messages/${sid('MM')}/Media/${sid('ME')}`, contentType: 'video/mp4' },
  ];
  assertTwiml(await postWebhook(INBOUND, inboundParams({ from, body: '', media })));
  const contact = (await contactsOf(server, alice.token)).find((c) => c.phone === from);
  assert.ok(contact);
  const [message] = await messagesOf(server, alice.token, contact.id);
  assert.deepEqual(message.media, media);
  assert.equal(message.body, '');
});

// ----------------------------------------------------------------------------- outbound

test('outbound: queued, handed to Twilio with auth and StatusCallback, SID stored; status callbacks only move forwards', async () => {
  fake.succeed();
  const body = unique('outbound hello');
  const statusEvents = [];
  const onStatus = (d) => statusEvents.push(d);
  alice.contacts[1].bind('message:status', onStatus);
  try {
    const message = await send(1, body);
    assert.equal(message.status, 'queued');
    assert.equal(message.direction, 'outbound');
    assert.equal(message.errorCode, null);
    assert.equal(String(message.sentBy), String(alice.user.id));

    const [request] = (await fake.waitFor((rs) => rs.some((r) => r.kind === 'message' && r.form.Body === body), 5000, 'the send'))
      .filter((r) => r.kind === 'message' && r.form.Body === body);
    assert.equal(request.method, 'POST');
    assert.equal(request.path, `/2010-04-01/Accounts/${ACCOUNT_SID}/Messages.json`);
    assert.match(request.contentType, /^application\/x-www-form-urlencoded/);
    assert.deepEqual(request.auth, { user: ACCOUNT_SID, pass: AUTH_TOKEN });
    assert.equal(request.authorized, true);
    assert.deepEqual(request.form, {
      To: CONTACT_PHONES[1],
      From: TEAM_PHONE,
      Body: body,
      StatusCallback: `${PUBLIC_URL}${STATUS}`,
    });
    assert.equal(request.answer.status, 201);
    const twilioSid = request.answer.body.sid;
    assert.match(twilioSid, /^SM[0-9a-f]{32}$/);

    const stored = await waitMessage(1, message.id, (m) => m.twilioSid === twilioSid, 'twilioSid stored');
    assert.equal(stored.status, 'queued');
    await waitUntil(() => statusEvents.some((d) => d.message.twilioSid === twilioSid), 5000, 'message:status with the SID');

    // Twilio calls back at the StatusCallback it was given, signed for that URL.
    const callback = (status, extra = {}) =>
      postWebhook(STATUS, statusParams({ messageSid: twilioSid, status, ...extra }), { signUrl: request.form.StatusCallback });
    const eventsFor = (status) => statusEvents.filter((d) => d.message.twilioSid === twilioSid && d.message.status === status);

    const forged = await postWebhook(STATUS, statusParams({ messageSid: twilioSid, status: 'failed' }), { signature: 'bm9wZQ==' });
    assert.equal(forged.status, 403, forged.text);

    let res = await callback('sent');
    assert.equal(res.status, 204, res.text);
    assert.equal((await waitMessage(1, message.id, (m) => m.status === 'sent', 'sent')).status, 'sent');
    await waitUntil(() => eventsFor('sent').length === 1, 5000, 'message:status sent');

    res = await callback('delivered');
    assert.equal(res.status, 204, res.text);
    await waitMessage(1, message.id, (m) => m.status === 'delivered', 'delivered');
    await waitUntil(() => eventsFor('delivered').length === 1, 5000, 'message:status delivered');

    // A late `sent` (callbacks race): accepted, ignored.
    const countBefore = statusEvents.filter((d) => d.message.twilioSid === twilioSid).length;
    res = await callback('sent');
    assert.equal(res.status, 204, res.text);
    await sleep(500);
    const after = (await messagesOf(server, alice.token, 1)).find((m) => String(m.id) === String(message.id));
    assert.equal(after.status, 'delivered');
    assert.equal(statusEvents.filter((d) => d.message.twilioSid === twilioSid).length, countBefore, 'a late sent published message:status');

    // Another message ends undelivered with Twilio's error code.
    const second = await send(1, unique('never arrives'));
    const secondSid = (await waitMessage(1, second.id, (m) => !!m.twilioSid, 'second twilioSid')).twilioSid;
    const undelivered = waitEvent(alice.contacts[1], 'message:status', (d) => d.message.twilioSid === secondSid && d.message.status === 'undelivered');
    res = await postWebhook(STATUS, statusParams({ messageSid: secondSid, status: 'undelivered', errorCode: 30003 }), { signUrl: request.form.StatusCallback });
    assert.equal(res.status, 204, res.text);
    const final = await waitMessage(1, second.id, (m) => m.status === 'undelivered', 'undelivered');
    assert.equal(final.errorCode, '30003');
    assert.equal((await undelivered).message.errorCode, '30003');
  } finally {
    alice.contacts[1].unbind('message:status', onStatus);
  }
});

test("outbound: Twilio's refusal (21211) → failed; 503 twice then 201 → one SMS; 500 → looked up before every new request, failed once the attempts are spent", async () => {
  const requestsFor = (body) => fake.messageRequests((r) => r.form.Body === body);
  try {
    // Refused: 400 {"code":21211,...}
    fake.refuse(21211, "Invalid 'To' Phone Number");
    const refusedBody = unique('refused');
    const failedEvent = waitEvent(alice.contacts[1], 'message:status', (d) => d.message.body === refusedBody && d.message.status === 'failed');
    const refused = await send(1, refusedBody);
    assert.equal(refused.status, 'queued');
    const event = await failedEvent;
    assert.equal(event.message.errorCode, '21211');
    const failed = await waitMessage(1, refused.id, (m) => m.status === 'failed', 'failed');
    assert.equal(failed.errorCode, '21211');
    assert.equal(failed.twilioSid, null);
    assert.equal(requestsFor(refusedBody).length, 1, 'a refusal is not retried');

    // 503 twice, then accepted: retried, exactly one SMS.
    fake.unavailable(2);
    const retriedBody = unique('retried');
    const retried = await send(1, retriedBody);
    const stored = await waitMessage(1, retried.id, (m) => !!m.twilioSid, 'twilioSid after retries', { ms: 8000 });
    const seen = requestsFor(retriedBody);
    assert.deepEqual(seen.map((r) => r.answer.status), [503, 503, 201]);
    assert.equal(stored.twilioSid, seen[2].answer.body.sid);
    assert.equal(stored.status, 'queued');
    assert.equal(stored.errorCode, null);
    assert.ok(seen.every((r) => r.authorized));

    // 429 (rate limited) proves nothing was sent either.
    fake.unavailable(1, 429);
    const limitedBody = unique('rate limited');
    const limited = await send(1, limitedBody);
    const limitedStored = await waitMessage(1, limited.id, (m) => !!m.twilioSid, 'twilioSid after a 429', { ms: 8000 });
    assert.deepEqual(requestsFor(limitedBody).map((r) => r.answer.status), [429, 201]);
    assert.equal(limitedStored.twilioSid, requestsFor(limitedBody)[1].answer.body.sid);

    // 500 may have sent the SMS: before each new request the Messages list is read; this
    // Twilio never has it, so after the 4 attempts (TWILIO_SEND_ATTEMPTS) the message fails.
    fake.serverError();
    const errorBody = unique('server error');
    const errored = await send(1, errorBody);
    const gaveUp = await waitMessage(1, errored.id, (m) => m.status === 'failed', 'failed after 500s', { ms: 15000 });
    assert.equal(gaveUp.errorCode, 'twilio_unavailable');
    assert.equal(gaveUp.twilioSid, null);
    const posts = requestsFor(errorBody);
    assert.deepEqual(posts.map((r) => r.answer.status), [500, 500, 500, 500]);
    // Every request after the first follows a lookup, filtered as Twilio documents.
    const firstPost = fake.requests.indexOf(posts[0]);
    for (const post of posts.slice(1)) {
      const before = fake.requests.slice(firstPost, fake.requests.indexOf(post));
      assert.ok(before.some((r) => r.kind === 'lookup' && r.query.To === CONTACT_PHONES[1] && r.query.From === TEAM_PHONE), `a 500 was sent again without a lookup: ${JSON.stringify(before)}`);
    }
    assert.ok(fake.lookups((r) => r.query.To === CONTACT_PHONES[1] && /^\d{4}-\d{2}-\d{2}$/.test(r.query['DateSent>'] || '')).length > 0, 'a lookup with DateSent>=');
    assert.ok(fake.lookups().every((r) => r.authorized));
  } finally {
    fake.succeed();
  }
});

test('Idempotency-Key: a retried send hands the message to Twilio once', async () => {
  fake.succeed();
  const body = unique('sent once');
  const key = crypto.randomUUID();
  const post = () =>
    server.request('POST', '/api/messages/send', {
      token: alice.token,
      body: { contactId: '1', body },
      headers: { 'Idempotency-Key': key },
    });
  // Retries racing each other, then one more after Twilio answered.
  const racing = await Promise.all(Array.from({ length: 5 }, post));
  for (const res of racing) assert.ok([200, 201].includes(res.status), JSON.stringify(res.body));
  const id = String(racing[0].body.message.id);
  assert.deepEqual(racing.map((r) => String(r.body.message.id)), Array(5).fill(id));
  const stored = await waitMessage(1, id, (m) => !!m.twilioSid, 'twilioSid');
  const again = await post();
  assert.ok([200, 201].includes(again.status), JSON.stringify(again.body));
  assert.equal(String(again.body.message.id), id);
  await sleep(300);
  const requests = fake.messageRequests((r) => r.form.Body === body);
  assert.equal(requests.length, 1, `Twilio got the retried send again: ${JSON.stringify(requests.map((r) => r.form))}`);
  assert.equal(stored.twilioSid, requests[0].answer.body.sid);
});

test('an answer lost to the timeout: the message is looked up, its SID adopted, never sent twice', async () => {
  const twilioSid = sid('SM');
  // Accepted (and listed) at once, answered only after the 2 s TWILIO_TIMEOUT_MS.
  fake.succeed({ delayMs: 4000, sid: twilioSid });
  const body = unique('answered too late');
  try {
    const message = await send(1, body);
    const stored = await waitMessage(1, message.id, (m) => !!m.twilioSid, 'the adopted SID', { ms: 15000 });
    assert.equal(stored.twilioSid, twilioSid);
    assert.equal(fake.arrivals.filter((r) => r.kind === 'message' && r.form.Body === body).length, 1, 'sent twice');
    assert.ok(fake.lookups((r) => r.query.To === CONTACT_PHONES[1]).length > 0);
  } finally {
    fake.succeed();
  }
});

test(
  'a status callback that arrives before Twilio\'s API answer is not lost',
  async () => {
    const twilioSid = sid('SM');
    fake.succeed({ delayMs: 700, sid: twilioSid });
    const body = unique('fast callback');
    try {
      const message = await send(1, body);
      const [request] = (await fake.waitForArrival((rs) => rs.some((r) => r.form.Body === body), 5000, 'the send'))
        .filter((r) => r.form.Body === body);
      // Twilio already sent the SMS and calls back while its API answer is still on its way.
      const res = await postWebhook(STATUS, statusParams({ messageSid: twilioSid, status: 'sent' }), { signUrl: request.form.StatusCallback });
      assert.equal(res.status, 204, res.text);
      const stored = await waitMessage(1, message.id, (m) => m.twilioSid === twilioSid, 'the SID from the delayed answer');
      assert.equal(stored.status, 'sent', `the early "sent" callback was lost: ${JSON.stringify(stored)}`);
    } finally {
      fake.succeed();
    }
  }
);

test('PUBLIC_URL = http://127.0.0.1:<port>: signed for it; Twilio not reachable at first → retried', async () => {
  const { token } = await direct.login('alice@example.com');
  const body = unique('signed for the own address');
  // Signed for http://127.0.0.1:<port>/api/webhooks/twilio (a non-default port)...
  assertTwiml(await postWebhook(INBOUND, inboundParams({ from: CONTACT_PHONES[2], body }), { target: direct }));
  // ...not for another public URL.
  const other = await postWebhook(INBOUND, inboundParams({ from: CONTACT_PHONES[2] }), { target: direct, signUrl: PUBLIC_URL + INBOUND });
  assert.equal(other.status, 403, other.text);
  assert.deepEqual((await messagesOf(direct, token, 2)).map((m) => m.body), [body]);

  // Nothing listens at TWILIO_API_BASE when the send starts; Twilio comes up shortly after.
  let late;
  try {
    const sendBody = unique('after no connection');
    const message = await send(3, sendBody, direct, token);
    assert.equal(message.status, 'queued');
    await sleep(150);
    late = await FakeTwilio.start({ accountSid: ACCOUNT_SID, authToken: AUTH_TOKEN }, { port: offlinePort });
    const stored = await waitMessage(3, message.id, (m) => !!m.twilioSid || m.status !== 'queued', 'the retried send', {
      srv: direct,
      token,
      ms: 8000,
    });
    const requests = late.messageRequests();
    assert.equal(requests.length, 1, JSON.stringify(requests));
    assert.equal(stored.status, 'queued', JSON.stringify(stored));
    assert.equal(stored.twilioSid, requests[0].answer.body.sid);
    assert.deepEqual(requests[0].form, {
      To: CONTACT_PHONES[3],
      From: TEAM_PHONE,
      Body: sendBody,
      StatusCallback: direct.base + STATUS,
    });
  } finally {
    if (late) await late.stop();
  }
});

// -------------------------------------------------------------------- without Twilio

test('without Twilio configured: webhooks → 403, sends are not_sent / twilio_not_configured', async () => {
  const { token } = await plain.login('alice@example.com');
  const before = await contactsOf(plain, token);
  for (const options of [{}, { signature: null }]) {
    const res = await postWebhook(INBOUND, inboundParams({ from: CONTACT_PHONES[1], body: 'anyone?' }), { target: plain, ...options });
    assert.equal(res.status, 403, res.text);
  }
  const status = await postWebhook(STATUS, statusParams({ messageSid: sid('SM'), status: 'delivered' }), { target: plain });
  assert.equal(status.status, 403, status.text);
  assert.equal((await messagesOf(plain, token, 1)).length, 0);
  assert.equal((await contactsOf(plain, token)).length, before.length);

  const body = unique('goes nowhere');
  const message = await send(1, body, plain, token);
  assert.equal(message.status, 'not_sent');
  assert.equal(message.errorCode, 'twilio_not_configured');
  await sleep(200);
  const [stored] = await messagesOf(plain, token, 1);
  assert.equal(stored.status, 'not_sent');
  assert.equal(stored.errorCode, 'twilio_not_configured');
  assert.equal(stored.twilioSid, null);
  assert.equal(fake.messageRequests((r) => r.form.Body === body).length, 0);
});

// ----------------------------------------------------------------------------- doctor

function doctor(env) {
  return new Promise((resolve) => {
    execFile(server.bin, ['doctor'], { env, cwd: server.dir, timeout: 20000 }, (err, stdout, stderr) => {
      resolve({ code: err ? err.code : 0, output: stdout + stderr });
    });
  });
}

test('api-server doctor: twilio ok against the fake; refused credentials are named', async () => {
  const before = fake.requests.filter((r) => r.kind === 'account').length;
  const good = await doctor(server.env);
  assert.equal(good.code, 0, good.output);
  assert.match(good.output, /ok\s+twilio/i, good.output);
  const accountCalls = fake.requests.filter((r) => r.kind === 'account');
  assert.equal(accountCalls.length, before + 1);
  const call = accountCalls[accountCalls.length - 1];
  assert.equal(call.method, 'GET');
  assert.equal(call.path, `/2010-04-01/Accounts/${ACCOUNT_SID}.json`);
  assert.equal(call.authorized, true);

  const bad = await doctor({ ...server.env, TWILIO_AUTH_TOKEN: 'not-the-token' });
  assert.notEqual(bad.code, 0, bad.output);
  assert.match(bad.output, /FAIL\s+twilio/i, bad.output);
  assert.match(bad.output, /TWILIO_AUTH_TOKEN/, bad.output);
});
