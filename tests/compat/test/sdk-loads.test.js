'use strict';
// Smoke test: the pinned official SDKs used as compatibility peers install and load.
const test = require('node:test');
const assert = require('node:assert/strict');

test('pusher (server SDK) loads and constructs', () => {
  const Pusher = require('pusher');
  const pusher = new Pusher({ appId: '1', key: 'k', secret: 's' });
  assert.equal(typeof pusher.trigger, 'function');
  assert.equal(typeof pusher.authorizeChannel, 'function');
});

test('pusher-js (client SDK) loads', () => {
  const PusherJS = require('pusher-js');
  assert.equal(typeof PusherJS, 'function');
});

test('twilio loads', () => {
  const twilio = require('twilio');
  assert.equal(typeof twilio, 'function');
  assert.equal(typeof twilio.validateRequest, 'function');
});

test('ws loads', () => {
  const WebSocket = require('ws');
  assert.equal(typeof WebSocket, 'function');
  assert.equal(typeof WebSocket.Server, 'function');
});

test('playwright-core loads (no browser needed)', () => {
  const { chromium } = require('playwright-core');
  assert.equal(typeof chromium.launch, 'function');
});
