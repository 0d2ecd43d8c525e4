// Load on `sluice serve`: CLIENTS concurrent clients, each sending ROUNDS
// greedy completions one after the other (streamed every other time); every
// text must equal the solo run's (WANT: a JSON file {prompt: text}).
import OpenAI from 'openai';
import { readFileSync } from 'node:fs';

const want = JSON.parse(readFileSync(process.env.WANT, 'utf8'));
const prompts = Object.keys(want);
const clients = +process.env.CLIENTS, rounds = +process.env.ROUNDS, maxTokens = +process.env.MAX_TOKENS;
const client = new OpenAI({ baseURL: `${process.env.BASE_URL}/v1`, apiKey: 'none', maxRetries: 0, timeout: 300000 });
let fails = 0, done = 0;

async function one(c, k) {
  const prompt = prompts[(c * rounds + k) % prompts.length];
  const body = { model: 'x', prompt, max_tokens: maxTokens, temperature: 0 };
  let text = '';
  if ((c + k) % 2) {
    for await (const ch of await client.completions.create({ ...body, stream: true })) text += ch.choices[0]?.text ?? '';
  } else {
    text = (await client.completions.create(body)).choices[0].text;
  }
  if (text !== want[prompt]) {
    fails++;
    console.error(`FAIL: client ${c} request ${k}: ${JSON.stringify(text)} != solo ${JSON.stringify(want[prompt])}`);
  }
  done++;
}

const t0 = Date.now();
await Promise.all([...Array(clients).keys()].map(async (c) => {
  for (let k = 0; k < rounds; k++) await one(c, k);
}));
console.log(`${done} requests from ${clients} clients in ${((Date.now() - t0) / 1000).toFixed(1)} s, ${fails} differ from solo runs`);
process.exit(fails || done !== clients * rounds ? 1 : 0);
