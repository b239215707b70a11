// The chat cluster's client for browsers and Node.js: docs/client-js.md says how to use it,
// docs/protocol.md is the protocol it speaks. No dependencies: in a browser it uses the
// page's WebSocket; in Node.js pass one in (the `ws` package: `{WebSocket}`).
//
// What it does for the application: reconnects after any close that is not final, with
// full-jitter backoff and no sooner than the server asks (`server_shutdown.retryAfterMs`,
// a refused upgrade's Retry-After where the WebSocket implementation shows it); comes back
// as the same user (its userId and resume token, or a fresh JWT from `getToken`) into the
// same room from its last seq (`since`/`epoch`), pages a resume's gap in before anything
// newer, and tells the application whether nothing was missed (`recovered`); keeps the
// member list by the presence-order rule; sends every message with an idempotency key
// (`clientId`) and sends it again after a reconnect until it is acknowledged, so that it
// is stored once; holds messages written while offline in a bounded queue.

const FINAL_CLOSES = new Set([1003, 1008, 1009]);  // and 4000-4999: do not come back
const DEFAULTS = {
  backoffFirstMs: 250, backoffMaxMs: 8000,  // reconnects: uniform(0, min(max, first * 2^n))
  heartbeatMs: 25000,  // a ping this often; no answer within half of it: the path is dead
  queueLimit: 100,  // messages waiting for their acknowledgement (offline ones included)
  refreshBeforeMs: 30000,  // a JWT is replaced this long before it expires (with getToken)
  pageRetryMs: 1000,  // a history page refused as rate_limited is asked for again after it
};
const SEND_REFUSALS = new Set(["text_required", "text_too_long", "invalid_text",
                               "rate_limited", "muted", "not_in_room"]);

/** An error the server answered (its `code` is the protocol's), or the client's own:
 *  `closed`, `queue_full`, `left_room`, `timeout`, `disconnected`. */
export class ChatError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "ChatError";
    this.code = code;
  }
}

/** A close code the server means as "do not come back".
 *  @param {number} code @returns {boolean} */
export function isFinalClose(code) {
  return FINAL_CLOSES.has(code) || (code >= 4000 && code < 5000);
}

/** A fresh idempotency key: 16 hex characters. @returns {string} */
export function newClientId() {
  const bytes = new Uint8Array(8);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A promise with its settling functions.
 *  @returns {{promise: Promise<any>, resolve: (value?: any) => void, reject: (error: Error) => void}} */
function deferred() {
  /** @type {(value?: any) => void} */
  let resolve = () => {};
  /** @type {(error: Error) => void} */
  let reject = () => {};
  const promise = new Promise((yes, no) => { resolve = yes; reject = no; });
  promise.catch(() => {});  // a waiter nobody awaits must not be an unhandled rejection
  return {promise, resolve, reject};
}

export class ChatClient {
  /**
   * @param {string} url the cluster's WebSocket endpoint, e.g. `wss://chat.example.com/ws`
   * @param {import("./chat-client").ChatClientOptions} [options]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = {...DEFAULTS, ...options};
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) {
      throw new TypeError("no WebSocket here: pass {WebSocket} (in Node.js, the ws package)");
    }
    this.name = options.name ?? null;
    this.jwt = options.token ?? null;
    /** @type {"idle"|"connecting"|"online"|"reconnecting"|"closed"} */
    this.state = "idle";
    this.userId = null;
    this.node = null;
    this.resumeToken = null;  // anonymous mode: proves this client is userId again
    this.expiresAt = null;  // JWT mode: the token's exp, in seconds
    this.room = null;
    this.epoch = null;
    this.lastSeq = 0;  // the last seq delivered in `room`
    this.presence = 0;  // the presence version the member list reflects
    this.count = 0;
    this.large = false;
    this.memberList = new Map();  // userId -> name
    this.connections = 0;  // connections opened so far
    this.outbox = [];  // messages sent or queued, not yet acknowledged
    this.listeners = new Map();
    this.ws = null;
    this.authed = false;  // the current connection got auth_success
    this.joined = false;  // ... and room_joined for `room`
    this.requests = [];  // this connection's requests, oldest first: replies come in order
    this.attempt = 0;
    this.retryAfterMs = 0;
    this.retriedToken = false;
    this.closeReason = null;
    this.backfill = null;  // a resume's messages while older ones are paged in
    this.held = [];  // live messages that came meanwhile
    this.joinedSeq = 0;
    this.connecting = null;  // connect()'s promise
    this.joining = null;  // join()'s promise
    this.timers = {};
  }

  // --- the application's interface -----------------------------------------------------

  /**
   * Subscribe to an event; returns the function that unsubscribes.
   * @template {keyof import("./chat-client").ChatEvents} E
   * @param {E} event @param {import("./chat-client").ChatEvents[E]} listener
   * @returns {() => void}
   */
  on(event, listener) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  /**
   * @template {keyof import("./chat-client").ChatEvents} E
   * @param {E} event @param {import("./chat-client").ChatEvents[E]} listener
   */
  off(event, listener) {
    this.listeners.get(event)?.delete(listener);
  }

  /** Connect and authenticate; resolves with {userId, name, node}. After a close (a name
   *  that was taken, say) it connects again as the same user, with `name` if given.
   *  @param {{name?: string}} [options]
   *  @returns {Promise<import("./chat-client").Identity>} */
  connect({name} = {}) {
    if (name !== undefined) this.name = name;
    if (this.connecting && this.state !== "closed") return this.connecting.promise;
    this.closeReason = null;
    this.connecting = deferred();
    this.attempt = 0;
    this.open();
    return this.connecting.promise;
  }

  /** Join `room` (leaving the current one); resolves with the room's snapshot. Joining the
   *  room the client is in asks for a fresh snapshot. Offline, it joins on reconnect.
   *  @param {string} room @returns {Promise<import("./chat-client").Joined>} */
  join(room) {
    if (room !== this.room) this.moveTo(room);
    this.joining?.reject(new ChatError("left_room", `joining ${room} instead`));
    this.joining = deferred();
    if (this.authed) this.sendJoin();
    return this.joining.promise;
  }

  /** Leave the current room. @returns {Promise<void>} */
  async leave() {
    const room = this.room;
    if (room === null) return;
    this.moveTo(null);
    if (this.authed) await this.request({type: "leave"}, "room_left");
  }

  /**
   * Send a message to the current room; resolves with its seq once the room stored it.
   * Offline, it waits in the queue; a message not acknowledged when the connection drops is
   * sent again (same clientId: stored once) after the resume.
   * @param {string} text @param {{clientId?: string}} [options] @returns {Promise<number>}
   */
  send(text, {clientId = newClientId()} = {}) {
    if (this.state === "closed") return Promise.reject(new ChatError("closed", "the client is closed"));
    if (this.room === null) return Promise.reject(new ChatError("not_in_room", "join a room first"));
    if (this.outbox.length >= this.options.queueLimit) {
      return Promise.reject(new ChatError("queue_full",
                                          `${this.outbox.length} messages await acknowledgement`));
    }
    const entry = {clientId, text, room: this.room, sentOn: 0, ...deferred()};
    this.outbox.push(entry);
    this.emit("pending", this.pending());
    this.flush();
    return entry.promise;
  }

  /** Messages not yet acknowledged, oldest first.
   *  @returns {{clientId: string, text: string}[]} */
  pending() {
    return this.outbox.map(({clientId, text}) => ({clientId, text}));
  }

  /** Older messages of the current room: those below seq `before`.
   *  @param {number} before @param {number} [limit]
   *  @returns {Promise<{messages: import("./chat-client").Message[], more: boolean, epoch: string}>} */
  history(before, limit) {
    const frame = {type: "history", before};
    if (limit !== undefined) frame.limit = limit;
    return this.request(frame, "history");
  }

  /** A page of the room directory. @param {number} [offset] @param {number} [limit]
   *  @returns {Promise<{rooms: {name: string, userCount: number}[], total: number, next: number | null}>} */
  listRooms(offset = 0, limit = 100) {
    return this.request({type: "list_rooms", offset, limit}, "room_list");
  }

  /** The member list of `room` (the current room's; empty in a large room).
   *  @param {string | null} [room] @returns {import("./chat-client").Member[]} */
  members(room = this.room) {
    if (room !== this.room) return [];
    return [...this.memberList].map(([userId, name]) => ({userId, name}));
  }

  /** The member count of `room` (the current room's).
   *  @param {string | null} [room] @returns {number} */
  userCount(room = this.room) {
    return room === this.room ? this.count : 0;
  }

  /** Close for good: no reconnect; messages still queued fail with `closed`.
   *  @param {number} [code] @param {string} [reason] */
  close(code = 1000, reason = "") {
    this.stop("closed by the application");
    const ws = this.ws;
    this.detach();
    if (ws && ws.readyState <= 1) ws.close(code, reason);
  }

  // --- the connection -------------------------------------------------------------------

  emit(event, ...args) {
    for (const listener of [...(this.listeners.get(event) ?? [])]) {
      try {
        listener(...args);
      } catch (error) {  // the application's bug must not break the protocol
        setTimeout(() => { throw error; });
      }
    }
  }

  setState(state, detail = "") {
    if (this.state === state && !detail) return;
    this.state = state;
    this.emit("state", state, detail);
  }

  open() {
    clearTimeout(this.timers.reconnect);
    this.connections += 1;
    this.setState(this.connections > 1 ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new this.WebSocket(this.url);
    } catch (error) {
      return this.stop(`cannot open ${this.url}: ${error.message}`);
    }
    this.ws = ws;
    if (typeof ws.on === "function") {  // the ws package shows why an upgrade was refused
      ws.on("unexpected-response", (_request, response) => {
        this.retryAfterMs = 1000 * Number(response.headers["retry-after"] ?? 0) || 0;
        ws.terminate();
      });
    }
    ws.onopen = () => this.authenticate(ws);
    ws.onmessage = (frame) => {
      if (this.ws === ws) this.receive(frame.data);
    };
    ws.onerror = () => {};  // onclose follows, with the code
    ws.onclose = (close) => {
      if (this.ws === ws) this.dropped(close.code, close.reason);
    };
  }

  async authenticate(ws) {
    if (this.ws !== ws) return;
    /** @type {Record<string, unknown>} */
    let frame = {type: "auth", name: this.name};
    if (this.options.getToken && (this.jwt === null || this.connections > 1)) {
      try {
        this.jwt = await this.options.getToken();
      } catch (error) {
        return this.drop(`getToken failed: ${error.message}`);
      }
    }
    if (this.jwt !== null) frame = {type: "auth", token: this.jwt};
    else if (this.resumeToken !== null) Object.assign(frame, {userId: this.userId, token: this.resumeToken});
    if (this.ws !== ws) return;
    this.heartbeat();
    this.request(frame, "auth_success").catch(() => {});
  }

  /** The connection ended (or was given up): reconnect, unless told not to. */
  dropped(code, reason) {
    this.detach();
    if (this.closeReason !== null) return;
    if (code === 4001 && this.options.getToken && !this.retriedToken) {
      this.retriedToken = true;  // a token refused or expired: one more try with a fresh one
    } else if (isFinalClose(code)) {
      return this.stop(`closed by the server with ${code} ${reason || ""}`.trim(), code);
    }
    const ceiling = Math.min(this.options.backoffMaxMs,
                             this.options.backoffFirstMs * 2 ** Math.min(this.attempt, 30));
    const delay = Math.max(this.retryAfterMs, Math.random() * ceiling);
    this.attempt += 1;
    this.retryAfterMs = 0;
    this.setState("reconnecting", `in ${Math.round(delay)} ms`);
    this.timers.reconnect = setTimeout(() => this.open(), delay);
  }

  /** Give up on the connection now and reconnect (a dead path may never deliver its
   *  close; the application may know the network changed). @param {string} [why] */
  drop(why = "dropped by the application") {
    const ws = this.ws;
    if (!ws) return;
    this.detach();
    try { ws.close(); } catch { /* already closing */ }
    this.dropped(1006, why);
  }

  detach() {
    if (this.ws) this.ws.onopen = this.ws.onmessage = this.ws.onclose = null;
    this.ws = null;
    this.authed = this.joined = false;
    for (const request of this.requests.splice(0)) {
      request.reject(new ChatError("disconnected", "the connection dropped before the answer"));
    }
    clearTimeout(this.timers.heartbeat);
    clearTimeout(this.timers.pong);
    clearTimeout(this.timers.page);
  }

  /** Stop reconnecting. `cause` (a name that was taken) keeps the queue for connect(). */
  stop(why, code = null, cause = null) {
    clearTimeout(this.timers.reconnect);
    clearTimeout(this.timers.refresh);
    this.closeReason = why;
    const error = cause ?? new ChatError(code === null ? "closed" : `close_${code}`, why);
    this.connecting?.reject(error);
    this.joining?.reject(error);
    this.joining = null;
    if (cause === null) for (const entry of this.outbox.splice(0)) entry.reject(error);
    this.setState("closed", why);
  }

  heartbeat() {
    clearTimeout(this.timers.heartbeat);
    this.timers.heartbeat = setTimeout(() => {
      this.request({type: "ping"}, "pong").catch(() => {});
      this.timers.pong = setTimeout(() => this.drop("no answer to a ping"),
                                    this.options.heartbeatMs / 2);
    }, this.options.heartbeatMs);
  }

  write(frame) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Send a request; its answer is the next reply of `type` or an error: the server
   *  answers one connection's requests in order. */
  request(frame, type) {
    const waiter = deferred();
    if (!this.write(frame)) {
      waiter.reject(new ChatError("disconnected", "not connected"));
      return waiter.promise;
    }
    this.requests.push({type, frame, ...waiter});
    return waiter.promise;
  }

  /** The oldest waiting request, when `event` answers it. */
  answered(event) {
    const request = this.requests[0];
    if (!request || (event.type !== "error" && event.type !== request.type)) return null;
    return this.requests.shift();
  }

  receive(data) {
    clearTimeout(this.timers.pong);
    this.heartbeat();
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    const request = this.answered(event);
    if (typeof event?.type === "string" && Object.hasOwn(HANDLERS, event.type)) {
      HANDLERS[event.type].call(this, event, request);
    }
    if (request && event.type !== "error") request.resolve(event);
  }

  // --- rooms and messages ---------------------------------------------------------------

  moveTo(room) {
    for (const entry of this.outbox.splice(0)) {
      entry.reject(new ChatError("left_room", `left ${this.room} before it was acknowledged`));
    }
    Object.assign(this, {room, epoch: null, lastSeq: 0, presence: 0, count: 0, large: false,
                         backfill: null, held: [], joined: false});
    this.memberList.clear();
  }

  sendJoin() {
    const frame = {type: "join", room: this.room};
    if (this.epoch !== null) Object.assign(frame, {since: this.lastSeq, epoch: this.epoch});
    this.request(frame, "room_joined").catch(() => {});
  }

  /** Write every queued message not yet sent on this connection. */
  flush() {
    if (!this.joined || this.backfill) return;
    for (const entry of this.outbox) {
      if (entry.sentOn === this.connections) continue;
      if (!this.write({type: "message", text: entry.text, clientId: entry.clientId})) return;
      entry.sentOn = this.connections;
      this.requests.push({type: "message_sent", clientId: entry.clientId,
                          resolve: () => {}, reject: () => {}});
    }
  }

  acknowledge(clientId, seq) {
    const index = this.outbox.findIndex((entry) => entry.clientId === clientId);
    if (index < 0) return;
    const [entry] = this.outbox.splice(index, 1);
    entry.resolve(seq);
    this.emit("pending", this.pending());
  }

  refuse(clientId, error) {
    const index = this.outbox.findIndex((entry) => entry.clientId === clientId);
    if (index < 0) return;
    const [entry] = this.outbox.splice(index, 1);
    entry.reject(error);
    this.emit("pending", this.pending());
  }

  /** Deliver a message once: seqs at or below the last one delivered are repeats. */
  accept(message) {
    if (message.clientId) this.acknowledge(message.clientId, message.seq);
    if (message.seq <= this.lastSeq) return;
    this.lastSeq = message.seq;
    this.emit("message", message);
  }

  /** A resume's messages, delivered once every one after the last delivered is at hand:
   *  while the room keeps older ones, page back for them first (live ones wait). */
  takeHistory(messages, more) {
    if (more && messages.length && messages[0].seq > this.lastSeq + 1) {
      this.backfill = messages;
      return this.pageBack();
    }
    const held = this.held;
    Object.assign(this, {backfill: null, held: []});
    for (const message of messages.concat(held)) this.accept(message);
    this.lastSeq = Math.max(this.lastSeq, this.joinedSeq);
    this.attempt = 0;
    this.setState("online", `${this.room} on ${this.node}`);
    this.flush();
  }

  pageBack() {
    if (!this.backfill || !this.authed) return;
    const waiter = this.request({type: "history", before: this.backfill[0].seq}, "history");
    waiter.catch(() => {});
    if (this.requests.length) this.requests[this.requests.length - 1].backfill = true;
  }

  membersChanged() {
    this.emit("members", {room: this.room, members: this.members(), userCount: this.count,
                          large: this.large});
  }

  /** The presence rule: skip what the snapshot holds; a skipped version means changes
   *  were missed: join again for a fresh snapshot. */
  applies(event) {
    if (event.room !== this.room || event.presence <= this.presence) return false;
    if (event.presence > this.presence + 1) this.sendJoin();
    this.presence = event.presence;
    this.count = event.userCount;
    return true;
  }

  scheduleRefresh(exp) {
    clearTimeout(this.timers.refresh);
    this.expiresAt = exp;
    if (!this.options.getToken || !exp) return;
    const wait = Math.max(0, exp * 1000 - Date.now() - this.options.refreshBeforeMs);
    this.timers.refresh = setTimeout(async () => {
      try {
        this.jwt = await this.options.getToken();
        await this.request({type: "refresh", token: this.jwt}, "refreshed");
      } catch (error) {
        this.emit("error", error instanceof ChatError ? error
          : new ChatError("refresh_failed", error.message));
      }
    }, Math.min(wait, 2 ** 31 - 1));
  }

  // --- refusals ---------------------------------------------------------------------------

  /** A message's refusal: the server will not store it. `unknown_outcome` is no refusal:
   *  nobody can say whether it was stored, so it is sent again after a resume, where its
   *  clientId keeps it stored once. */
  sendFailed(clientId, error) {
    if (error.code !== "unknown_outcome") return this.refuse(clientId, error);
    this.emit("error", error);
    this.drop(error.code);
  }

  joinFailed(request, error) {
    if (error.code === "rate_limited" && request.frame.since !== undefined) {  // a resume
      this.timers.page = setTimeout(() => this.authed && this.sendJoin(), this.options.pageRetryMs);
      return;
    }
    if (error.code === "unavailable") return this.drop(error.code);  // again, with backoff
    this.joining?.reject(error);
    this.joining = null;
    this.moveTo(null);
    this.emit("error", error);
  }

  pageFailed(request, error) {
    if (error.code === "rate_limited") {  // pages share the join allowance
      this.timers.page = setTimeout(() => this.pageBack(), this.options.pageRetryMs);
      return;
    }
    this.emit("error", error);
    this.takeHistory(this.backfill, false);  // what is missing shows as a gap
  }

  /** `auth` refused. A JWT refused with a `getToken` gets one more try with a fresh token
   *  (4001 follows); a name that is taken keeps the session: connect({name}) resumes it. */
  authFailed(error) {
    this.emit("error", error);
    if (error.code === "auth_failed" && this.options.getToken && !this.retriedToken) return;
    const ws = this.ws;
    this.detach();
    ws?.close(1000);
    this.stop(error.message, null, error.code === "name_taken" ? error : null);
  }
}

/** What the client does with each event the server sends: `this` is the client, `request`
 *  the request it answers (if any). */
const HANDLERS = {
  auth_success(event) {
    Object.assign(this, {userId: event.userId, name: event.name, node: event.node,
                         authed: true, retriedToken: false});
    if (event.token) this.resumeToken = event.token;
    this.scheduleRefresh(event.exp);
    this.connecting?.resolve({userId: event.userId, name: event.name, node: event.node});
    if (this.room !== null) return this.sendJoin();
    this.attempt = 0;
    this.setState("online", `on ${this.node}`);
  },
  refreshed(event) { this.scheduleRefresh(event.exp); },
  room_joined(event) {
    if (event.room !== this.room) return;
    if (event.epoch !== this.epoch) this.lastSeq = 0;  // another incarnation: old seqs mean nothing
    Object.assign(this, {epoch: event.epoch, presence: event.presence, count: event.userCount,
                         large: Boolean(event.large), joinedSeq: event.seq, backfill: null,
                         held: [], joined: true});
    this.memberList = new Map(event.members.map((m) => [m.userId, m.name]));
    const snapshot = {room: event.room, seq: event.seq, epoch: event.epoch, more: event.more,
                      members: this.members(), userCount: event.userCount, large: this.large};
    if ("recovered" in event) {
      snapshot.recovered = event.recovered;
      this.emit("recovered", {room: event.room, recovered: event.recovered});
    }
    this.emit("joined", snapshot);
    this.membersChanged();
    this.joining?.resolve(snapshot);
    this.joining = null;
    this.takeHistory(event.history, event.recovered === true && event.more);
  },
  room_left(event) {
    if (event.reason === "kicked" && event.room === this.room) this.moveTo(null);
    this.emit("left", {room: event.room, reason: event.reason ?? null});
  },
  history(event, request) {
    if (request?.backfill && event.room === this.room && event.epoch === this.epoch) {
      this.takeHistory(event.messages.concat(this.backfill), event.more);
    }
  },
  message(event) {
    if (event.room !== this.room) return;
    if (this.backfill) return void this.held.push(event);
    this.accept(event);
  },
  message_sent(event) { this.acknowledge(event.clientId, event.seq); },
  message_deleted(event) { this.emit("deleted", {room: event.room, seq: event.seq}); },
  messages_lost(event) {  // those seqs will never come: say so, in line
    if (event.room !== this.room || event.to <= this.lastSeq) return;
    this.lastSeq = event.to;
    this.emit("lost", {room: event.room, from: event.from, to: event.to});
  },
  history_reset(event) {  // a failover forked the history: the new epoch's come next
    if (event.room !== this.room) return;
    Object.assign(this, {epoch: event.epoch, lastSeq: Math.min(this.lastSeq, event.seq)});
    this.emit("reset", {room: event.room, seq: event.seq, epoch: event.epoch});
  },
  user_joined(event) {
    if (!this.applies(event)) return;
    this.memberList.set(event.userId, event.user);
    this.emit("presence", {room: event.room, userId: event.userId, name: event.user, joined: true});
    this.membersChanged();
  },
  user_left(event) {
    if (!this.applies(event)) return;
    this.memberList.delete(event.userId);
    this.emit("presence", {room: event.room, userId: event.userId, name: event.user, joined: false});
    this.membersChanged();
  },
  user_count(event) {  // a large room: the newest count; versions skip by design
    if (event.room !== this.room || event.presence <= this.presence) return;
    Object.assign(this, {presence: event.presence, count: event.userCount, large: true});
    this.memberList.clear();
    this.membersChanged();
  },
  ping(event) { this.write({type: "pong", timestamp: event.timestamp}); },
  server_shutdown(event) {
    this.retryAfterMs = event.retryAfterMs || 0;
    this.emit("shutdown", {retryAfterMs: this.retryAfterMs});
  },
  error(event, request) {
    const error = new ChatError(event.code, event.message);
    const failed = {message_sent: () => this.sendFailed(request.clientId, error),
                    room_joined: () => this.joinFailed(request, error),
                    auth_success: () => this.authFailed(error)}[request?.type];
    if (request?.backfill) return this.pageFailed(request, error);
    if (failed) return failed();
    if (request) return request.reject(error);
    this.emit("error", error);
  },
};
