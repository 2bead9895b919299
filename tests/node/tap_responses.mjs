// Asks for one response through fanout's Responses tap with the official openai npm package
// and prints {"text", "status", "events"} as JSON: the text it rebuilt from the output text
// deltas (streaming) or its output_text (not), and the final response's status.
// Usage: node tap_responses.mjs BASE_URL ROOM MODEL stream|once
import OpenAI from "openai";

const [baseURL, room, model, mode] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "caller-key", maxRetries: 0, defaultHeaders: { "X-Room": room } });
const input = [{ role: "user", content: [{ type: "input_text", text: "hello from node" }] }];
let text = "";
let status = null;
let events = 0;
if (mode === "stream") {
  const stream = await client.responses.create({ model, input, stream: true });
  for await (const event of stream) {
    events += 1;
    if (event.type === "response.output_text.delta") text += event.delta;
    if (event.type === "response.completed" || event.type === "response.incomplete") status = event.response.status;
  }
} else {
  const response = await client.responses.create({ model, input });
  text = response.output_text;
  status = response.status;
}
process.stdout.write(JSON.stringify({ text, status, events }) + "\n");
