'use strict';
// PostgreSQL stopped and started again under load (a server of the test's own, on a free
// port, so the machine's is never touched): while it is down, requests answer 503 in the
// JSON shape within a few seconds (no hang); api-server recovers by itself when it is
// back, the outbox drains, and the books balance. Needs PostgreSQL's server binaries
// (pg_ctl, initdb) and, as root, the postgres user to run them; skipped, saying so,
// without them.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { freePort } = require('../lib/server');
const { checkBooks, eventually, startRig, steadyLoad, sleep } = require('./lib');

function postgresBin() {
  try {
    const versions = fs.readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a));
    for (const v of versions) {
      const dir = `/usr/lib/postgresql/${v}/bin`;
      if (fs.existsSync(`${dir}/pg_ctl`) && fs.existsSync(`${dir}/initdb`)) return dir;
    }
  } catch {
    // none
  }
  return null;
}

/** A PostgreSQL server of this test's own, in a temp directory, on a free port. */
async function ownPostgres(bin) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'faults-pg-'));
  const port = await freePort();
  const asPostgres = process.getuid() === 0 ? ['runuser', '-u', 'postgres', '--'] : [];
  if (process.getuid() === 0) execFileSync('chown', ['postgres', dir]);
  const run = (args) => {
    const [cmd, ...rest] = [...asPostgres, ...args];
    return execFileSync(cmd, rest, { stdio: 'pipe' });
  };
  run([`${bin}/initdb`, '-D', `${dir}/data`, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  const pg = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start: () => run([`${bin}/pg_ctl`, '-D', `${dir}/data`, '-l', `${dir}/log`, '-w', '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`, 'start']),
    stop: (mode = 'fast') => run([`${bin}/pg_ctl`, '-D', `${dir}/data`, '-m', mode, '-w', 'stop']),
    destroy() {
      try {
        pg.stop('immediate');
      } catch {
        // already stopped
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  pg.start();
  return pg;
}

const bin = postgresBin();

test('PostgreSQL restarted under load: fast 503s while down, recovery by itself, nothing lost', { timeout: 300000, skip: !bin && 'no PostgreSQL server binaries (pg_ctl, initdb) on this machine' }, async (t) => {
  const pg = await ownPostgres(bin);
  t.after(() => pg.destroy());
  const { fake, witness, inbox, token } = await startRig(t, { databaseUrl: pg.url });
  const load = steadyLoad(inbox, { token, authToken: fake.authToken, intervalMs: 50, label: 'pg' });
  await eventually(() => load.sends.filter((s) => s.status === 201).length >= 20, 30000, '20 accepted sends');

  const stoppedAt = Date.now();
  pg.stop('immediate');
  // While it is down: every answer comes within a few seconds, and a refusal is a 503
  // in the JSON shape (a write that was committed just before may still answer 201).
  await sleep(8000);
  const duringOutage = [...load.sends, ...load.inbound].filter((r) => r.at > stoppedAt + 1000 && r.status !== undefined);
  pg.start();
  const restartedAt = Date.now();

  assert.ok(duringOutage.length > 20, `requests answered during the outage: ${duringOutage.length}`);
  for (const r of duringOutage) {
    assert.ok(r.status !== 0, `a request during the outage got no answer: ${r.error}`);
    assert.ok(r.status !== 500, `a request during the outage answered 500: ${JSON.stringify(r.answer)}`);
  }
  const refusedSends = load.sends.filter((s) => s.at > stoppedAt + 1000 && s.at < restartedAt - 6000);
  assert.ok(refusedSends.every((s) => s.status === 503 && s.answer && s.answer.error && s.answer.error.code), JSON.stringify(refusedSends.slice(0, 3)));
  const slowest = Math.max(...duringOutage.map((r) => (r.answeredAt || r.at) - r.at));
  t.diagnostic(`${duringOutage.length} answers during the outage, slowest ${slowest} ms`);
  assert.ok(slowest < 8000, `an answer during the outage took ${slowest} ms`);

  // Back by itself: sends are accepted again.
  const accepted = load.sends.filter((s) => s.status === 201).length;
  await eventually(() => load.sends.filter((s) => s.status === 201 && s.at > restartedAt).length >= 20, 60000, 'sends accepted again after PostgreSQL returned');
  assert.ok(load.sends.filter((s) => s.status === 201).length > accepted);
  await load.stop();
  const report = await checkBooks({ inbox, token, load, fake, witness });
  t.diagnostic(JSON.stringify(report));
  assert.ok(inbox.running, 'api-server was never restarted');
});
