// The client of bench/serve.sh (Node 20's fetch, no packages): STREAMS
// concurrent streamed chat requests, REQUESTS each, greedy, MAX_TOKENS
// each; prints aggregate tok/s and time-to-first-token p50/p99. With
// TURNS=N it runs one N-turn conversation instead and prints the last
// turn's time to first token. The same client measures llama-server
// (bench/serve.sh's side by side): it reads the same OpenAI stream, and
// counts content chunks when a server sends no usage. WARMUP=1 sends one
// untimed request first (a server's first request pays one-off costs).
const base = process.env.BASE_URL, maxTokens = +(process.env.MAX_TOKENS ?? 64);
const prompts = ['Licensed under the Apache License, Version 2.0 (the', 'This program is free software; you can',
  'Permission is hereby granted, free of charge,', 'Redistribution and use in source and binary forms',
  'THE SOFTWARE IS PROVIDED "AS IS"', 'Everyone is permitted to copy and distribute verbatim copies'];

let retries = 0;

// One streamed chat request: {ttft seconds, tokens, text}. A connection the
// server closed before answering (a keep-alive connection it gave up as the
// request left: llama-server's HTTP library closes one after 5 requests)
// is retried once on a new one, counted in retries.
async function chat(messages) {
  const t0 = performance.now();
  const init = {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages, max_tokens: maxTokens, temperature: 0, stream: true,
                           stream_options: { include_usage: true } }),
  };
  let r;
  try {
    r = await fetch(`${base}/v1/chat/completions`, init);
  } catch (e) {
    if (e.cause?.code !== 'UND_ERR_SOCKET')
      throw e;
    retries++;
    r = await fetch(`${base}/v1/chat/completions`, init);
  }
  if (!r.ok) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
  const reader = r.body.getReader(), dec = new TextDecoder();
  let buf = '', ttft = 0, tokens = 0, text = '', cached = 0, chunks = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const line = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      if (!line.startsWith('data: {')) continue;
      const c = JSON.parse(line.slice(6));
      if (c.usage) {
        tokens = c.usage.completion_tokens;
        cached = c.usage.prompt_tokens_details?.cached_tokens ?? 0;
      }
      const piece = c.choices?.[0]?.delta?.content;
      if (piece) {
        chunks++;
        if (!ttft) ttft = (performance.now() - t0) / 1000;
        text += piece;
      }
    }
  }
  return { ttft, tokens: tokens || chunks, text, cached };
}

const pct = (xs, p) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];

if (process.env.TURNS) {
  const msgs = [];
  let last;
  for (let t = 0; t < +process.env.TURNS; t++) {
    msgs.push({ role: 'user', content: prompts[t % prompts.length] });
    last = await chat(msgs);
    msgs.push({ role: 'assistant', content: last.text });
  }
  console.log(`turn ${process.env.TURNS}: ttft ${(last.ttft * 1000).toFixed(1)} ms, cached ${last.cached} tokens`);
} else {
  const streams = +process.env.STREAMS, requests = +(process.env.REQUESTS ?? 4);
  if (process.env.WARMUP === '1')
    await chat([{ role: 'user', content: 'warm up' }]);
  const ttfts = [];
  let tokens = 0, failed = 0, why = '';
  const t0 = performance.now();
  await Promise.all([...Array(streams).keys()].map(async (s) => {
    for (let k = 0; k < requests; k++) {
      try {
        const r = await chat([{ role: 'user', content: prompts[(s + k) % prompts.length] + ` (${s}.${k})` }]);
        ttfts.push(r.ttft);
        tokens += r.tokens;
      } catch (e) { /* counted: a server that drops requests shows it */
        failed++;
        why = `${e.message}${e.cause ? ': ' + e.cause.message : ''}`;
      }
    }
  }));
  const wall = (performance.now() - t0) / 1000;
  console.log(`streams ${streams}: ${tokens} tokens in ${wall.toFixed(2)} s = ${(tokens / wall).toFixed(1)} tok/s; ` +
              `ttft p50 ${(pct(ttfts, 0.5) * 1000).toFixed(1)} ms, p99 ${(pct(ttfts, 0.99) * 1000).toFixed(1)} ms` +
              (retries ? `; ${retries} retried on a new connection` : '') +
              (failed ? `; ${failed} FAILED (${why})` : ''));
}
