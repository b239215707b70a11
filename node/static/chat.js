// The browser chat: the protocol of docs/protocol.md, with the resume rules of the Python
// client library (node/client.py): after any close that is not final it reconnects with
// backoff (or after the server's retryAfterMs), authenticates as the same user (userId and
// token, or the same JWT) and rejoins its room with since/epoch, so that every message is
// shown once, in seq order, and the room sees no leave/join flap.
"use strict";

const FINAL_CLOSES = new Set([1003, 1008, 1009]);  // and 4000-4999: do not come back
const BACKOFF_MS = {first: 250, max: 8000};
const ROOM_LIST_EVERY_MS = 15000;  // the directory's counts, refreshed while online

const chat = {
  state: "offline", name: null, jwt: null, userId: null, token: null, node: null,
  room: "general", epoch: null, lastSeq: 0, messages: [], members: new Map(),
  presenceVersion: 0,  // the room's presence version that `members` reflects
  userCount: 0, large: false,  // large: more members than the server lists (only the count)
  connections: 0, ws: null, retryAfterMs: 0, backoffMs: BACKOFF_MS.first, stopped: null,
  stoppedState: "stopped",
  pending: new Map(),  // clientId -> text: sent, not yet seen stored; sent again after a resume
  presence: [],  // user_joined / user_left events seen
  more: false,  // the room keeps older messages than the first shown
  joinedSeq: 0,  // the room's seq of the last room_joined
  backfill: null, held: [],  // a resume's gap being paged in, and live messages meanwhile
};
window.chat = chat;  // for the curious, and for the browser tests

const $ = (id) => document.getElementById(id);

function setState(state, detail) {
  chat.state = state;
  $("state").dataset.state = state;
  $("state").textContent = detail ? `${state}: ${detail}` : state;
  $("text").disabled = $("say").disabled = state !== "online";
}

function notice(text) {
  const li = document.createElement("li");
  li.className = "notice";
  li.textContent = text;
  $("log").append(li);
  li.scrollIntoView({block: "end"});
}

function messageItem(message) {
  const li = document.createElement("li");
  li.dataset.seq = message.seq;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = message.user;
  who.title = message.userId;
  li.append(who, document.createTextNode(message.deleted ? "(deleted)" : message.text));
  li.classList.toggle("deleted", Boolean(message.deleted));
  return li;
}

function showMessage(message) {
  chat.messages.push(message);
  const li = messageItem(message);
  $("log").append(li);
  li.scrollIntoView({block: "end"});
}

// Older messages than the first shown, paged in on request, above it.
function showEarlier(messages) {
  const first = chat.messages.length ? chat.messages[0].seq : Infinity;
  const older = messages.filter((m) => m.seq < first);
  chat.messages.unshift(...older);
  $("earlier").after(...older.map(messageItem));
}

function showEarlierButton() {
  let item = $("earlier");
  if (!item) {
    item = document.createElement("li");
    item.id = "earlier";
    const button = document.createElement("button");
    button.textContent = "Earlier messages";
    button.onclick = () => {
      if (chat.messages.length) send({type: "history", before: chat.messages[0].seq});
    };
    item.append(button);
  }
  $("log").prepend(item);
  item.hidden = !chat.more;
}

// A message is shown once: seqs at or below the last one shown are repeats.
function accept(message) {
  if (message.clientId) chat.pending.delete(message.clientId);
  if (message.seq <= chat.lastSeq) return;
  chat.lastSeq = message.seq;
  showMessage(message);
}

function showMembers() {
  $("member-count").textContent = chat.large ? `${chat.userCount}, too many to list`
    : String(chat.members.size);
  const list = $("members");
  list.replaceChildren(...[...chat.members.values()].sort().map((name) => {
    const li = document.createElement("li");
    li.textContent = name;
    return li;
  }));
}

function showRooms(rooms) {
  $("rooms").replaceChildren(...rooms.map((room) => {
    const button = document.createElement("button");
    button.textContent = `${room.name} (${room.userCount})`;
    button.setAttribute("aria-current", String(room.name === chat.room));
    button.onclick = () => switchRoom(room.name);
    return button;
  }));
}

function send(frame) {
  if (chat.ws && chat.ws.readyState === WebSocket.OPEN) chat.ws.send(JSON.stringify(frame));
}

function join() {
  const frame = {type: "join", room: chat.room};
  if (chat.epoch) Object.assign(frame, {since: chat.lastSeq, epoch: chat.epoch});
  send(frame);
}

// The presence rule (docs/protocol.md): a change the member list already holds is skipped;
// one that skips a version means changes were missed: take a fresh snapshot.
function applies(event) {
  if (event.presence <= chat.presenceVersion) return false;
  if (event.presence > chat.presenceVersion + 1) join();
  chat.presenceVersion = event.presence;
  chat.userCount = event.userCount;
  chat.presence.push(event);
  return true;
}

function switchRoom(room) {
  if (room === chat.room) return;
  Object.assign(chat, {room, epoch: null, lastSeq: 0, messages: [], presenceVersion: 0,
                       more: false});
  chat.members.clear();
  $("log").replaceChildren();
  join();
}

function onJoined(event) {
  if (event.epoch !== chat.epoch) {
    if (chat.epoch) notice("the room's history was reset");
    chat.lastSeq = 0;  // another incarnation of the room: old seqs mean nothing
  }
  if (event.recovered === false) notice("some messages were missed while away");
  chat.epoch = event.epoch;
  chat.members = new Map(event.members.map((m) => [m.userId, m.name]));
  Object.assign(chat, {presenceVersion: event.presence, userCount: event.userCount,
                       large: Boolean(event.large), joinedSeq: event.seq, backfill: null,
                       held: []});
  if (!chat.messages.length) chat.more = event.more;
  showMembers();
  takeHistory(event.history, event.recovered === true && event.more);
}

// A resume's messages are shown once every one after the last shown is at hand: while the
// room keeps older ones the page has not shown, page back for them first (live messages wait).
function takeHistory(messages, more) {
  if (more && messages.length && messages[0].seq > chat.lastSeq + 1) {
    chat.backfill = messages;
    return send({type: "history", before: messages[0].seq});
  }
  const held = chat.held;
  Object.assign(chat, {backfill: null, held: []});
  messages.concat(held).forEach(accept);
  chat.lastSeq = Math.max(chat.lastSeq, chat.joinedSeq);
  showEarlierButton();
  chat.backoffMs = BACKOFF_MS.first;
  setState("online", `${chat.room} on ${chat.node}`);
  send({type: "list_rooms"});
  // Not seen stored: sent again with the same clientId, which the server stores once (a
  // resend of one it has answers message_sent with "duplicate").
  chat.pending.forEach((text, clientId) => send({type: "message", text, clientId}));
}

const handlers = {
  auth_success(event) {
    Object.assign(chat, {userId: event.userId, node: event.node});
    if (event.token) chat.token = event.token;
    join();
  },
  room_joined: onJoined,
  history(event) {
    if (event.room !== chat.room || event.epoch !== chat.epoch) return;  // of another room,
    // or of a history since reset
    if (chat.backfill) return takeHistory(event.messages.concat(chat.backfill), event.more);
    chat.more = event.more;
    showEarlier(event.messages);
    showEarlierButton();
  },
  message(event) {
    if (chat.backfill) return chat.held.push(event);
    if (event.seq > chat.lastSeq + 1 && chat.lastSeq > 0) return join();  // a gap: resume
    accept(event);
  },
  messages_lost(event) {  // those seqs will never come: say so, and wait for the next
    if (event.room !== chat.room || event.to <= chat.lastSeq) return;
    notice(`messages ${event.from}–${event.to} of this room were lost`);
    chat.lastSeq = event.to;
  },
  history_reset(event) {  // a failover forked the history: the new epoch's come next
    if (event.room !== chat.room) return;
    notice(`a failover: messages after #${event.seq} may have been lost`);
    Object.assign(chat, {epoch: event.epoch, lastSeq: Math.min(chat.lastSeq, event.seq)});
  },
  user_joined(event) {
    if (applies(event)) chat.members.set(event.userId, event.user);
    showMembers();
  },
  user_left(event) {
    if (applies(event)) chat.members.delete(event.userId);
    showMembers();
  },
  user_count(event) {  // a large room: the newest count, versions may skip
    if (event.presence <= chat.presenceVersion) return;
    Object.assign(chat, {presenceVersion: event.presence, userCount: event.userCount,
                         large: true});
    chat.members.clear();
    showMembers();
  },
  room_list(event) { showRooms(event.rooms); },
  message_sent(event) { if (event.duplicate) chat.pending.delete(event.clientId); },
  message_deleted(event) {  // the application deleted it: its tombstone takes its place
    const message = chat.messages.find((m) => m.seq === event.seq);
    if (!message) return;
    Object.assign(message, {text: "", deleted: true});
    document.querySelector(`#log li[data-seq="${event.seq}"]`)?.replaceWith(messageItem(message));
  },
  ping(event) { send({type: "pong", timestamp: event.timestamp}); },
  server_shutdown(event) { chat.retryAfterMs = event.retryAfterMs || 0; },
  error(event) {
    if (event.code === "rate_limited" && chat.backfill) {  // pages share the join allowance
      return setTimeout(() => chat.backfill &&
                        send({type: "history", before: chat.backfill[0].seq}), 1000);
    }
    if (event.code === "unknown_outcome" && chat.pending.size) {  // stored or not: sent
      return chat.ws.close();  // again after the resume, with its clientId: stored once
    }
    notice(`${event.code}: ${event.message}`);
    if (event.code === "name_taken" || event.code === "invalid_name") pickAnotherName();
  },
};

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  chat.ws = ws;
  chat.connections += 1;
  setState(chat.connections > 1 ? "reconnecting" : "connecting");
  ws.onopen = () => {
    const auth = chat.jwt ? {type: "auth", token: chat.jwt} : {type: "auth", name: chat.name};
    if (!chat.jwt && chat.token) Object.assign(auth, {userId: chat.userId, token: chat.token});
    send(auth);
  };
  ws.onmessage = (frame) => {
    const event = JSON.parse(frame.data);
    const handle = handlers[event.type];
    if (handle) handle(event);
  };
  ws.onclose = (close) => {
    if (chat.ws !== ws) return;
    if (chat.stopped) return setState(chat.stoppedState, chat.stopped);
    if (FINAL_CLOSES.has(close.code) || (close.code >= 4000 && close.code < 5000)) {
      return stop(`closed with ${close.code} ${close.reason}`);
    }
    const delay = Math.max(chat.retryAfterMs, Math.random() * chat.backoffMs);
    chat.retryAfterMs = 0;
    chat.backoffMs = Math.min(chat.backoffMs * 2, BACKOFF_MS.max);
    setState("reconnecting", `in ${Math.round(delay)} ms`);
    setTimeout(connect, delay);
  };
}

function stop(why, state = "stopped") {
  chat.stopped = why;
  chat.stoppedState = state;
  setState(state, why);
  $("connect").disabled = false;
  if (chat.ws) chat.ws.close(1000);
}

// The name was refused: on a resume too (somebody took it while this user was away past the
// server's grace). Not the end of the session: the user, room, position and unsent messages
// are kept; Connect with another name resumes as the same user.
function pickAnotherName() {
  stop("choose another name and connect again", "name-taken");
  $("name").select();
  $("name").focus();
}

setInterval(() => { if (chat.state === "online") send({type: "list_rooms"}); },
            ROOM_LIST_EVERY_MS);

$("login").onsubmit = (submit) => {
  submit.preventDefault();
  chat.name = $("name").value.trim() || null;
  chat.jwt = $("token").value.trim() || null;
  chat.stopped = null;
  $("connect").disabled = true;
  connect();
};

$("send").onsubmit = (submit) => {
  submit.preventDefault();
  const text = $("text").value;
  if (!text.trim()) return;
  const clientId = [...crypto.getRandomValues(new Uint8Array(8))]  // plain http too
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  chat.pending.set(clientId, text);
  send({type: "message", text, clientId});
  $("text").value = "";
};
