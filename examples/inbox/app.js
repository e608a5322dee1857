// The example inbox page: plain JavaScript and pusher-js, driven only by the
// public HTTP API (docs/api.md) and the realtime events. It is meant to be
// read as the reference for wiring a pusher-js frontend to api-server:
//
//   1. log in (POST /api/auth/login sets the session cookie);
//   2. GET /api/realtime/config, then `new Pusher(key, options)`: pusher-js
//      authorizes private and presence channels at /api/pusher/auth with the
//      cookie, so the page never handles a secret;
//   3. subscribe `private-user-{me}` (contact:updated keeps the list's unread
//      counts live and moves a contact with a new message to the top), and
//      for the open contact `private-contact-{id}` (its messages) and
//      `presence-contact-{id}` (who else is viewing, typing);
//   4. after a lost connection comes back, refetch what may have been missed:
//      events are not replayed;
//   5. the contact list comes a page at a time (GET /api/contacts, then
//      `before` = the last answer's `nextBefore` for the next page), most
//      recently active first: a team may have hundreds of thousands;
//   6. which teammates are online: pusher.signin() gets a `watchlist` of
//      teammates from /api/pusher/user-auth, and `pusher.user.watchlist`
//      reports them `online` / `offline` (GET /api/team/members names them);
//   7. on load, GET /api/auth/session says whether a session is still valid
//      (`{user}` or `{user:null}`), so a logged-out page logs no 401.
'use strict';

(function () {
  const $ = (selector) => document.querySelector(selector);

  const el = {
    connection: $('[data-testid=connection]'),
    me: $('[data-testid=me]'),
    logout: $('[data-testid=logout]'),
    loginView: $('#login-view'),
    loginForm: $('form[data-testid=login]'),
    loginError: $('[data-testid=login-error]'),
    inboxView: $('#inbox-view'),
    contacts: $('[data-testid=contacts]'),
    contactsEmpty: $('#contacts-empty'),
    moreContacts: $('[data-testid=more-contacts]'),
    noThread: $('#no-thread'),
    threadView: $('#thread-view'),
    threadName: $('#thread-name'),
    threadPhone: $('#thread-phone'),
    viewers: $('[data-testid=viewers]'),
    teammatesOnline: $('[data-testid=teammates-online]'),
    loadEarlier: $('#load-earlier'),
    thread: $('[data-testid=thread]'),
    typing: $('[data-testid=typing]'),
    composerForm: $('#composer-form'),
    composer: $('[data-testid=composer]'),
    send: $('[data-testid=send]'),
    sendError: $('[data-testid=send-error]'),
  };

  const PAGE_SIZE = 50;
  const CONTACTS_PAGE_SIZE = 50;
  const TYPING_SEND_EVERY_MS = 2000;
  const TYPING_SHOWN_FOR_MS = 4000;
  const POLL_WHEN_OFFLINE_MS = 5000;

  // Twilio's statuses only move forward; an event and a fetch may cross, so
  // the page keeps the furthest one it has seen.
  const STATUS_RANK = {
    not_sent: 0, queued: 1, sending: 2, sent: 3,
    failed: 4, undelivered: 4, delivered: 4, received: 4,
  };

  const state = {
    me: null,
    pusher: null,
    contacts: new Map(), // id → contact
    contactOrder: [], // contact ids as listed: most recently active first
    contactsBefore: null, // the next page's cursor (nextBefore), null after the last
    contactPages: 0, // pages loaded since the list was last reset
    contactsLoading: null, // the page request under way
    openContactId: null,
    messages: new Map(), // id → message, for the open contact
    hasEarlier: false,
    contactChannel: null,
    presenceChannel: null,
    typers: new Map(), // user id → { name, timer }
    teammates: new Map(), // user id → name, from GET /api/team/members
    teammatesLoading: null, // that request, while under way
    online: new Set(), // watched teammates' ids online now (pusher.user.watchlist)
    lastTypingSent: 0,
    everConnected: false,
    pollTimer: null,
  };

  // ---------------------------------------------------------------- HTTP API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** One call to the HTTP API; answers the parsed JSON (or null for 204). */
  async function api(method, path, { body, headers = {} } = {}) {
    const init = { method, headers: { Accept: 'application/json', ...headers }, credentials: 'same-origin' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network', 'The server cannot be reached.');
    }
    if (res.status === 204) return null;
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      const error = (data && data.error) || {};
      if (res.status === 401 && path !== '/api/auth/login') showLogin();
      throw new ApiError(res.status, error.code || 'http_' + res.status, error.message || res.statusText);
    }
    return data;
  }

  // ------------------------------------------------------------------ views

  function show(node, visible) {
    node.hidden = !visible;
  }

  function setConnection(kind, text) {
    el.connection.dataset.state = kind;
    el.connection.textContent = text;
  }

  function showLogin() {
    teardownRealtime();
    state.me = null;
    state.contacts.clear();
    state.contactOrder = [];
    state.contactsBefore = null;
    state.contactPages = 0;
    state.teammates.clear();
    state.online.clear();
    renderTeammatesOnline();
    closeThread();
    show(el.inboxView, false);
    show(el.me, false);
    show(el.logout, false);
    show(el.loginView, true);
    setConnection('offline', 'Logged out');
    el.loginForm.elements.email.focus();
  }

  function formatTime(iso) {
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return '';
    const today = new Date().toDateString() === at.toDateString();
    return today ? at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : at.toLocaleString();
  }

  /** The list in the server's order (activity), as pages and events left it. */
  function renderContacts() {
    const listed = state.contactOrder.map((id) => state.contacts.get(id)).filter(Boolean);
    el.contacts.replaceChildren(...listed.map(contactItem));
    show(el.contactsEmpty, listed.length === 0);
    show(el.moreContacts, Boolean(state.contactsBefore));
  }

  function contactItem(contact) {
    const li = document.createElement('li');
    li.dataset.testid = 'contact';
    li.dataset.contactId = contact.id;
    li.tabIndex = 0;
    li.setAttribute('role', 'button');
    if (contact.id === state.openContactId) li.setAttribute('aria-current', 'true');

    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = contact.name;
    const unread = document.createElement('span');
    unread.dataset.testid = 'unread';
    unread.className = contact.unreadCount > 0 ? 'unread' : 'unread none';
    unread.textContent = String(contact.unreadCount || 0);
    unread.title = `${contact.unreadCount || 0} unread`;
    const last = document.createElement('span');
    last.className = 'last muted';
    last.textContent = contact.lastMessage ? contact.lastMessage.body : contact.phone;

    li.append(name, unread, last);
    li.addEventListener('click', () => openContact(contact.id));
    li.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        openContact(contact.id);
      }
    });
    return li;
  }

  function renderThread() {
    const sorted = [...state.messages.values()].sort(
      (a, b) => a.createdAt.localeCompare(b.createdAt) || Number(a.id) - Number(b.id)
    );
    const atBottom = el.thread.scrollHeight - el.thread.scrollTop - el.thread.clientHeight < 40;
    el.thread.replaceChildren(...sorted.map(messageItem));
    show(el.loadEarlier, state.hasEarlier);
    if (atBottom) el.thread.scrollTop = el.thread.scrollHeight;
  }

  function messageItem(message) {
    const read = Boolean(message.readAt);
    const li = document.createElement('li');
    li.dataset.testid = 'message';
    li.dataset.messageId = message.id;
    li.dataset.status = message.status;
    li.dataset.read = String(read);
    li.className = `message ${message.direction}`;

    const body = document.createElement('p');
    body.dataset.testid = 'message-body';
    body.className = 'body';
    body.textContent = message.body;
    li.append(body);

    for (const media of message.media || []) {
      const link = document.createElement('a');
      link.href = media.url;
      link.rel = 'noopener noreferrer';
      link.target = '_blank';
      link.textContent = `Attachment (${media.contentType})`;
      li.append(link);
    }

    const meta = document.createElement('p');
    meta.className = 'meta muted';
    const time = document.createElement('time');
    time.dateTime = message.createdAt;
    time.textContent = formatTime(message.createdAt);
    meta.append(time);
    if (message.direction === 'outbound') {
      const status = document.createElement('span');
      status.dataset.testid = 'message-status';
      status.className = `status ${message.status}`;
      status.textContent = message.errorCode ? `${message.status} (${message.errorCode})` : message.status;
      meta.append(' · ', status);
    }
    if (message.direction === 'inbound') {
      if (read) {
        const mark = document.createElement('span');
        mark.className = 'read';
        mark.textContent = `read ${formatTime(message.readAt)}`;
        meta.append(' · ', mark);
      } else {
        const button = document.createElement('button');
        button.type = 'button';
        button.dataset.testid = 'mark-read';
        button.className = 'link';
        button.textContent = 'Mark read';
        button.addEventListener('click', () => markRead(message.id, button));
        meta.append(' · ', button);
      }
    }
    li.append(meta);
    return li;
  }

  function renderViewers() {
    if (!state.presenceChannel || !state.presenceChannel.subscribed) {
      el.viewers.replaceChildren();
      return;
    }
    const items = [];
    state.presenceChannel.members.each((member) => {
      if (member.id === state.me.id) return;
      const li = document.createElement('li');
      li.dataset.testid = 'viewer';
      li.dataset.userId = member.id;
      li.textContent = (member.info && member.info.name) || member.id;
      items.push(li);
    });
    el.viewers.replaceChildren(...items);
  }

  /** The watched teammates online now, by name (an id until its name is known). */
  function renderTeammatesOnline() {
    const online = [...state.online]
      .filter((id) => !state.me || id !== state.me.id)
      .map((id) => ({ id, name: state.teammates.get(id) || `User ${id}` }))
      .sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    el.teammatesOnline.replaceChildren(
      ...online.map(({ id, name }) => {
        const li = document.createElement('li');
        li.dataset.testid = 'teammate-online';
        li.dataset.userId = id;
        li.textContent = name;
        return li;
      })
    );
  }

  function renderTyping() {
    const names = [...state.typers.values()].map((t) => t.name);
    show(el.typing, names.length > 0);
    el.typing.textContent = names.length === 0 ? '' : `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…`;
  }

  // ------------------------------------------------------------------- data

  function lastMessageId(contact) {
    return contact && contact.lastMessage ? contact.lastMessage.id : null;
  }

  /**
   * A contact from contact:updated. A new message is new activity: the
   * contact moves to the top, as the server now lists it. Anything else (a
   * read mark, a status) changes it in place. A contact not loaded yet is
   * shown only when its activity is within the loaded pages; otherwise a
   * later page brings it.
   */
  function upsertContact(contact) {
    const known = state.contacts.get(contact.id);
    if (!known || lastMessageId(known) !== lastMessageId(contact)) {
      if (known || isWithinLoaded(contact)) {
        state.contactOrder = [contact.id, ...state.contactOrder.filter((id) => id !== contact.id)];
        state.contacts.set(contact.id, contact);
      }
    } else {
      state.contacts.set(contact.id, contact);
    }
    renderContacts();
    if (contact.id === state.openContactId) {
      el.threadName.textContent = contact.name;
      el.threadPhone.textContent = contact.phone;
    }
  }

  /** Keeps the furthest status and the read mark, whichever arrives first. */
  function upsertMessage(message) {
    if (message.contactId !== state.openContactId) return;
    const known = state.messages.get(message.id);
    if (known) {
      if ((STATUS_RANK[message.status] ?? 0) < (STATUS_RANK[known.status] ?? 0)) {
        message = { ...message, status: known.status, errorCode: known.errorCode };
      }
      if (!message.readAt && known.readAt) {
        message = { ...message, readAt: known.readAt, readBy: known.readBy };
      }
    }
    state.messages.set(message.id, message);
    renderThread();
  }

  /** Whether an unknown contact's activity places it among the loaded pages. */
  function isWithinLoaded(contact) {
    if (!state.contactsBefore) return true; // everything is loaded: it is new
    if (!contact.lastMessage) return false;
    const times = state.contactOrder
      .map((id) => state.contacts.get(id))
      .filter((c) => c && c.lastMessage)
      .map((c) => c.lastMessage.createdAt);
    return times.length === 0 || times.some((at) => contact.lastMessage.createdAt >= at);
  }

  /**
   * The first page of contacts. With `keepLoaded` (a refetch) the pages
   * beyond it stay, after it, and "more" goes on from where it was.
   */
  async function loadContacts({ keepLoaded = false } = {}) {
    const page = await api('GET', `/api/contacts?limit=${CONTACTS_PAGE_SIZE}`);
    const fresh = page.contacts.map((c) => c.id);
    const freshIds = new Set(fresh);
    const contacts = new Map(page.contacts.map((c) => [c.id, c]));
    if (keepLoaded && state.contactPages > 1) {
      const rest = state.contactOrder.filter((id) => !freshIds.has(id) && state.contacts.has(id));
      for (const id of rest) contacts.set(id, state.contacts.get(id));
      state.contactOrder = [...fresh, ...rest];
    } else {
      state.contactOrder = fresh;
      state.contactsBefore = page.nextBefore || null;
      state.contactPages = 1;
    }
    state.contacts = contacts;
    renderContacts();
  }

  /** The next page of contacts, after the last one loaded. */
  function loadMoreContacts() {
    if (!state.contactsBefore) return Promise.resolve();
    if (state.contactsLoading) return state.contactsLoading;
    const before = state.contactsBefore;
    el.moreContacts.disabled = true;
    state.contactsLoading = (async () => {
      try {
        const page = await api(
          'GET',
          `/api/contacts?limit=${CONTACTS_PAGE_SIZE}&before=${encodeURIComponent(before)}`
        );
        if (state.contactsBefore !== before) return; // the list was reset meanwhile
        for (const contact of page.contacts) {
          // Already listed: it moved up meanwhile, and what we have is newer.
          if (state.contacts.has(contact.id)) continue;
          state.contacts.set(contact.id, contact);
          state.contactOrder.push(contact.id);
        }
        state.contactsBefore = page.nextBefore || null;
        state.contactPages += 1;
        renderContacts();
      } finally {
        state.contactsLoading = null;
        el.moreContacts.disabled = false;
      }
    })();
    return state.contactsLoading;
  }

  /**
   * The names of the teammates the watchlist follows. Asked again when
   * someone unknown comes online (a teammate added since), at most one
   * request at a time.
   */
  function loadTeammates() {
    if (state.teammatesLoading) return state.teammatesLoading;
    const me = state.me;
    state.teammatesLoading = (async () => {
      try {
        const { users } = await api('GET', '/api/team/members');
        if (state.me !== me) return; // logged out (or in as someone else) meanwhile
        for (const user of users) state.teammates.set(user.id, user.name);
        renderTeammatesOnline();
      } catch (e) {
        if (e.status !== 401) console.warn('loading the teammates failed', e);
      } finally {
        state.teammatesLoading = null;
      }
    })();
    return state.teammatesLoading;
  }

  /** The watchlist's `online` / `offline` events: `{ name, user_ids }`. */
  function watchlistEvent(online, { user_ids: ids = [] } = {}) {
    for (const id of ids.map(String)) {
      if (online) state.online.add(id);
      else state.online.delete(id);
    }
    renderTeammatesOnline();
    if (online && ids.some((id) => !state.teammates.has(String(id)))) loadTeammates();
  }

  /** One contact again (a contact:updated too large to carry it). */
  async function reloadContact(contactId) {
    try {
      const { contact } = await api('GET', `/api/contacts/${encodeURIComponent(contactId)}`);
      upsertContact(contact);
    } catch (e) {
      console.warn('reloading a contact failed', e);
    }
  }

  /** The newest page of the open thread, merged into what is shown. */
  async function loadThread(contactId) {
    const { messages } = await api('GET', `/api/contacts/${encodeURIComponent(contactId)}/messages?limit=${PAGE_SIZE}`);
    if (contactId !== state.openContactId) return;
    if (state.messages.size === 0) state.hasEarlier = messages.length === PAGE_SIZE;
    for (const message of messages) upsertMessage(message);
    renderThread();
  }

  async function loadEarlier() {
    const contactId = state.openContactId;
    const oldest = [...state.messages.values()].sort((a, b) => a.createdAt.localeCompare(b.createdAt))[0];
    if (!oldest) return;
    const { messages } = await api(
      'GET',
      `/api/contacts/${encodeURIComponent(contactId)}/messages?limit=${PAGE_SIZE}&before=${encodeURIComponent(oldest.id)}`
    );
    if (contactId !== state.openContactId) return;
    state.hasEarlier = messages.length === PAGE_SIZE;
    for (const message of messages) state.messages.set(message.id, message);
    renderThread();
  }

  /** Everything that may have changed while no event could arrive. */
  async function refetch() {
    try {
      await loadContacts({ keepLoaded: true });
      if (state.openContactId) await loadThread(state.openContactId);
    } catch (e) {
      console.warn('refetch failed', e);
    }
  }

  // ---------------------------------------------------------------- actions

  async function login(event) {
    event.preventDefault();
    const form = el.loginForm.elements;
    show(el.loginError, false);
    const button = el.loginForm.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const { user } = await api('POST', '/api/auth/login', {
        body: { email: form.email.value.trim(), password: form.password.value },
      });
      form.password.value = '';
      await start(user);
    } catch (e) {
      el.loginError.textContent = e.status === 401 ? 'Wrong email or password.' : e.message;
      show(el.loginError, true);
    } finally {
      button.disabled = false;
    }
  }

  async function logout() {
    try {
      await api('POST', '/api/auth/logout');
    } finally {
      showLogin();
    }
  }

  function openContact(contactId) {
    if (state.openContactId === contactId) return;
    closeThread();
    const contact = state.contacts.get(contactId);
    if (!contact) return;
    state.openContactId = contactId;
    el.thread.dataset.contactId = contactId;
    el.threadName.textContent = contact.name;
    el.threadPhone.textContent = contact.phone;
    show(el.noThread, false);
    show(el.threadView, true);
    renderContacts();
    subscribeContact(contactId);
    loadThread(contactId).catch((e) => console.warn('loading the thread failed', e));
    el.composer.focus();
  }

  function closeThread() {
    unsubscribeContact();
    state.openContactId = null;
    state.messages.clear();
    state.hasEarlier = false;
    el.thread.replaceChildren();
    delete el.thread.dataset.contactId;
    show(el.threadView, false);
    show(el.noThread, true);
    show(el.sendError, false);
  }

  async function send(event) {
    event.preventDefault();
    const body = el.composer.value.trim();
    const contactId = state.openContactId;
    if (!body || !contactId || el.send.disabled) return;
    show(el.sendError, false);
    el.send.disabled = true;
    // The same key on a retry of this text makes the server answer the first
    // message instead of sending the SMS twice.
    const key = el.composerForm.dataset.idempotencyKey || (el.composerForm.dataset.idempotencyKey = newKey());
    const headers = { 'Idempotency-Key': key };
    // This connection already has the message from the answer below, so it
    // is left out of the fan-out.
    const socketId = state.pusher && state.pusher.connection.socket_id;
    if (socketId) headers['X-Socket-Id'] = socketId;
    try {
      const { message } = await api('POST', '/api/messages/send', { body: { contactId, body }, headers });
      delete el.composerForm.dataset.idempotencyKey;
      if (el.composer.value.trim() === body) el.composer.value = '';
      upsertMessage(message);
      el.thread.scrollTop = el.thread.scrollHeight;
    } catch (e) {
      el.sendError.textContent = `Not sent: ${e.message}`;
      show(el.sendError, true);
    } finally {
      el.send.disabled = false;
    }
  }

  async function markRead(messageId, button) {
    button.disabled = true;
    try {
      const { message } = await api('POST', `/api/messages/${encodeURIComponent(messageId)}/read`);
      upsertMessage(message);
    } catch (e) {
      button.disabled = false;
      el.sendError.textContent = `Could not mark it read: ${e.message}`;
      show(el.sendError, true);
    }
  }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return `${Date.now()}-${Math.random().toString(16).slice(2)}`;
  }

  function composerInput() {
    const channel = state.presenceChannel;
    const now = Date.now();
    if (!channel || !channel.subscribed || now - state.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    state.lastTypingSent = now;
    // Client events go from browser to browser without touching the API;
    // the server adds user_id on presence channels.
    channel.trigger('client-typing', { name: state.me.name });
  }

  // --------------------------------------------------------------- realtime

  async function connectRealtime() {
    if (typeof window.Pusher !== 'function') {
      setConnection('unavailable', 'Realtime unavailable: pusher-js did not load. New messages show every few seconds.');
      startPolling();
      return;
    }
    let config;
    try {
      config = await api('GET', '/api/realtime/config');
    } catch (e) {
      setConnection('unavailable', `Realtime unavailable: ${e.message} New messages show every few seconds.`);
      startPolling();
      return;
    }
    const { key, ...options } = config;
    const pusher = new window.Pusher(key, options);
    state.pusher = pusher;
    window.inbox.pusher = pusher;
    pusher.connection.bind('state_change', ({ current }) => connectionChanged(current));
    connectionChanged(pusher.connection.state);
    // Signing in ties this connection to the user (server-side "terminate
    // this user's connections" and messages to one user reach it) and starts
    // the watchlist: on each sign-in the server says which watched
    // teammates are online, then who comes online and who goes offline.
    pusher.user.watchlist.bind('online', (event) => watchlistEvent(true, event));
    pusher.user.watchlist.bind('offline', (event) => watchlistEvent(false, event));
    pusher.signin();

    const userChannel = pusher.subscribe(`private-user-${state.me.id}`);
    userChannel.bind('contact:updated', (data) => {
      if (data && data.contact) upsertContact(data.contact);
      else if (data && data.contactId) reloadContact(data.contactId);
      else refetch();
    });
    if (state.openContactId) subscribeContact(state.openContactId);
  }

  function connectionChanged(current) {
    if (current !== 'connected' && state.online.size > 0) {
      // No offline event reaches a connection that is gone; the next
      // sign-in reports who is online then.
      state.online.clear();
      renderTeammatesOnline();
    }
    switch (current) {
      case 'connected':
        setConnection('connected', 'Live');
        stopPolling();
        // Events sent while this page was not connected are not replayed.
        if (state.everConnected) refetch();
        state.everConnected = true;
        break;
      case 'initialized':
      case 'connecting':
        setConnection('connecting', 'Connecting…');
        break;
      case 'unavailable':
      case 'disconnected':
        setConnection('offline', navigator.onLine ? 'Offline: reconnecting…' : 'Offline: no network');
        break;
      case 'failed':
        setConnection('unavailable', 'Realtime unavailable in this browser. New messages show every few seconds.');
        startPolling();
        break;
      default:
        break;
    }
  }

  function subscribeContact(contactId) {
    const pusher = state.pusher;
    if (!pusher) return;
    const contactChannel = pusher.subscribe(`private-contact-${contactId}`);
    const onMessage = (data) => {
      // A message from someone who was typing ends their indicator.
      if (data && data.message && data.message.sentBy) stopTyping(data.message.sentBy);
      if (data && data.message) upsertMessage(data.message);
      else loadThread(contactId).catch(() => {}); // slim event: refetch
    };
    contactChannel.bind('message:created', onMessage);
    contactChannel.bind('message:read', onMessage);
    contactChannel.bind('message:status', onMessage);
    contactChannel.bind('pusher:subscription_error', (status) =>
      console.warn(`private-contact-${contactId} refused`, status)
    );
    state.contactChannel = contactChannel;

    const presence = pusher.subscribe(`presence-contact-${contactId}`);
    presence.bind('pusher:subscription_succeeded', renderViewers);
    presence.bind('pusher:member_added', renderViewers);
    presence.bind('pusher:member_removed', (member) => {
      stopTyping(member.id);
      renderViewers();
    });
    presence.bind('client-typing', (data, metadata) => {
      const userId = metadata && metadata.user_id;
      if (!userId || userId === state.me.id) return;
      const name = (data && data.name) || 'Someone';
      const known = state.typers.get(userId);
      if (known) clearTimeout(known.timer);
      state.typers.set(userId, { name, timer: setTimeout(() => stopTyping(userId), TYPING_SHOWN_FOR_MS) });
      renderTyping();
    });
    state.presenceChannel = presence;
  }

  function stopTyping(userId) {
    const typer = state.typers.get(userId);
    if (!typer) return;
    clearTimeout(typer.timer);
    state.typers.delete(userId);
    renderTyping();
  }

  function unsubscribeContact() {
    if (state.pusher) {
      if (state.contactChannel) state.pusher.unsubscribe(state.contactChannel.name);
      if (state.presenceChannel) state.pusher.unsubscribe(state.presenceChannel.name);
    }
    state.contactChannel = null;
    state.presenceChannel = null;
    for (const userId of [...state.typers.keys()]) stopTyping(userId);
    renderViewers();
  }

  function teardownRealtime() {
    unsubscribeContact();
    stopPolling();
    if (state.pusher) state.pusher.disconnect();
    state.pusher = null;
    window.inbox.pusher = null;
    state.everConnected = false;
  }

  /** Without realtime the page still shows new messages, a little later. */
  function startPolling() {
    if (!state.pollTimer) state.pollTimer = setInterval(refetch, POLL_WHEN_OFFLINE_MS);
  }

  function stopPolling() {
    clearInterval(state.pollTimer);
    state.pollTimer = null;
  }

  // ------------------------------------------------------------------ start

  async function start(user) {
    state.me = user;
    el.me.textContent = user.name;
    show(el.me, true);
    show(el.logout, true);
    show(el.loginView, false);
    show(el.inboxView, true);
    setConnection('connecting', 'Connecting…');
    loadTeammates();
    await loadContacts();
    await connectRealtime();
  }

  async function boot() {
    el.loginForm.addEventListener('submit', login);
    el.logout.addEventListener('click', logout);
    el.composerForm.addEventListener('submit', send);
    el.composer.addEventListener('input', composerInput);
    el.composer.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) send(e);
    });
    el.loadEarlier.addEventListener('click', () => loadEarlier().catch((e) => console.warn(e)));
    el.moreContacts.addEventListener('click', () => loadMoreContacts().catch((e) => console.warn(e)));
    window.addEventListener('offline', () => setConnection('offline', 'Offline: no network'));

    let user;
    try {
      // Not GET /api/me: logged out, that answers 401, which the browser
      // logs as an error. This answers 200 with `user: null` instead.
      ({ user } = await api('GET', '/api/auth/session'));
    } catch (e) {
      setConnection('unavailable', `The server cannot be reached: ${e.message}`);
      return;
    }
    if (!user) {
      showLogin();
      return;
    }
    try {
      await start(user);
    } catch (e) {
      if (e.status === 401) return; // the session ended meanwhile: showLogin() already ran
      setConnection('unavailable', `The server cannot be reached: ${e.message}`);
    }
  }

  window.inbox = { pusher: null, state };
  boot();
})();
