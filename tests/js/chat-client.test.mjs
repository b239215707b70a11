// The JavaScript SDK's own tests, against a real node (tests/integration/test_sdk.py starts
// the clusters and runs `node --test` with their addresses): CHAT_URL is a cluster in
// anonymous mode, CHAT_JWT_URL one in JWT mode with CHAT_JWT_SECRET.
import assert from "node:assert/strict";
import {createHmac, randomBytes} from "node:crypto";
import {createRequire} from "node:module";
import {test} from "node:test";
import {ChatClient, ChatError, isFinalClose, newClientId} from "../../node/static/chat-client.js";

const WebSocket = createRequire(import.meta.url)("ws");  // Debian's node-ws (NODE_PATH)
const {CHAT_URL, CHAT_JWT_URL, CHAT_JWT_SECRET} = process.env;
const WAIT_MS = 10000;

const unique = (stem) => `${stem}-${randomBytes(4).toString("hex")}`;

/** A client closed when the test ends. */
function client(t, options = {}, url = CHAT_URL) {
  const chat = new ChatClient(url, {WebSocket, backoffFirstMs: 50, ...options});
  t.after(() => chat.close());
  return chat;
}

/** The next `event` of `chat` for which `wanted` holds. */
function next(chat, event, wanted = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${WAIT_MS} ms`)), WAIT_MS);
    const off = chat.on(event, (...args) => {
      if (!wanted(...args)) return;
      clearTimeout(timer);
      off();
      resolve(args[0]);
    });
  });
}

/** `count` messages of `chat`, once they came. */
function messages(chat, count) {
  const seen = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${seen.length} of ${count} messages`)), WAIT_MS);
    chat.on("message", (message) => {
      seen.push(message);
      if (seen.length === count) {
        clearTimeout(timer);
        resolve(seen);
      }
    });
  });
}

async function member(t, room, options = {}) {
  const chat = client(t, {name: unique("user"), ...options});
  await chat.connect();
  await chat.join(room);
  return chat;
}

function jwt(sub, expiresInSeconds) {
  const part = (object) => Buffer.from(JSON.stringify(object)).toString("base64url");
  const body = `${part({alg: "HS256", typ: "JWT"})}.${part({
    sub, name: sub, exp: Math.floor(Date.now() / 1000) + expiresInSeconds})}`;
  return `${body}.${createHmac("sha256", CHAT_JWT_SECRET).update(body).digest("base64url")}`;
}

test("connects by name, joins, and a send resolves with the stored seq", async (t) => {
  const room = unique("room");
  const chat = client(t, {name: unique("ann")});
  const hello = await chat.connect();
  assert.equal(chat.state, "online");
  const snapshot = await chat.join(room);
  assert.deepEqual(snapshot.members, [{userId: hello.userId, name: hello.name}]);
  assert.equal(snapshot.userCount, 1);
  const echo = next(chat, "message");
  const seq = await chat.send("héllo 👋");
  assert.equal(seq, snapshot.seq + 1);
  const message = await echo;
  assert.deepEqual([message.seq, message.text, message.user], [seq, "héllo 👋", hello.name]);
  assert.deepEqual(chat.pending(), []);
});

test("the member list follows joins and leaves", async (t) => {
  const room = unique("room");
  const ann = await member(t, room);
  const arrived = next(ann, "members", ({members}) => members.length === 2);
  const ben = await member(t, room);
  await arrived;
  assert.deepEqual(new Set(ann.members().map((m) => m.userId)), new Set([ann.userId, ben.userId]));
  assert.equal(ann.userCount(), 2);
  const left = next(ann, "members", ({members}) => members.length === 1);
  await ben.leave();
  await left;
  assert.deepEqual(ann.members().map((m) => m.userId), [ann.userId]);
  assert.deepEqual(ann.members("elsewhere"), []);
});

test("a dropped connection resumes: recovered, every message once and in order", async (t) => {
  const room = unique("room");
  const ann = await member(t, room, {backoffFirstMs: 300});
  const ben = await member(t, room);
  const recovered = next(ann, "recovered");
  const seen = messages(ann, 3);
  ann.drop("the test cut it");
  assert.equal(ann.state, "reconnecting");
  const sent = [];
  for (const text of ["one", "two", "three"]) sent.push(await ben.send(text));
  assert.deepEqual(await recovered, {room, recovered: true});
  assert.deepEqual((await seen).map((m) => [m.seq, m.text]),
                   [[sent[0], "one"], [sent[1], "two"], [sent[2], "three"]]);
  assert.equal(ann.connections, 2);
});

test("messages written offline wait in a bounded queue and are stored once", async (t) => {
  const room = unique("room");
  const ann = await member(t, room, {queueLimit: 2, backoffFirstMs: 300});
  const ben = await member(t, room);
  const delivered = messages(ben, 2);
  ann.drop("the test cut it");
  const sends = [ann.send("first"), ann.send("second")];
  assert.deepEqual(ann.pending().map((p) => p.text), ["first", "second"]);
  await assert.rejects(ann.send("third"), (error) => error.code === "queue_full");
  const seqs = await Promise.all(sends);
  assert.deepEqual((await delivered).map((m) => [m.seq, m.text]),
                   [[seqs[0], "first"], [seqs[1], "second"]]);
  assert.deepEqual(ann.pending(), []);
});

test("a send repeated with the same clientId is stored once", async (t) => {
  const room = unique("room");
  const ann = await member(t, room);
  const ben = await member(t, room);
  const delivered = messages(ben, 2);
  const clientId = newClientId();
  assert.match(clientId, /^[0-9a-f]{16}$/);
  const first = await ann.send("once", {clientId});
  assert.equal(await ann.send("once", {clientId}), first);
  const after = await ann.send("next");
  assert.deepEqual((await delivered).map((m) => m.seq), [first, after]);
});

test("a send the server refuses rejects with its code; the next one goes through", async (t) => {
  const ann = await member(t, unique("room"));
  await assert.rejects(ann.send("x".repeat(10001)),
                       (error) => error instanceof ChatError && error.code === "text_too_long");
  assert.ok(await ann.send("short") > 0);
});

test("history and the room directory answer in order", async (t) => {
  const room = unique("room");
  const ann = await member(t, room);
  const seqs = [];
  for (const text of ["a", "b", "c"]) seqs.push(await ann.send(text));
  const [page, rooms] = await Promise.all([ann.history(seqs[2], 2), ann.listRooms(0, 100)]);
  assert.deepEqual(page.messages.map((m) => m.text), ["a", "b"]);
  assert.ok(rooms.rooms.some((r) => r.name === room && r.userCount === 1), rooms);
});

test("close() is final: no reconnect, sends refused", async (t) => {
  const ann = await member(t, unique("room"));
  ann.close();
  assert.equal(ann.state, "closed");
  await assert.rejects(ann.send("late"), (error) => error.code === "closed");
  assert.ok(isFinalClose(4001) && isFinalClose(1008) && !isFinalClose(1001) && !isFinalClose(1006));
});

test("a name taken keeps the session: connect({name}) resumes as the same user", async (t) => {
  const name = unique("taken");
  await member(t, unique("room"), {name});
  const other = client(t, {name});
  await assert.rejects(other.connect(), (error) => error.code === "name_taken");
  assert.equal(other.state, "closed");
  const hello = await other.connect({name: `${name}2`});
  assert.equal(hello.name, `${name}2`);
});

test("JWT: a token about to expire is replaced through getToken", {skip: !CHAT_JWT_URL}, async (t) => {
  const sub = unique("jwt");
  let calls = 0;
  const chat = client(t, {token: jwt(sub, 3), refreshBeforeMs: 2500,
                          getToken: async () => { calls += 1; return jwt(sub, 600); }}, CHAT_JWT_URL);
  const hello = await chat.connect();
  assert.equal(hello.userId, sub);
  const firstExpiry = chat.expiresAt;
  while (chat.expiresAt === firstExpiry) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(calls, 1);
  assert.ok(chat.expiresAt > firstExpiry + 500);
});

test("JWT: a refused token is tried once more with a fresh one (4001)", {skip: !CHAT_JWT_URL}, async (t) => {
  const sub = unique("jwt");
  const errors = [];
  const chat = client(t, {token: jwt(sub, -60), getToken: async () => jwt(sub, 600)}, CHAT_JWT_URL);
  chat.on("error", (error) => errors.push(error.code));
  const hello = await chat.connect();
  assert.equal(hello.userId, sub);
  assert.deepEqual(errors, ["auth_failed"]);
  assert.equal(chat.connections, 2);
});
