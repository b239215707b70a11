// Plays the protocol scenarios (tests/protocol_scenarios.json) with the JavaScript SDK against
// the scripted server at argv[2] (http://host:port), each scenario named after it; prints
// {scenario: what the client reported} as JSON. Run by tests/integration/test_scenarios.py.
import {createRequire} from "node:module";
import {ChatClient} from "../../node/static/chat-client.js";

const WebSocket = createRequire(import.meta.url)("ws");  // Debian's node-ws (NODE_PATH)
const SCENARIO_TIMEOUT_MS = 15000;

async function play(base, name, say) {
  const url = `${base.replace(/^http/, "ws")}/s/${name}/js/ws`;
  const client = new ChatClient(url, {name: "alice", WebSocket, backoffFirstMs: 100});
  const seen = {delivered: [], notRecovered: false, lost: [], refused: [], acknowledged: []};
  client.on("message", (message) => seen.delivered.push(message.seq));
  client.on("recovered", ({recovered}) => { if (!recovered) seen.notRecovered = true; });
  client.on("lost", ({from, to}) => seen.lost.push([from, to]));
  const closed = new Promise((resolve) => client.on("state", (state) => {
    if (state === "closed") resolve();
  }));
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${name}: not closed within ${SCENARIO_TIMEOUT_MS} ms`)),
                       SCENARIO_TIMEOUT_MS);
  });
  const script = (async () => {
    await client.connect();
    await client.join("general");
    for (const text of say) {
      try {
        seen.acknowledged.push(await client.send(text));
      } catch (error) {
        seen.refused.push(error.code);
      }
    }
    await closed;
  })();
  try {
    await Promise.race([script, late]);
  } finally {
    clearTimeout(timer);
    client.close();
  }
  return {...seen, members: client.members().map((m) => m.userId).sort(),
          userCount: client.userCount()};
}

const [base, table] = process.argv.slice(2);
const results = {};
for (const scenario of JSON.parse(table)) {
  try {
    results[scenario.name] = await play(base, scenario.name, scenario.say ?? []);
  } catch (error) {  // that scenario's test says why; the others still run
    results[scenario.name] = {error: String(error)};
  }
}
console.log(JSON.stringify(results));
