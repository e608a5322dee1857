'use strict';
// A full disk under SQLite (the database on a small tmpfs, filled by another file):
// writes fail fast with 507 in the JSON shape, reads still answer, the database stays
// whole (PRAGMA integrity_check), and once space is freed writes work again without a
// restart. Needs root for the tmpfs mount (as CI runs); skipped, saying so, otherwise.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Inbox, eventually } = require('./lib');

function mountTmpfs(sizeMb) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'faults-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMb}m`, 'tmpfs', dir], { stdio: 'pipe' });
    return dir;
  } catch (e) {
    fs.rmdirSync(dir);
    return null;
  }
}

function fill(file) {
  const chunk = Buffer.alloc(64 * 1024, 1);
  const fd = fs.openSync(file, 'w');
  try {
    for (;;) fs.writeSync(fd, chunk);
  } catch (e) {
    if (e.code !== 'ENOSPC') throw e;
  } finally {
    fs.closeSync(fd);
  }
}

function integrity(database) {
  return execFileSync('python3', ['-c', 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("PRAGMA integrity_check").fetchone()[0])', database]).toString().trim();
}

const mountable = process.getuid && process.getuid() === 0;

test('a full disk fails writes with 507, keeps reads and the database whole, and recovers without a restart', { timeout: 180000, skip: !mountable && 'mounting a tmpfs needs root' }, async (t) => {
  const mount = mountTmpfs(24);
  if (!mount) {
    t.skip('this machine refused to mount a tmpfs');
    return;
  }
  const database = path.join(mount, 'inbox.sqlite');
  const filler = path.join(mount, 'filler');
  const inbox = await Inbox.create({ databaseUrl: database });
  t.after(async () => {
    await inbox.destroy();
    execFileSync('umount', ['-l', mount]);
    fs.rmdirSync(mount);
  });
  await inbox.start();
  const token = await inbox.login();
  const send = (body) => inbox.request('POST', '/api/messages/send', { token, body: { contactId: '1', body }, timeoutMs: 15000 });
  assert.equal((await send('before the disk filled')).status, 201);

  fill(filler);
  // The WAL may still have room for a few writes; keep writing until the disk says no.
  let refused;
  await eventually(async () => {
    const res = await send(`while full ${'x'.repeat(1500)}`);
    if (res.status === 201) return false;
    refused = res;
    return true;
  }, 60000, 'a write to be refused on the full disk');
  assert.equal(refused.status, 507, JSON.stringify(refused.body));
  assert.equal(refused.body.error.code, 'storage_full');
  assert.equal(typeof refused.body.error.message, 'string');
  const login = await inbox.request('POST', '/api/auth/login', { body: { email: 'bob@example.com', password: 'password123' } });
  assert.ok(login.status === 200 || [507, 503].includes(login.status), `login while full answered ${login.status}`);
  const read = await inbox.request('GET', '/api/contacts/1/messages', { token });
  assert.equal(read.status, 200, 'reads still answer while the disk is full');
  assert.ok(read.body.messages.some((m) => m.body === 'before the disk filled'));
  assert.equal(integrity(database), 'ok');

  fs.rmSync(filler);
  const after = await eventually(async () => {
    const res = await send('after space was freed');
    return res.status === 201 && res;
  }, 60000, 'writes to work again once space is freed');
  assert.equal(after.body.message.body, 'after space was freed');
  assert.ok(inbox.running, 'no restart');
  await inbox.kill('SIGTERM');
  assert.equal(integrity(database), 'ok');
});
