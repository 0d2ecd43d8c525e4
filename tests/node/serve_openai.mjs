// The openai npm client against `sluice serve`: chat and completions, whole
// and streamed, stop strings, seeds, usage, errors. Expected greedy texts
// come from `sluice run` (env WANT_CHAT, WANT_TEXT); exits 1 on a mismatch.
import OpenAI from 'openai';

const base = process.env.BASE_URL, key = process.env.API_KEY;
const prompt = process.env.PROMPT, wantChat = process.env.WANT_CHAT, wantText = process.env.WANT_TEXT;
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0, timeout: 60000 });
let checks = 0, fails = 0;
function eq(got, want, what) {
  checks++;
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    fails++;
    console.error(`FAIL: ${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}
const chatBody = { model: 'tiny-gemma3', messages: [{ role: 'user', content: prompt }], max_tokens: 24, temperature: 0 };

async function chat() {
  const r = await client.chat.completions.create(chatBody);
  eq(r.choices[0].message.content, wantChat, 'chat text = sluice run --chat');
  eq(r.choices[0].message.role, 'assistant', 'chat role');
  eq(r.usage.completion_tokens <= 24 && r.usage.prompt_tokens > 0, true, 'chat usage');
  eq(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens, 'total tokens');
  eq(typeof r.usage.prompt_tokens_details.cached_tokens, 'number', 'cached_tokens present');
  const s = await client.chat.completions.create({ ...chatBody, stream: true, stream_options: { include_usage: true } });
  let text = '', chunks = 0, finish = null, usage = null, role = null;
  for await (const c of s) {
    if (c.usage) usage = c.usage;
    if (!c.choices.length) continue;
    chunks++;
    if (c.choices[0].delta.role) role = c.choices[0].delta.role;
    text += c.choices[0].delta.content ?? '';
    if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
  }
  eq(text, wantChat, 'streamed chat text');
  eq(role, 'assistant', 'streamed role');
  eq(chunks > 3, true, 'streamed in several chunks');
  eq(finish !== null, true, 'streamed finish_reason');
  eq(usage && usage.completion_tokens === r.usage.completion_tokens, true, 'streamed usage');
}

async function completions() {
  const r = await client.completions.create({ model: 'x', prompt, max_tokens: 16 });
  eq(r.choices[0].text, wantText, 'completion text = sluice run');
  eq(r.choices[0].finish_reason, 'length', 'finish_reason length');
  eq(r.usage.completion_tokens, 16, 'completion usage');
  const s = await client.completions.create({ model: 'x', prompt, max_tokens: 16, stream: true });
  let text = '';
  for await (const c of s) text += c.choices[0]?.text ?? '';
  eq(text, wantText, 'streamed completion text');
  const stop = wantText.trim().split(/\s+/)[1];
  const st = await client.completions.create({ model: 'x', prompt, max_tokens: 16, stop: [stop] });
  eq(st.choices[0].text, wantText.slice(0, wantText.indexOf(stop)), 'stop string cuts the text');
  eq(st.choices[0].finish_reason, 'stop', 'finish_reason stop');
  const ss = await client.completions.create({ model: 'x', prompt, max_tokens: 16, stop: stop, stream: true });
  let st2 = '';
  for await (const c of ss) st2 += c.choices[0]?.text ?? '';
  eq(st2, st.choices[0].text, 'streamed text stops at the stop string too');
}

async function seeds() {
  const body = { model: 'x', prompt, max_tokens: 24, temperature: 1.2, top_k: 40, seed: 1234 };
  const a = await client.completions.create(body);
  const b = await client.completions.create(body);
  eq(a.choices[0].text, b.choices[0].text, 'same seed, same text');
  const texts = new Set();
  for (const seed of [1, 2, 3, 4]) texts.add((await client.completions.create({ ...body, seed })).choices[0].text);
  eq(texts.size > 1, true, 'other seeds, other texts');
}

async function errors() {
  try {
    await client.chat.completions.create({ ...chatBody, max_tokens: 1e6 });
    eq('no error', 'BadRequestError', 'max_tokens past the context');
  } catch (e) {
    eq([e.status, e.param ?? e.error?.param], [400, 'max_tokens'], 'max_tokens past the context');
  }
  const bad = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'sk-wrong-key', maxRetries: 0 });
  try {
    await bad.models.list();
    eq('no error', 401, 'wrong key');
  } catch (e) {
    eq(e.status, 401, 'wrong key');
  }
  const models = await client.models.list();
  eq(models.data[0].id, 'tiny-gemma3', 'models.list');
}

await chat();
await completions();
await seeds();
await errors();
console.log(`${checks} checks, ${fails} failed`);
process.exit(fails ? 1 : 0);
