'use strict';
// The seed's "two browser windows" test, automated: the example inbox page that api-server
// serves at `/`, in a real Chromium (lib/browser.js), with Alice and Bob in two browser
// contexts (two cookie jars, as two people on two machines), each logged in through the
// page's own form. Everything the page shows must arrive through pusher-js and the HTTP
// API: no test ever reloads a page.
//
// The server runs with the embedded realtime server, pusher-js served from this package's
// pinned copy (PUSHER_JS_PATH), and Twilio pointed at the local fake (lib/fake-twilio.js):
// outbound sends reach the fake, status callbacks and inbound SMS are POSTed signed with
// the official `twilio` SDK, exactly as Twilio signs them. One inbound SMS goes through
// `api-server sms receive` instead, the way an operator simulates one without Twilio.
//
// Steps run in order and build on each other (one server, one pair of windows). A failed
// step writes a screenshot of both windows and prints what the pages and the server said.
// Screenshots go to test-output/browser/ (git-ignored); their paths are printed.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const twilio = require('twilio');
const { ApiServer, PASSWORD } = require('../lib/api-server');
const { FakeTwilio, sid } = require('../lib/fake-twilio');
const { SCREENSHOT_DIR, chromiumMissing, launchChromium, until, watchPage, logExcerpt, screenshot } = require('../lib/browser');

// A machine without Chromium skips every step, saying how to install it.
const SKIP = chromiumMissing();
// Every wait for the page is generous: 2 CPUs running the other test files in parallel
// against debug builds are slow; a working page answers in well under a second.
const WAIT = 10000;
const STEP_TIMEOUT = 40000;

const ACCOUNT_SID = sid('AC');
const AUTH_TOKEN = crypto.randomBytes(16).toString('hex');
const TEAM_PHONE = '+14155550100';
const CONTACT_PHONES = { 1: '+14155550111', 2: '+14155550122', 3: '+14155550133' };
const INBOUND = '/api/webhooks/twilio';
const STATUS = '/api/webhooks/twilio/status';

// The contract's selectors (docs: "The example inbox page"). Ids are opaque strings, so
// they are always quoted.
const sel = {
  loginForm: 'form[data-testid=login]',
  loginError: '[data-testid=login-error]',
  connection: '[data-testid=connection]',
  me: '[data-testid=me]',
  logout: 'button[data-testid=logout]',
  contact: (id) => `[data-testid=contact][data-contact-id="${id}"]`,
  unread: (id) => `[data-testid=contact][data-contact-id="${id}"] [data-testid=unread]`,
  thread: (id) => `[data-testid=thread][data-contact-id="${id}"]`,
  messages: (contactId) => `[data-testid=thread][data-contact-id="${contactId}"] [data-testid=message]`,
  message: (contactId, id) => `[data-testid=thread][data-contact-id="${contactId}"] [data-testid=message][data-message-id="${id}"]`,
  composer: 'textarea[data-testid=composer]',
  send: 'button[data-testid=send]',
  viewer: '[data-testid=viewer]',
  typing: '[data-testid=typing]',
  contacts: '[data-testid=contact]',
  moreContacts: '[data-testid=more-contacts]',
  teammateOnline: '[data-testid=teammates-online] [data-testid=teammate-online]',
};

let fake;
let server;
let browser;
let alice; // { label, email, name, token, context, page, watch, open }
let bob;
const screenshots = [];

before(async () => {
  if (SKIP) return;
  fs.rmSync(SCREENSHOT_DIR, { recursive: true, force: true }); // only this run's pictures
  fake = await FakeTwilio.start({ accountSid: ACCOUNT_SID, authToken: AUTH_TOKEN });
  server = await ApiServer.start({
    env: ({ base }) => ({
      TWILIO_ACCOUNT_SID: ACCOUNT_SID,
      TWILIO_AUTH_TOKEN: AUTH_TOKEN,
      TWILIO_API_BASE: fake.base,
      // Webhooks are signed for the address the test reaches, so no proxy is needed.
      PUBLIC_URL: base,
      // The page loads nothing from the internet: this is the pusher-js it gets.
      PUSHER_JS_PATH: require.resolve('pusher-js/dist/web/pusher.min.js'),
      // Enough to explain a failure (printed only then).
      RUST_LOG: process.env.RUST_LOG || 'info',
    }),
  });
  browser = await launchChromium();
  [alice, bob] = await Promise.all([person('alice', 'alice@example.com'), person('bob', 'bob@example.com')]);
});

after(async () => {
  // Each cleanup runs even when another one throws: no browser or server outlives the file.
  const attempts = [
    () => browser && browser.close(),
    () => server && server.stop(),
    () => fake && fake.stop(),
  ];
  for (const attempt of attempts) {
    try {
      await attempt();
    } catch (e) {
      console.error(`cleanup: ${e.message}`);
    }
  }
  if (screenshots.length) console.log(`screenshots (${screenshots.length}):\n  ${screenshots.join('\n  ')}`);
});

// ---------------------------------------------------------------------------- helpers

/** One person in their own browser context. The name is the API's, not a guess. */
async function person(label, email) {
  const { token, user } = await server.login(email);
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  return { label, email, name: user.name, id: user.id, token, context, page, watch: watchPage(page, label), open: true };
}

/**
 * One step of the scenario. On failure: a screenshot of each open window, then the
 * pages' console errors and the server's last log lines as test diagnostics.
 */
function step(name, fn) {
  test(name, { skip: SKIP || false, timeout: STEP_TIMEOUT }, async (t) => {
    try {
      await fn(t);
    } catch (e) {
      try {
        await shootBoth(t, `failed-${name.split(' ')[0].replace(/\W/g, '')}`);
      } catch (shotError) {
        t.diagnostic(`no failure screenshot: ${shotError.message}`);
      }
      for (const who of [alice, bob]) {
        if (!who) continue;
        for (const line of who.watch.problems()) t.diagnostic(line);
      }
      if (server) {
        const { problems, tail } = logExcerpt(server.logs());
        t.diagnostic(`api-server warnings and errors (${problems.length}):`);
        for (const line of problems) t.diagnostic(`  ${line}`);
        t.diagnostic(`api-server, last ${tail.length} log lines:`);
        for (const line of tail) t.diagnostic(`  ${line}`);
      }
      throw e;
    }
  });
}

/** A full-page screenshot of each window still open; their paths become diagnostics. */
async function shootBoth(t, name) {
  for (const who of [alice, bob]) {
    if (!who || !who.open) continue;
    const file = await screenshot(who.page, `${name}-${who.label}`);
    screenshots.push(file);
    t.diagnostic(`screenshot: ${file}`);
  }
}

function unique(prefix) {
  return `${prefix} ${crypto.randomBytes(4).toString('hex')}`;
}

/** POSTs a Twilio webhook form, signed by the official SDK for PUBLIC_URL + path. */
async function postWebhook(urlPath, params) {
  const res = await fetch(server.base + urlPath, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/x-www-form-urlencoded',
      'X-Twilio-Signature': twilio.getExpectedTwilioSignature(AUTH_TOKEN, server.base + urlPath, params),
    },
    body: new URLSearchParams(params).toString(),
  });
  return { status: res.status, text: await res.text() };
}

/** An inbound SMS from `from`, through the signed webhook, as Twilio posts it. */
async function inboundWebhook(from, body) {
  const messageSid = sid('SM');
  const res = await postWebhook(INBOUND, {
    ToCountry: 'US',
    SmsMessageSid: messageSid,
    NumMedia: '0',
    SmsSid: messageSid,
    SmsStatus: 'received',
    Body: body,
    To: TEAM_PHONE,
    NumSegments: '1',
    MessageSid: messageSid,
    AccountSid: ACCOUNT_SID,
    From: from,
    ApiVersion: '2010-04-01',
  });
  assert.equal(res.status, 200, `inbound webhook answered ${res.status}: ${res.text}`);
}

/** A signed status callback at the StatusCallback URL the server gave Twilio. */
async function statusCallback(url, messageSid, status) {
  const urlPath = new URL(url).pathname;
  assert.equal(urlPath, STATUS, `StatusCallback ${url}`);
  const res = await postWebhook(STATUS, {
    SmsSid: messageSid,
    SmsStatus: status,
    MessageStatus: status,
    To: CONTACT_PHONES[1],
    MessageSid: messageSid,
    AccountSid: ACCOUNT_SID,
    From: TEAM_PHONE,
    ApiVersion: '2010-04-01',
  });
  assert.equal(res.status, 204, `status callback ${status} answered ${res.status}: ${res.text}`);
}

/** The id of the stored message of `contactId` with `body` (through the API, as Alice). */
function storedMessageId(contactId, body) {
  return until(
    async () => {
      const res = await server.request('GET', `/api/contacts/${contactId}/messages?limit=100`, { token: alice.token });
      const found = res.status === 200 && res.body.messages.find((m) => m.body === body);
      return found ? String(found.id) : null;
    },
    { timeout: WAIT, what: `a stored message "${body}" of contact ${contactId}` }
  );
}

/** What the open thread of `contactId` shows, message by message. */
function threadOf(who, contactId) {
  return who.page.locator(sel.messages(contactId)).evaluateAll((items) =>
    items.map((li) => {
      const body = li.querySelector('[data-testid=message-body]');
      return {
        id: li.dataset.messageId,
        status: li.dataset.status,
        read: li.dataset.read,
        body: body ? body.textContent : null,
        markRead: Boolean(li.querySelector('button[data-testid=mark-read]')),
      };
    })
  );
}

/** Waits until message `id` in `who`'s open thread of `contactId` satisfies `pred`; answers it. */
function waitMessage(who, contactId, id, pred, what) {
  return until(
    async () => {
      const found = (await threadOf(who, contactId)).find((m) => m.id === String(id));
      return found && pred(found) ? found : null;
    },
    {
      timeout: WAIT,
      what: `${who.label}: message ${id} in the thread of contact ${contactId} ${what}`,
      seen: async () => `the thread shows ${JSON.stringify(await threadOf(who, contactId))}`,
    }
  );
}

/** The ids of the messages in `who`'s open thread of `contactId` whose text is `body`. */
async function idsWithBody(who, contactId, body) {
  return (await threadOf(who, contactId)).filter((m) => m.body === body).map((m) => m.id);
}

/** The unread count a contact shows in `who`'s list. */
async function unreadOf(who, contactId) {
  const text = (await who.page.locator(sel.unread(contactId)).textContent({ timeout: 1000 })).trim();
  assert.match(text, /^\d+$/, `${who.label}: unread of contact ${contactId} is "${text}"`);
  return Number(text);
}

function waitUnread(who, contactId, expected) {
  return until(async () => (await unreadOf(who, contactId)) === expected, {
    timeout: WAIT,
    what: `${who.label}: unread count of contact ${contactId} to be ${expected}`,
    seen: async () => `it shows ${await unreadOf(who, contactId)}`,
  });
}

async function connectionOf(who) {
  const node = who.page.locator(sel.connection);
  return { state: await node.getAttribute('data-state', { timeout: 1000 }), text: (await node.textContent()).trim() };
}

function waitConnection(who, state) {
  return until(async () => (await connectionOf(who)).state === state, {
    timeout: WAIT,
    what: `${who.label}: [data-testid=connection] data-state=${state}`,
    seen: async () => `it shows ${JSON.stringify(await connectionOf(who))}`,
  });
}

async function viewersOf(who) {
  return (await who.page.locator(sel.viewer).allTextContents()).map((s) => s.trim()).sort();
}

/** Waits until `who` sees exactly `names` viewing the open contact (never themselves). */
function waitViewers(who, names) {
  const expected = [...names].sort();
  return until(async () => JSON.stringify(await viewersOf(who)) === JSON.stringify(expected), {
    timeout: WAIT,
    what: `${who.label}: [data-testid=viewer] to be exactly ${JSON.stringify(expected)}`,
    seen: async () => `the viewers shown are ${JSON.stringify(await viewersOf(who))}`,
  });
}

async function teammatesOnlineOf(who) {
  return (await who.page.locator(sel.teammateOnline).allTextContents()).map((s) => s.trim()).sort();
}

/** Waits until `who`'s "Teammates online" shows exactly `names` (never themselves). */
function waitTeammatesOnline(who, names) {
  const expected = [...names].sort();
  return until(async () => JSON.stringify(await teammatesOnlineOf(who)) === JSON.stringify(expected), {
    timeout: WAIT,
    what: `${who.label}: [data-testid=teammate-online] to be exactly ${JSON.stringify(expected)}`,
    seen: async () => `the teammates shown online are ${JSON.stringify(await teammatesOnlineOf(who))}`,
  });
}

async function submitLogin(who, password) {
  const form = who.page.locator(sel.loginForm);
  await form.locator('input[name=email]').fill(who.email, { timeout: WAIT });
  await form.locator('input[name=password]').fill(password);
  await form.locator('button[type=submit]').click();
}

/** Logs in through the form; waits for the name and a live connection. */
async function logIn(who) {
  await submitLogin(who, PASSWORD);
  await until(async () => (await who.page.locator(sel.me).textContent({ timeout: 1000 })).trim() === who.name, {
    timeout: WAIT,
    what: `${who.label}: [data-testid=me] to show "${who.name}"`,
    seen: async () => `it shows "${await who.page.locator(sel.me).textContent()}"`,
  });
  await who.page.locator(sel.me).waitFor({ state: 'visible', timeout: WAIT });
  await who.page.locator(sel.logout).waitFor({ state: 'visible', timeout: WAIT });
  await who.page.locator(sel.loginForm).waitFor({ state: 'hidden', timeout: WAIT });
  await waitConnection(who, 'connected');
}

async function openContact(who, contactId) {
  await who.page.locator(sel.contact(contactId)).click({ timeout: WAIT });
  await who.page.locator(sel.thread(contactId)).waitFor({ state: 'attached', timeout: WAIT });
  await who.page.locator(sel.composer).waitFor({ state: 'visible', timeout: WAIT });
}

// ------------------------------------------------------------------------------ steps

step('0. a logged-out first load shows the login form with no console error, failed request or 4xx/5xx answer', async (t) => {
  // A window of its own, watched from before it loads anything: no cookie, nobody logged in.
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  try {
    const page = await context.newPage();
    const problems = [];
    const api = [];
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(`console.error: ${msg.text()}`);
    });
    page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`));
    page.on('requestfailed', (req) =>
      problems.push(`request failed: ${req.method()} ${req.url()} (${req.failure() && req.failure().errorText})`)
    );
    page.on('response', (res) => {
      const { pathname } = new URL(res.url());
      if (pathname.startsWith('/api/')) api.push(`${res.request().method()} ${pathname} ${res.status()}`);
      if (res.status() >= 400) problems.push(`HTTP ${res.status()}: ${res.request().method()} ${res.url()}`);
    });
    await page.goto(server.base + '/', { waitUntil: 'networkidle' });
    // The page shows the form once it has learnt that nobody is logged in.
    await page.locator(sel.loginForm).waitFor({ state: 'visible', timeout: WAIT });
    await until(async () => (await page.locator(sel.connection).getAttribute('data-state')) === 'offline', {
      timeout: WAIT,
      what: '[data-testid=connection] to read logged out (data-state=offline)',
    });
    await page.waitForLoadState('networkidle', { timeout: WAIT });
    t.diagnostic(`API calls of the first load: ${JSON.stringify(api)}`);
    assert.deepEqual(problems, [], `the logged-out first load reported:\n${problems.join('\n')}`);
    assert.ok(api.includes('GET /api/auth/session 200'), `the page never asked whether it is logged in: ${JSON.stringify(api)}`);
    assert.equal(await page.locator(sel.me).isVisible(), false, 'a logged-out page shows a user');
  } finally {
    await context.close();
  }
});

// Shared between steps: what step 5 delivered, and the unread counts after it.
const inbound = {};

step('1. login: a wrong password shows login-error; Alice and Bob log in through the form and connect', async (t) => {
  await Promise.all([alice, bob].map((who) => who.page.goto(server.base + '/', { waitUntil: 'domcontentloaded' })));

  await submitLogin(alice, 'not-the-password');
  await alice.page.locator(sel.loginError).waitFor({ state: 'visible', timeout: WAIT });
  assert.ok((await alice.page.locator(sel.loginError).textContent()).trim().length > 0, 'login-error is empty');
  assert.equal(await alice.page.locator(sel.me).isVisible(), false, 'a failed login shows a user');
  await shootBoth(t, '01-login-error');

  await Promise.all([logIn(alice), logIn(bob)]);
  assert.equal(await alice.page.locator(sel.loginError).isVisible(), false, 'login-error still shown after logging in');
  // Both lists show the demo's contacts, with a count that is a number.
  for (const who of [alice, bob]) {
    for (const id of [1, 2, 3]) await unreadOf(who, id);
  }
  await shootBoth(t, '01-logged-in');
});

step('2. presence: both open contact 1; each sees the other as a viewer, never themselves', async (t) => {
  await Promise.all([openContact(alice, 1), openContact(bob, 1)]);
  await Promise.all([waitViewers(alice, [bob.name]), waitViewers(bob, [alice.name])]);
  await shootBoth(t, '02-presence');
});

step('3. typing: Alice types, Bob sees her name typing, and it goes away after she stops', async (t) => {
  // Typed key by key, as a person does (the page throttles what it sends).
  await alice.page.locator(sel.composer).pressSequentially('Hi Bob, one sec', { delay: 25 });
  const stoppedAt = Date.now();
  await bob.page.locator(sel.typing).filter({ hasText: alice.name }).waitFor({ state: 'visible', timeout: WAIT });
  assert.equal(await alice.page.locator(sel.typing).isVisible(), false, 'Alice sees her own typing indicator');
  await shootBoth(t, '03-typing');
  await bob.page.locator(sel.typing).waitFor({ state: 'hidden', timeout: WAIT });
  t.diagnostic(`the typing indicator went away ${Date.now() - stoppedAt} ms after the last key`);
});

step('4. send: Alice sends, Bob sees it at once; both follow queued → sent → delivered', async (t) => {
  const body = unique('Hello from Alice');
  await alice.page.locator(sel.composer).fill(body);
  const clickedAt = Date.now();
  await alice.page.locator(sel.send).click();

  const id = await until(async () => (await idsWithBody(alice, 1, body))[0], {
    timeout: WAIT,
    what: `Alice's thread to show "${body}"`,
    seen: async () => `the thread shows ${JSON.stringify(await threadOf(alice, 1))}`,
  });
  await waitMessage(bob, 1, id, (m) => m.body === body, `to show "${body}"`);
  t.diagnostic(`Bob saw Alice's message ${Date.now() - clickedAt} ms after she clicked send`);

  // The fake accepts it as Twilio does ("queued"); nothing else moves it yet.
  for (const who of [alice, bob]) await waitMessage(who, 1, id, (m) => m.status === 'queued', 'to be queued');
  const [request] = (
    await fake.waitFor((rs) => rs.some((r) => r.kind === 'message' && r.form.Body === body), WAIT, 'the send to reach Twilio')
  ).filter((r) => r.kind === 'message' && r.form.Body === body);
  assert.equal(request.form.To, CONTACT_PHONES[1]);
  assert.equal(request.answer.status, 201);
  const twilioSid = request.answer.body.sid;
  // A callback must find the message by its SID: wait until the server stored it.
  await until(
    async () => {
      const res = await server.request('GET', '/api/contacts/1/messages?limit=100', { token: alice.token });
      return res.body.messages.some((m) => String(m.id) === id && m.twilioSid === twilioSid);
    },
    { timeout: WAIT, what: `message ${id} to carry Twilio's SID ${twilioSid}` }
  );

  await statusCallback(request.form.StatusCallback, twilioSid, 'sent');
  for (const who of [alice, bob]) await waitMessage(who, 1, id, (m) => m.status === 'sent', 'to be sent');
  await statusCallback(request.form.StatusCallback, twilioSid, 'delivered');
  for (const who of [alice, bob]) await waitMessage(who, 1, id, (m) => m.status === 'delivered', 'to be delivered');

  // Once in each window: the answer to Alice's send and the events must not add copies.
  for (const who of [alice, bob]) {
    assert.deepEqual(await idsWithBody(who, 1, body), [id], `${who.label}: "${body}" is not shown exactly once`);
    const shown = (await threadOf(who, 1)).find((m) => m.id === id);
    assert.equal(shown.markRead, false, `${who.label}: an outbound message offers mark-read`);
  }
  await shootBoth(t, '04-delivered');
});

step('5. inbound: a signed webhook for contact 1 and `sms receive` for contact 2 show live in both windows', async (t) => {
  const before = {};
  for (const id of [1, 2]) {
    before[id] = await unreadOf(alice, id);
    await waitUnread(bob, id, before[id]); // unread counts are the team's: both windows agree
  }

  const body1 = unique('Inbound for contact 1');
  await inboundWebhook(CONTACT_PHONES[1], body1);
  const body2 = unique('Inbound for contact 2');
  // Run as an operator would next to the server: same database, same directory.
  const id2 = await server.command('sms', 'receive', '--from', CONTACT_PHONES[2], '--body', body2, '--to', TEAM_PHONE);
  assert.match(id2 || '', /^\S+$/, `sms receive printed "${id2}" instead of the new message's id`);
  const id1 = await storedMessageId(1, body1);
  Object.assign(inbound, { id1, body1, id2, body2 });

  for (const who of [alice, bob]) {
    await waitMessage(
      who,
      1,
      id1,
      (m) => m.body === body1 && m.status === 'received' && m.read === 'false' && m.markRead,
      `to show "${body1}", received, data-read=false, with a mark-read button`
    );
  }
  for (const who of [alice, bob]) {
    await waitUnread(who, 1, before[1] + 1);
    await waitUnread(who, 2, before[2] + 1);
  }
  // Contact 2's message counts in its list, but it is not shown in contact 1's thread.
  for (const who of [alice, bob]) {
    assert.deepEqual(await idsWithBody(who, 1, body2), [], `${who.label}: contact 2's SMS shows in contact 1's thread`);
  }
  inbound.unreadAfter = { 1: before[1] + 1, 2: before[2] + 1 };
  await shootBoth(t, '05-inbound');
});

step('6. read marks: Bob marks the inbound message read; Alice sees it read, and contact 1 unread drops in both', async (t) => {
  assert.ok(inbound.id1, 'step 5 delivered no inbound message to mark read');
  await bob.page.locator(`${sel.message(1, inbound.id1)} button[data-testid=mark-read]`).click({ timeout: WAIT });
  for (const who of [bob, alice]) {
    await waitMessage(who, 1, inbound.id1, (m) => m.read === 'true' && !m.markRead, 'to be data-read=true without a mark-read button');
  }
  for (const who of [alice, bob]) {
    await waitUnread(who, 1, inbound.unreadAfter[1] - 1);
    await waitUnread(who, 2, inbound.unreadAfter[2]); // untouched
  }
  await shootBoth(t, '06-read');
});

step('7. reconnect: Alice drops the connection, an SMS arrives, and after connect() her page catches up', async (t) => {
  const unreadBefore = await unreadOf(alice, 1);
  await alice.page.evaluate(() => window.inbox.pusher.disconnect());
  await waitConnection(alice, 'offline');
  // Bob sees Alice leave: her viewer entry went with her connection.
  await waitViewers(bob, []);

  const body = unique('Sent while Alice was offline');
  await inboundWebhook(CONTACT_PHONES[1], body);
  const id = await storedMessageId(1, body);
  // Published while Alice was away: Bob has it live.
  await waitMessage(bob, 1, id, (m) => m.body === body, `to show "${body}"`);
  const shownWhileOffline = (await idsWithBody(alice, 1, body)).length > 0;
  t.diagnostic(`while offline Alice's page ${shownWhileOffline ? 'already showed' : 'did not show'} the new message`);
  await shootBoth(t, '07-offline');

  await alice.page.evaluate(() => window.inbox.pusher.connect());
  await waitConnection(alice, 'connected');
  await waitMessage(alice, 1, id, (m) => m.body === body && m.read === 'false', `to show "${body}" after reconnecting`);
  await waitUnread(alice, 1, unreadBefore + 1);
  assert.deepEqual(await idsWithBody(alice, 1, body), [id], 'the refetched message is shown more than once');

  // Live again, not only refetched: presence and events flow both ways.
  await Promise.all([waitViewers(alice, [bob.name]), waitViewers(bob, [alice.name])]);
  const reply = unique('Bob after the reconnect');
  await bob.page.locator(sel.composer).fill(reply);
  await bob.page.locator(sel.send).click();
  const replyId = await storedMessageId(1, reply);
  await waitMessage(alice, 1, replyId, (m) => m.body === reply, `to show Bob's "${reply}" live`);
  await shootBoth(t, '07-reconnected');
});

step("8. leaving: Bob's window closes; Alice's viewer list no longer shows Bob", async (t) => {
  await waitViewers(alice, [bob.name]);
  bob.open = false;
  await bob.context.close();
  await waitViewers(alice, []);
  await shootBoth(t, '08-bob-left');
});

/** The contact ids `who`'s list shows, top to bottom. */
function listedContacts(who) {
  return who.page.locator(sel.contacts).evaluateAll((items) => items.map((li) => li.dataset.contactId));
}

function waitListed(who, pred, what) {
  return until(
    async () => {
      const ids = await listedContacts(who);
      return pred(ids) ? ids : null;
    },
    {
      timeout: WAIT,
      what: `${who.label}: the contact list ${what}`,
      seen: async () => `it shows ${JSON.stringify(await listedContacts(who))}`,
    }
  );
}

step('9. paging: with 60 contacts a fresh window lists 50, "more" lists all 60; a new SMS moves a contact to the top', async (t) => {
  // The demo's 3 contacts and 57 more, created now, so they are the most recently active.
  const created = [];
  for (let n = 0; n < 57; n++) {
    const res = await server.request('POST', '/api/contacts', {
      token: alice.token,
      body: { name: `Paging ${String(n).padStart(2, '0')}`, phone: `+1415555${2000 + n}` },
    });
    assert.equal(res.status, 201, `create contact ${n} answered ${res.status}: ${JSON.stringify(res.body)}`);
    created.push(String(res.body.contact.id));
  }
  // Bob comes back in a new window, which loads the list afresh.
  bob = await person('bob', 'bob@example.com');
  await bob.page.goto(server.base + '/', { waitUntil: 'domcontentloaded' });
  await logIn(bob);
  const newestFifty = created.slice(7).reverse();
  const first = await waitListed(bob, (ids) => ids.length === 50, 'to show the first page of 50');
  assert.deepEqual(first, newestFifty, 'the first page is not the 50 most recently active, newest first');
  await bob.page.locator(sel.moreContacts).waitFor({ state: 'visible', timeout: WAIT });
  await shootBoth(t, '09-first-page');

  // Contact 2 is on the page not loaded yet; an SMS from it brings it to the top now.
  await inboundWebhook(CONTACT_PHONES[2], unique('Paging inbound for contact 2'));
  await waitListed(bob, (ids) => ids.length === 51 && ids[0] === '2', 'to show contact 2 first, on top of the 50');

  await bob.page.locator(sel.moreContacts).click({ timeout: WAIT });
  const all = await waitListed(bob, (ids) => ids.length === 60, 'to show all 60 contacts after "more"');
  assert.equal(new Set(all).size, 60, `a contact is listed twice: ${JSON.stringify(all)}`);
  assert.equal(all[0], '2', 'contact 2 left the top');
  assert.deepEqual(all.slice(1, 51), newestFifty, 'the first page moved');
  const rest = all.slice(51);
  for (const id of [...created.slice(0, 7), '1', '3']) assert.ok(rest.includes(id), `contact ${id} is not on the second page`);
  await bob.page.locator(sel.moreContacts).waitFor({ state: 'hidden', timeout: WAIT });
  await shootBoth(t, '09-all-contacts');
});

step('10. teammates online: Alice and Bob each show the other by name; a dropped connection empties the list until it is back', async (t) => {
  await Promise.all([waitTeammatesOnline(alice, [bob.name]), waitTeammatesOnline(bob, [alice.name])]);
  // The entry names the user by id too, as the viewer list does.
  assert.equal(await alice.page.locator(sel.teammateOnline).getAttribute('data-user-id', { timeout: 1000 }), String(bob.id));
  assert.equal(await bob.page.locator(sel.teammateOnline).getAttribute('data-user-id', { timeout: 1000 }), String(alice.id));
  await shootBoth(t, '10-teammates-online');

  // Alice's connection drops: she cannot know who is online meanwhile, and Bob sees her go.
  await alice.page.evaluate(() => window.inbox.pusher.disconnect());
  await waitConnection(alice, 'offline');
  await Promise.all([waitTeammatesOnline(alice, []), waitTeammatesOnline(bob, [])]);
  // Back: the new sign-in tells her who is online, and Bob sees her again.
  await alice.page.evaluate(() => window.inbox.pusher.connect());
  await waitConnection(alice, 'connected');
  await Promise.all([waitTeammatesOnline(alice, [bob.name]), waitTeammatesOnline(bob, [alice.name])]);
});

step("11. teammates offline: Bob's window closes and Alice shows him gone; Bob comes back, Alice's window closes and Bob shows her gone", async (t) => {
  await waitTeammatesOnline(alice, [bob.name]);
  bob.open = false;
  await bob.context.close();
  await waitTeammatesOnline(alice, []);
  await shootBoth(t, '11-bob-closed');

  bob = await person('bob', 'bob@example.com');
  await bob.page.goto(server.base + '/', { waitUntil: 'domcontentloaded' });
  await logIn(bob);
  await Promise.all([waitTeammatesOnline(alice, [bob.name]), waitTeammatesOnline(bob, [alice.name])]);

  alice.open = false;
  await alice.context.close();
  await waitTeammatesOnline(bob, []);
  await shootBoth(t, '11-alice-closed');
});
