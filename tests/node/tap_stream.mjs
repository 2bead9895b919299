// Streams one chat completion through fanout's tap with the official openai npm package and
// prints {"text", "finish_reason", "chunks"} as JSON. Usage: node tap_stream.mjs BASE_URL ROOM
import OpenAI from "openai";

const [baseURL, room] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "caller-key", maxRetries: 0, defaultHeaders: { "X-Room": room } });
const stream = await client.chat.completions.create({
  model: "gpt-test",
  messages: [{ role: "user", content: "hello from node" }],
  stream: true,
});
let text = "";
let finish = null;
let chunks = 0;
for await (const chunk of stream) {
  chunks += 1;
  for (const choice of chunk.choices) {
    text += choice.delta?.content ?? "";
    finish = choice.finish_reason ?? finish;
  }
}
process.stdout.write(JSON.stringify({ text, finish_reason: finish, chunks }) + "\n");
