// An independent Sparkplug B decoder: Eclipse Tahu JS `sparkplug-payload` + mqtt.js.
//
//   node sparkplug-decode.js MQTT_URL [TOPIC_FILTER]
//
// Subscribes to TOPIC_FILTER (default spBv1.0/#) and prints one JSON line per message:
// {"topic": ..., "payload": <what sparkplug-payload decoded>}. 64-bit integers (protobufjs
// Long) are printed as {"$long": "<decimal>"} and bytes as {"$bytes": "<hex>"}, so nothing
// is rounded on the way to the test. Prints {"event": "ready"} once subscribed, and
// {"event": "error", ...} for a message it cannot decode (it goes on).
"use strict";

const mqtt = require("mqtt");
const Long = require("long");
const sparkplug = require("sparkplug-payload").get("spBv1.0");

const [url, filter = "spBv1.0/#"] = process.argv.slice(2);
if (!url) {
  process.stderr.write("usage: node sparkplug-decode.js MQTT_URL [TOPIC_FILTER]\n");
  process.exit(2);
}

function plain(value) {
  if (Long.isLong(value)) return { $long: value.toString() };
  if (value instanceof Uint8Array) return { $bytes: Buffer.from(value).toString("hex") };
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const [key, inner] of Object.entries(value)) out[key] = plain(inner);
    return out;
  }
  if (typeof value === "number" && !Number.isFinite(value)) return { $float: String(value) };
  return value;
}

function emit(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

const client = mqtt.connect(url, {
  clientId: `tahu-decoder-${process.pid}`,
  clean: true,
  reconnectPeriod: 500,
});
client.on("connect", () => {
  client.subscribe(filter, { qos: 0 }, (err) => {
    if (err) emit({ event: "error", error: String(err) });
    else emit({ event: "ready" });
  });
});
client.on("message", (topic, message) => {
  if (topic.startsWith("spBv1.0/STATE/")) {
    emit({ topic, state: message.toString("utf8") });
    return;
  }
  try {
    emit({ topic, payload: plain(sparkplug.decodePayload(message)) });
  } catch (err) {
    emit({ event: "error", topic, error: String(err), hex: message.toString("hex") });
  }
});
client.on("error", (err) => emit({ event: "error", error: String(err) }));

function stop() {
  client.end(false, () => process.exit(0));
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
