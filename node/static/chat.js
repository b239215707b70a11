// The browser chat page: what users see, on top of the SDK (chat-client.js), which speaks the
// protocol (reconnects, resumes, pages a resume's gap in, keeps the member list, resends
// unacknowledged messages). This file only shows: messages once and in order, the members,
// the rooms with an unread marker, the user's own messages as pending until the room stored
// them, and a stale mark on the members and counts while the cluster cannot be reached.
import {ChatClient} from "./chat-client.js";

const ROOM_LIST_EVERY_MS = 15000;  // the directory's counts, refreshed while online

const chat = {
  client: null,
  room: "general",
  messages: [],  // the current room's, in seq order
  presence: [],  // joins and leaves seen in the current room
  lastRead: new Map(),  // room -> {epoch, seq}: the last message shown when the user left it
  returning: null,  // the current room's lastRead while its join fills the log
  unread: 0,  // messages of the current room that came while the user was not looking
  more: false,  // the room keeps older messages than the first shown
  rooms: [],
  get state() { return pageState(); },
  get userId() { return this.client?.userId ?? null; },
  get connections() { return this.client?.connections ?? 0; },
  get pending() { return this.client?.pending() ?? []; },
};
window.chat = chat;  // for the curious, and for the browser tests
let nameTaken = false;

const $ = (id) => document.getElementById(id);

function pageState() {
  if (nameTaken) return "name-taken";
  return chat.client?.state ?? "offline";
}

function showState(detail = "") {
  const state = pageState();
  $("state").dataset.state = state;
  $("state").textContent = detail ? `${state}: ${detail}` : state;
  $("text").disabled = $("say").disabled = chat.client?.state !== "online"
    && chat.client?.state !== "reconnecting";  // reconnecting: what is written waits
  // What the page shows of the room while it cannot reach the cluster is the last it knew.
  const stale = state !== "online";
  for (const id of ["members-box", "rooms-box"]) $(id).classList.toggle("stale", stale);
  $("stale-note").hidden = !stale || chat.client === null;
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

// --- unread: what came while the user was elsewhere (another room, tab or window) ---------

function looking() {
  return document.visibilityState === "visible" && document.hasFocus();
}

function markRead() {
  chat.unread = 0;
  showUnread();
}

/** The divider above the first unread message, and the counts in the title and room list. */
function showUnread() {
  $("unread")?.remove();
  document.title = chat.unread ? `(${chat.unread}) Chat` : "Chat";
  showRooms();
  if (!chat.unread) return;
  const first = chat.messages.at(-chat.unread);
  const divider = document.createElement("li");
  divider.id = "unread";
  divider.textContent = `${chat.unread} new`;
  document.querySelector(`#log li[data-seq="${first.seq}"]`)?.before(divider);
}

function showMessage(message) {
  chat.messages.push(message);
  const li = messageItem(message);
  $("log").append(li);
  const back = chat.returning;
  const unseen = back ? back.epoch !== chat.client.epoch || message.seq > back.seq : !looking();
  if (message.userId === chat.client.userId) chat.unread = 0;  // who writes has read the rest
  else if (unseen) chat.unread += 1;
  showUnread();
  li.scrollIntoView({block: "end"});
}

// --- the room ------------------------------------------------------------------------------

function showEarlierButton() {
  let item = $("earlier");
  if (!item) {
    item = document.createElement("li");
    item.id = "earlier";
    const button = document.createElement("button");
    button.textContent = "Earlier messages";
    button.onclick = showEarlier;
    item.append(button);
  }
  $("log").prepend(item);
  item.hidden = !chat.more;
}

// Older messages than the first shown, paged in on request, above it.
async function showEarlier() {
  if (!chat.messages.length) return;
  const page = await chat.client.history(chat.messages[0].seq);
  const first = chat.messages[0]?.seq ?? Infinity;
  const older = page.messages.filter((m) => m.seq < first);
  chat.messages.unshift(...older);
  chat.more = page.more;
  $("earlier").after(...older.map(messageItem));
  showEarlierButton();
}

function showMembers({members, userCount, large}) {
  $("member-count").textContent = large ? `${userCount}, too many to list` : String(userCount);
  $("members").replaceChildren(...members.map((m) => m.name).sort().map((name) => {
    const li = document.createElement("li");
    li.textContent = name;
    return li;
  }));
}

function showPending() {
  $("outbox").replaceChildren(...chat.pending.map(({text}) => {
    const li = document.createElement("li");
    li.className = "pending";
    li.textContent = text;
    li.title = "sending: not yet stored by the room";
    return li;
  }));
}

function showRooms(rooms = chat.rooms) {
  chat.rooms = rooms;
  $("rooms").replaceChildren(...rooms.map((room) => {
    const button = document.createElement("button");
    const unread = room.name === chat.room && chat.unread ? ` • ${chat.unread} new` : "";
    button.textContent = `${room.name} (${room.userCount})${unread}`;
    button.setAttribute("aria-current", String(room.name === chat.room));
    button.classList.toggle("unread", Boolean(unread));
    button.onclick = () => switchRoom(room.name);
    return button;
  }));
}

async function listRooms() {
  if (chat.state !== "online") return;
  try {
    showRooms((await chat.client.listRooms()).rooms);
  } catch {
    // offline meanwhile: the list stays, marked stale
  }
}

function switchRoom(room) {
  if (room === chat.room) return;
  const last = chat.messages.at(-1);
  if (last) chat.lastRead.set(chat.room, {epoch: chat.client.epoch, seq: last.seq});
  Object.assign(chat, {room, messages: [], presence: [], unread: 0, more: false,
                       returning: chat.lastRead.get(room) ?? null});
  $("log").replaceChildren();
  chat.client.join(room).catch((error) => notice(`${error.code}: ${error.message}`));
}

function onJoined(snapshot) {
  if (snapshot.recovered === false) notice("some messages were missed while away");
  if (!chat.messages.length) chat.more = snapshot.more;
  showEarlierButton();
  listRooms();
}

// --- the connection ---------------------------------------------------------------------

function start(name, token) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const client = new ChatClient(`${scheme}://${location.host}/ws`,
                                token ? {token} : {name});
  chat.client = client;
  client.on("state", (state, detail) => {
    if (state === "online") chat.returning = null;  // the join's messages are all shown
    showState(detail);
  });
  client.on("joined", onJoined);
  client.on("message", showMessage);
  client.on("members", showMembers);
  client.on("presence", (event) => chat.presence.push(event));
  client.on("pending", showPending);
  client.on("lost", ({from, to}) => notice(`messages ${from}–${to} of this room were lost`));
  client.on("reset", ({seq}) => notice(`a failover: messages after #${seq} may have been lost`));
  client.on("deleted", ({seq}) => {  // the application deleted it: its tombstone shows
    const message = chat.messages.find((m) => m.seq === seq);
    if (!message) return;
    Object.assign(message, {text: "", deleted: true});
    document.querySelector(`#log li[data-seq="${seq}"]`)?.replaceWith(messageItem(message));
  });
  client.on("error", (error) => {
    notice(`${error.code}: ${error.message.replace(`${error.code}: `, "")}`);
    if (error.code === "name_taken" || error.code === "invalid_name") pickAnotherName();
  });
  connect();
}

async function connect(name) {
  nameTaken = false;
  try {
    await chat.client.connect(name === undefined ? {} : {name});
    if (chat.client.room === null) await chat.client.join(chat.room);
  } catch (error) {
    if (error.code !== "name_taken" && error.code !== "invalid_name") $("connect").disabled = false;
  }
}

// The name was refused: on a resume too (somebody took it while this user was away past the
// server's grace). Not the end of the session: the user, room, position and unsent messages
// are kept; Connect with another name resumes as the same user.
function pickAnotherName() {
  nameTaken = true;
  showState("choose another name and connect again");
  $("connect").disabled = false;
  $("name").select();
  $("name").focus();
}

setInterval(listRooms, ROOM_LIST_EVERY_MS);
for (const seen of ["focus", "visibilitychange"]) {
  (seen === "focus" ? window : document).addEventListener(seen, () => looking() && markRead());
}

$("login").onsubmit = (submit) => {
  submit.preventDefault();
  const name = $("name").value.trim() || null;
  $("connect").disabled = true;
  if (chat.client === null) return start(name, $("token").value.trim() || null);
  connect(name);
};

$("send").onsubmit = (submit) => {
  submit.preventDefault();
  const text = $("text").value;
  if (!text.trim()) return;
  $("text").value = "";
  chat.client.send(text).catch((error) => {
    if (error.code !== "closed") notice(`not sent (${error.code}): ${text}`);
  });
};
