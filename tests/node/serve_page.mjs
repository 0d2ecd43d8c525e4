// The chat page of `sluice serve` in headless Debian chromium (playwright-
// core): the model's name, a message whose streamed answer is read from the
// DOM (equal to `sluice run --chat`, WANT), the stop button ending a long
// answer, and the pipeline drawing with live numbers. Saves a screenshot.
import { chromium } from 'playwright-core';

const base = process.env.BASE_URL, want = process.env.WANT, prompt = process.env.PROMPT;
let checks = 0, fails = 0;
function eq(got, wantv, what) {
  checks++;
  if (JSON.stringify(got) !== JSON.stringify(wantv)) {
    fails++;
    console.error(`FAIL: ${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(wantv)}`);
  }
}
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const page = await browser.newPage();
  // waits for what must happen, however loaded the machine (chromium at a
  // load of 13-15 took more than 120 s over one); a hang still fails, at
  // the script's `timeout 800`
  page.setDefaultTimeout(600000);
  await page.goto(`${base}/?max_tokens=24`);
  await page.waitForFunction(() => document.getElementById('model').textContent === 'tiny-gemma3');
  eq(await page.locator('.stage').count(), 4, 'four stages drawn');
  await page.fill('#input', prompt);
  await page.click('#send');
  const answer = page.locator('.msg.assistant').first();
  await answer.waitFor();
  await page.waitForSelector('.msg.assistant[data-done]');
  eq(await answer.getAttribute('data-done'), '1', 'the answer finished');
  eq(await answer.textContent(), want, 'streamed answer in the DOM = sluice run --chat');
  await page.waitForFunction(() => /tok\/s/.test(document.getElementById('tps').textContent) &&
                                   !/^–/.test(document.getElementById('tps').textContent));
  await page.waitForFunction(() => /tok\/s · queue \d+ · busy \d+%/.test(document.getElementById('stage-1').textContent));
  // a long answer, stopped once it streams: 30000 tokens take the tiny model
  // many seconds, so a slow browser still stops it before it ends, and a stop
  // the server ignored leaves it in flight (test_serve_page.sh checks)
  await page.goto(`${base}/?max_tokens=30000`);
  await page.waitForFunction(() => document.getElementById('model').textContent === 'tiny-gemma3');
  await page.fill('#input', 'GNU GENERAL PUBLIC LICENSE');
  await page.click('#send');
  await page.waitForFunction(() => (document.querySelector('.msg.assistant')?.textContent ?? '').length > 20);
  await page.click('#stop');
  await page.waitForSelector('.msg.assistant[data-done]');
  eq(await page.locator('.msg.assistant').first().getAttribute('data-done'), 'stopped', 'the stop button');
  eq(await page.isDisabled('#stop'), true, 'stop disabled after stopping');
  await page.screenshot({ path: process.env.SHOT, fullPage: true });
} finally {
  await browser.close();
}
console.log(`${checks} checks, ${fails} failed`);
process.exit(fails ? 1 : 0);
