// A 6-turn conversation (openai client) against two servers, prefix cache
// on (BASE_URL) and off (BASE_URL_OFF): the same greedy texts turn by turn,
// and from turn 2 on the cached prompt tokens are the previous turns' whole
// length: the previous prompt and answer (less the answer's last token when
// the token limit cut it: that one was sampled but never fed).
// With BASE_URL_LIKE (another server, prefix cache on) the cached tokens
// are instead at least one from turn 2 on and equal to that server's, turn
// by turn: a random synthetic model's answer need not come back as the same
// tokens once it is text in the next turn's prompt. BASE_URL_ALSO names a
// further server (cache off) whose texts must be the same too.
import OpenAI from 'openai';

const client = (url) => new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
const on = client(process.env.BASE_URL);
const off = client(process.env.BASE_URL_OFF);
const like = process.env.BASE_URL_LIKE ? client(process.env.BASE_URL_LIKE) : null;
const also = process.env.BASE_URL_ALSO ? client(process.env.BASE_URL_ALSO) : null;
const users = ['Licensed under the Apache License, Version 2.0 (the', 'you may not use this file except',
  'Permission is hereby granted, free of charge,', 'THE SOFTWARE IS PROVIDED "AS IS"',
  'This program is free software; you can redistribute it', 'Everyone is permitted to copy'];
let checks = 0, fails = 0;
function eq(got, want, what) {
  checks++;
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    fails++;
    console.error(`FAIL: ${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}
const msgs = [{ role: 'system', content: 'You continue licence texts.' }];
let prev = null;
for (let t = 0; t < users.length; t++) {
  msgs.push({ role: 'user', content: users[t] });
  const body = { model: 'x', messages: msgs, max_tokens: 20, temperature: 0 };
  const a = await on.chat.completions.create(body);
  const b = await off.chat.completions.create(body);
  const text = a.choices[0].message.content;
  eq(text, b.choices[0].message.content, `turn ${t + 1}: text with reuse = without`);
  eq(b.usage.prompt_tokens_details.cached_tokens, 0, `turn ${t + 1}: nothing cached with reuse off`);
  if (also)
    eq((await also.chat.completions.create(body)).choices[0].message.content, text, `turn ${t + 1}: text = BASE_URL_ALSO's`);
  const cached = a.usage.prompt_tokens_details.cached_tokens;
  if (like) {
    eq((await like.chat.completions.create(body)).usage.prompt_tokens_details.cached_tokens, cached,
       `turn ${t + 1}: cached tokens = BASE_URL_LIKE's`);
    if (prev) {
      checks++;
      if (cached < 1) {
        fails++;
        console.error(`FAIL: turn ${t + 1}: nothing cached`);
      }
    }
  } else if (prev) {
    const want = prev.usage.prompt_tokens + prev.usage.completion_tokens - (prev.choices[0].finish_reason === 'length' ? 1 : 0);
    eq(cached, want, `turn ${t + 1}: cached tokens = the previous turns`);
  }
  console.log(`turn ${t + 1}: prompt ${a.usage.prompt_tokens}, cached ${a.usage.prompt_tokens_details.cached_tokens}, ` +
              `answer ${a.usage.completion_tokens} (${a.choices[0].finish_reason})`);
  msgs.push({ role: 'assistant', content: text });
  prev = a;
}
console.log(`${checks} checks, ${fails} failed`);
process.exit(fails ? 1 : 0);
