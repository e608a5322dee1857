'use strict';
// kill -9 api-server under a steady load of sends and signed inbound webhooks, on SQLite
// and (with POSTGRES_TEST_URL) on PostgreSQL, then start it again on the same database:
// every request that got a 2xx is in the database exactly once, every stored message was
// published (at least once; repeats are reported), every outbound SMS reached the fake
// Twilio exactly once, and nothing stays queued.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { checkBooks, eventually, freshPostgresDatabase, startRig, steadyLoad } = require('./lib');

async function killUnderLoad(t, databaseUrl) {
  // Twilio answers slowly, so some sends are in flight at Twilio when the process dies.
  const { fake, witness, inbox, token } = await startRig(t, { databaseUrl, twilio: (fake) => fake.succeed({ delayMs: 150 }) });
  const load = steadyLoad(inbox, { token, authToken: fake.authToken, intervalMs: 40, label: 'kill' });
  for (let round = 0; round < 2; round++) {
    // Kill once writes and Twilio calls are under way.
    const before = load.sends.filter((s) => s.status === 201).length;
    await eventually(() => load.sends.filter((s) => s.status === 201).length >= before + 20, 30000, '20 more accepted sends');
    await eventually(() => fake.arrivals.length > fake.requests.length, 30000, 'a Twilio call in flight');
    const info = await inbox.kill('SIGKILL');
    assert.equal(info.signal, 'SIGKILL');
    await inbox.start();
  }
  await eventually(() => load.sends.filter((s) => s.status === 201).length >= 80, 30000, 'sends after the restarts');
  await load.stop();
  const report = await checkBooks({ inbox, token, load, fake, witness });
  t.diagnostic(JSON.stringify(report));
  assert.ok(report.sendsAccepted > 0 && report.inboundAccepted > 0, JSON.stringify(report));
}

test('kill -9 under load on SQLite loses and doubles nothing', { timeout: 240000 }, async (t) => {
  await killUnderLoad(t, undefined);
});

test('kill -9 under load on PostgreSQL loses and doubles nothing', { timeout: 240000, skip: !process.env.POSTGRES_TEST_URL && 'POSTGRES_TEST_URL is not set' }, async (t) => {
  const db = freshPostgresDatabase('kill');
  t.after(() => db.drop());
  await killUnderLoad(t, db.url);
});
