// A 6-turn conversation (openai client) against two servers, prefix cache
// on (BASE_URL) and off (BASE_URL_OFF): the same greedy texts turn by turn,
// and from turn 2 on the cached prompt tokens are the previous turns' whole
// length: the previous prompt and answer (less the answer's last token when
// the token limit cut it: that one was sampled but never fed).
import OpenAI from 'openai';

const on = new OpenAI({ baseURL: `${process.env.BASE_URL}/v1`, apiKey: 'none', maxRetries: 0 });
const off = new OpenAI({ baseURL: `${process.env.BASE_URL_OFF}/v1`, apiKey: 'none', maxRetries: 0 });
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
  if (prev) {
    const want = prev.usage.prompt_tokens + prev.usage.completion_tokens - (prev.choices[0].finish_reason === 'length' ? 1 : 0);
    eq(a.usage.prompt_tokens_details.cached_tokens, want, `turn ${t + 1}: cached tokens = the previous turns`);
  }
  console.log(`turn ${t + 1}: prompt ${a.usage.prompt_tokens}, cached ${a.usage.prompt_tokens_details.cached_tokens}, ` +
              `answer ${a.usage.completion_tokens} (${a.choices[0].finish_reason})`);
  msgs.push({ role: 'assistant', content: text });
  prev = a;
}
console.log(`${checks} checks, ${fails} failed`);
process.exit(fails ? 1 : 0);
