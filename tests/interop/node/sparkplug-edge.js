// An independent Sparkplug B edge node: Eclipse Tahu JS `sparkplug-client` (mqtt.js inside).
//
//   node sparkplug-edge.js MQTT_URL GROUP EDGE_NODE MODE MESSAGES INTERVAL_MS [START [uint32]]
//
// MODE "names": metrics carry names everywhere, as the Tahu examples do (no aliases).
// MODE "aliases": births carry name + alias, DATA carries the alias (and the datatype, which
// sparkplug-client always sends).
// Publishes an NBIRTH (with Node Control/Rebirth; the client appends bdSeq), one DBIRTH for
// device "pump", then MESSAGES rounds of DDATA + NDATA every INTERVAL_MS with known values
// of every scalar datatype but UInt32 (round i uses value index START + i); "uint32" adds a
// UInt32 metric, which sparkplug-client puts in long_value (spec 3.0: uint32). Answers a
// Rebirth NCMD with new births. Prints one JSON line per published DATA metric
// {"event": "published", "kind", "device", "name", "type", "value", "timestamp"},
// {"event": "born"} per NBIRTH and {"event": "done"} at the end, then stays connected
// until SIGTERM, when it publishes NDEATH and disconnects.
"use strict";

const sparkplugClient = require("sparkplug-client");

const [url, groupId, edgeNode, mode, messagesArg, intervalArg, startArg = "0", extra = ""] =
  process.argv.slice(2);
if (!url || !["names", "aliases"].includes(mode)) {
  process.stderr.write(
    "usage: node sparkplug-edge.js MQTT_URL GROUP EDGE_NODE names|aliases MESSAGES INTERVAL_MS" +
      " [START [uint32]]\n"
  );
  process.exit(2);
}
const messages = Number(messagesArg);
const intervalMs = Number(intervalArg);
const start = Number(startArg);
const DEVICE = "pump";

// name, type, alias, value of round i. 64-bit values stay within 2^53 (exact in JS numbers).
const DEVICE_METRICS = [
  ["Pressure", "Double", 10, (i) => 101.325 + i / 1000],
  ["Temperature", "Float", 11, (i) => 20.5 + i * 0.25],
  ["Running", "Boolean", 12, (i) => i % 2 === 0],
  ["Offset", "Int32", 13, (i) => -100000 - i],
  ["Tilt", "Int8", 14, (i) => -5 - (i % 100)],
  ["Level", "Int16", 15, (i) => -3000 + i],
  ["Strokes", "UInt8", 16, (i) => 200 + (i % 50)],
  ["Speed", "UInt16", 17, (i) => 60000 + i],
  ["Total", "Int64", 19, (i) => -(2 ** 40) - i],
  ["Volume", "UInt64", 20, (i) => 2 ** 50 + i],
  ["Serviced", "DateTime", 21, (i) => 1700000000000 + i],
  ["Status", "String", 22, (i) => `state-${i} ✓`],
  ["Note", "Text", 23, (i) => `note ${i}`],
];
if (extra === "uint32") DEVICE_METRICS.push(["Count", "UInt32", 18, (i) => 4000000000 + i]);
const NODE_METRICS = [
  ["Uptime", "Int64", 1, (i) => i],
  ["Mode", "String", 2, (i) => (i % 3 === 0 ? "auto" : "manual")],
];

function emit(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

function metric(def, i, timestamp, inBirth) {
  const [name, type, alias, value] = def;
  const m = { type, value: value(i), timestamp };
  if (mode === "names" || inBirth) m.name = name;
  if (mode === "aliases") m.alias = alias;
  return m;
}

const client = sparkplugClient.newClient({
  serverUrl: url,
  username: "",
  password: "",
  groupId,
  edgeNode,
  clientId: `tahu-${edgeNode}`,
  version: "spBv1.0",
  publishDeath: true,
});

let round = 0;
let timer = null;

function publishBirths() {
  const now = Date.now();
  const i = start + round;
  client.publishNodeBirth({
    timestamp: now,
    metrics: [
      { name: "Node Control/Rebirth", type: "Boolean", value: false, timestamp: now },
      ...NODE_METRICS.map((d) => metric(d, i, now, true)),
    ],
  });
  client.publishDeviceBirth(DEVICE, {
    timestamp: now,
    metrics: DEVICE_METRICS.map((d) => metric(d, i, now, true)),
  });
  emit({ event: "born" });
}

function publishRound() {
  if (round >= messages) {
    clearInterval(timer);
    emit({ event: "done", rounds: round });
    return;
  }
  round += 1;
  const i = start + round;
  const now = Date.now();
  for (const [kind, device, defs] of [
    ["DDATA", DEVICE, DEVICE_METRICS],
    ["NDATA", "", NODE_METRICS],
  ]) {
    const metrics = defs.map((d) => metric(d, i, now, false));
    if (kind === "DDATA") client.publishDeviceData(device, { timestamp: now, metrics });
    else client.publishNodeData({ timestamp: now, metrics });
    defs.forEach(([name, type, , value]) =>
      emit({ event: "published", kind, device, name, type, value: value(i), timestamp: now })
    );
  }
}

client.on("birth", () => {
  publishBirths();
  if (timer === null) timer = setInterval(publishRound, intervalMs);
});
client.on("ncmd", (payload) => {
  const rebirth = (payload.metrics || []).find(
    (m) => m.name === "Node Control/Rebirth" && m.value === true
  );
  emit({ event: "ncmd", rebirth: Boolean(rebirth) });
  if (rebirth) publishBirths();
});
client.on("error", (err) => emit({ event: "error", error: String(err) }));

function stop() {
  if (timer !== null) clearInterval(timer);
  client.stop();
  setTimeout(() => process.exit(0), 200);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
