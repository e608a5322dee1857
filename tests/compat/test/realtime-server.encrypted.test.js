'use strict';
// End-to-end encrypted channels: the SDK encrypts with encryptionMasterKeyBase64,
// the server relays ciphertext, pusher-js decrypts with the shared_secret from
// authorizeChannel.
//
// pusher-js's `with-encryption` entry point is the *web* build (it needs `self`),
// so in Node the encrypted-channel support of the Node build is used: it takes a
// tweetnacl implementation through the `nacl` option.
const { describe, test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { Harness, subscribe, nextEvent, collect, recordFrames, channelName, rejectsWithStatus, sleep } = require('../lib/clients');

let nacl = null;
let skip = false;
try {
  nacl = require('tweetnacl');
  // The option pusher-js's Node build reads for encrypted channels.
  const nodeBuild = fs.readFileSync(require.resolve('pusher-js'), 'utf8');
  if (!nodeBuild.includes('createEncryptedChannel') || !nodeBuild.includes('config.nacl')) {
    skip = 'this pusher-js Node build has no encrypted-channel support (no nacl option)';
  }
} catch (e) {
  skip = `tweetnacl is not installed, pusher-js cannot decrypt in Node (${e.message})`;
}
const withEncryptionPath = path.join(path.dirname(require.resolve('pusher-js/package.json')), 'with-encryption');
const withEncryptionNote = fs.existsSync(withEncryptionPath)
  ? 'pusher-js/with-encryption exists but is the web build; using the Node build + nacl option'
  : 'pusher-js/with-encryption is absent; using the Node build + nacl option';

describe('private-encrypted channels end to end', { skip }, () => {
  let h;
  before(async () => {
    h = await Harness.start();
  });
  afterEach(() => h.closeClients());
  after(() => h.close());

  test(`pusher-js decrypts what the SDK encrypted (${withEncryptionNote})`, async () => {
    const name = channelName('private-encrypted-');
    const sdk = h.sdk({ encryptionMasterKeyBase64: Harness.masterKey });
    const client = h.client({ sdk, nacl });
    const frames = recordFrames(client);
    const { channel } = await subscribe(client, name);
    const got = nextEvent(channel, 'secret-message');
    const payload = { text: 'top secret', n: 42, nested: { ok: true } };
    await sdk.trigger(name, 'secret-message', payload);
    assert.deepEqual((await got).data, payload);

    // On the wire the server only ever relayed ciphertext.
    const wire = frames.find((f) => f.event === 'secret-message');
    assert.ok(wire, 'the frame was received');
    const data = typeof wire.data === 'string' ? JSON.parse(wire.data) : wire.data;
    assert.deepEqual(Object.keys(data).sort(), ['ciphertext', 'nonce']);
    assert.ok(!JSON.stringify(wire).includes('top secret'));
  });

  test('triggerBatch to an encrypted channel is decrypted too', async () => {
    const name = channelName('private-encrypted-');
    const client = h.client({ nacl });
    const { channel } = await subscribe(client, name);
    const seen = collect(channel, 'batched');
    await h.sdkClient.triggerBatch([
      { channel: name, name: 'batched', data: { i: 1 } },
      { channel: name, name: 'batched', data: { i: 2 } },
    ]);
    for (let i = 0; i < 100 && seen.length < 2; i++) await sleep(10);
    assert.deepEqual(seen.map((s) => s.data), [{ i: 1 }, { i: 2 }]);
  });

  test('a client holding another shared secret cannot read the events', async () => {
    const name = channelName('private-encrypted-');
    // Signed correctly (right secret) but derived from a different master key.
    const otherKeySdk = h.sdk({ encryptionMasterKeyBase64: crypto.randomBytes(32).toString('base64') });
    const client = h.client({ sdk: otherKeySdk, nacl });
    const { channel } = await subscribe(client, name);
    const seen = collect(channel, 'unreadable');
    await h.sdkClient.trigger(name, 'unreadable', { x: 1 });
    await sleep(300);
    assert.deepEqual(seen, []);
  });

  test('an encrypted channel cannot be triggered together with others (400)', async () => {
    // The SDK refuses this itself; post the raw body through the SDK's signed post.
    await rejectsWithStatus(
      h.sdkClient.post({
        path: '/events',
        body: { name: 'e', data: '{}', channels: [channelName('private-encrypted-'), channelName()] },
      }),
      400
    );
  });
});
