// The dashboard end to end: Debian's chromium driven by playwright-core against a real
// PiCloud server (PICLOUD_BIN) on SQLite. Each page is checked with axe-core (no serious
// or critical violations) and for Content-Security-Policy violations; the main pages are
// saved as screenshots for docs/dashboard.md.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { admin, startServer, until } from './server.mjs';

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const shots = fileURLToPath(new URL('../../docs/img/', import.meta.url));
mkdirSync(shots, { recursive: true });

let server;
let browser;
let context;
let page;
const cspViolations = [];

before(async () => {
  server = await startServer();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking']
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  watchCsp(page);
  // Nothing leaves this origin: any request elsewhere fails the run.
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.origin !== new URL(server.url).origin) {
      cspViolations.push(`external request: ${url}`);
      return route.abort();
    }
    return route.continue();
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

function watchCsp(p) {
  p.on('console', (msg) => {
    if (/Content.Security.Policy/i.test(msg.text())) cspViolations.push(msg.text());
  });
}

/** axe-core on the current page: no serious or critical violation; no CSP violation. */
async function audit(name, screenshot = true, on = page) {
  await on.evaluate(axeSource);
  const result = await on.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`);
  });
  assert.deepEqual(result, [], `accessibility violations on ${name}`);
  assert.deepEqual(cspViolations, [], `CSP violations on ${name}`);
  if (screenshot) await on.screenshot({ path: `${shots}dashboard-${name}.png` });
}

const dash = (path = '') => `${server.url}/dashboard/${path}`;

test('the dashboard is served with a strict Content-Security-Policy and a fresh nonce', async () => {
  const first = await fetch(dash());
  const second = await fetch(dash('apps/shop/scripts/x'));
  assert.equal(first.status, 200);
  assert.equal(second.status, 200, 'an app route falls back to the page');
  const csp = first.headers.get('content-security-policy');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self' 'nonce-[A-Za-z0-9+/=]+'/);
  assert.doesNotMatch(csp, /unsafe-eval|https?:/);
  assert.notEqual(csp, second.headers.get('content-security-policy'), 'one nonce per page');
  const missing = await fetch(dash('_app/immutable/nope.js'));
  assert.equal(missing.status, 404);
});

test('a wrong token gets a clear message and no session', async () => {
  await page.goto(dash());
  await page.getByLabel('Admin API token').fill('pct_wrong');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('That token is not valid').waitFor();
  assert.deepEqual(await context.cookies(), []);
  await audit('sign-in');
});

test('signing in sets an HttpOnly, SameSite=Strict session cookie for the API only', async () => {
  await page.getByLabel('Admin API token').fill(server.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
  const [cookie] = await context.cookies();
  assert.equal(cookie.name, 'picloud_session');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(cookie.path, '/api/v1');
  assert.equal(await page.evaluate(() => document.cookie), '', 'page scripts cannot read it');
});

test('a state-changing request with the cookie but without the CSRF token is refused', async () => {
  const answer = await page.evaluate(async () => {
    const res = await fetch('/api/v1/apps', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'csrf' })
    });
    return { status: res.status, body: await res.json() };
  });
  assert.equal(answer.status, 403);
  assert.match(answer.body.error.message, /X-CSRF-Token/);
  assert.equal((await admin(server, 'GET', '/api/v1/apps/csrf')).status, 404);
});

test('apps are created and listed, and deleting one names what goes', async () => {
  await page.goto(dash('apps'));
  await page.getByLabel('New app name').fill('shop');
  await page.getByRole('button', { name: 'Create app' }).click();
  await page.getByRole('link', { name: 'shop' }).waitFor();
  await page.getByLabel('New app name').fill('Bad Name');
  await page.getByRole('button', { name: 'Create app' }).click();
  await page.getByRole('alert').waitFor();
  // The API's own message, word for word.
  const refused = await admin(server, 'POST', '/api/v1/apps', { name: 'Bad Name' });
  assert.equal(refused.status, 400);
  assert.equal(await page.getByRole('alert').innerText(), refused.body.error.message);
  await page.getByLabel('New app name').fill('scratch');
  await page.getByRole('button', { name: 'Create app' }).click();
  await page.getByRole('link', { name: 'scratch' }).waitFor();
  await page.getByRole('button', { name: 'Delete app scratch' }).click();
  const dialog = page.getByRole('dialog');
  assert.match(await dialog.innerText(), /'scratch' with all its scripts/);
  await dialog.getByRole('button', { name: 'Delete scratch' }).click();
  await page.getByRole('link', { name: 'scratch' }).waitFor({ state: 'detached' });
  assert.equal((await admin(server, 'GET', '/api/v1/apps/scratch')).status, 404);
  await audit('apps');
});

async function typeSource(text) {
  const editor = page.locator('.cm-content');
  await editor.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.keyboard.insertText(text);
}

test('a script is written and deployed in the editor; a compile error shows inline', async () => {
  await page.goto(dash('apps/shop'));
  await page.getByLabel('New script name').fill('hello');
  await page.getByRole('button', { name: 'Open editor' }).click();
  await page.locator('.cm-content').waitFor();
  await typeSource('let x = ;\n"never"\n');
  await page.getByRole('button', { name: 'Deploy' }).click();
  const error = page.getByTestId('deploy-error');
  await error.waitFor();
  assert.match(await error.innerText(), /line 1, column \d+/);
  await page.locator('.cm-lintRange-error').first().waitFor();
  assert.match(await page.locator('.cm-content').innerText(), /let x = ;/, 'the text is kept');
  assert.equal((await admin(server, 'GET', '/api/v1/apps/shop/scripts/hello')).status, 404);

  await typeSource('log::info("one");\n#{ version: 1, path: request.path }\n');
  await page.getByRole('button', { name: 'Deploy' }).click();
  await page.getByText('Deployed version 1.').waitFor();
  await typeSource('log::info(`two for ${request.query.name}`);\n#{ version: 2, path: request.path }\n');
  await page.getByRole('button', { name: 'Deploy' }).click();
  await page.getByText('Deployed version 2.').waitFor();
  assert.equal(await page.locator('.cm-lintRange-error').count(), 0);
});

test('triggers of every kind are added, a cron one with its time zone', async () => {
  await page.goto(dash('apps/shop/triggers'));
  await page.getByLabel('Script').selectOption('hello');
  await page.getByLabel('Path').fill('/hello');
  await page.getByRole('button', { name: 'Add trigger' }).click();
  await page.getByText('GET /hello').waitFor();
  await page.getByLabel('Kind').selectOption('cron');
  await page.getByLabel('Schedule').fill('0 3 * * *');
  await page.getByLabel('Time zone').fill('Europe/Paris');
  await page.getByRole('button', { name: 'Add trigger' }).click();
  await page.getByText('0 3 * * * (Europe/Paris)').waitFor();
  await page.getByLabel('Kind').selectOption('cron');
  await page.getByLabel('Schedule').fill('not a schedule');
  await page.getByRole('button', { name: 'Add trigger' }).click();
  await page.getByRole('alert').waitFor();
  for (const [kind, field, value, shown] of [
    ['topic', 'Topic', 'orders', 'topic orders'],
    ['queue', 'Queue', 'mail', 'queue mail'],
    ['dead_letter', null, null, 'dead letters of the app']
  ]) {
    await page.getByLabel('Kind').selectOption(kind);
    if (field) await page.getByLabel(field, { exact: true }).fill(value);
    await page.getByRole('button', { name: 'Add trigger' }).click();
    await page.getByText(shown).waitFor();
  }
  const { body } = await admin(server, 'GET', '/api/v1/apps/shop/triggers');
  const cron = body.triggers.find((t) => t.kind === 'cron');
  assert.equal(cron.timezone, 'Europe/Paris');
  assert.equal(body.triggers.length, 5);
  await audit('triggers');
});

test('a cron trigger lists its next five fire times and runs now; the run arrives in the live tail', async () => {
  await admin(server, 'PUT', '/api/v1/apps/shop/scripts/tick', { source: 'log::info("tick " + event.payload.manual); "ticked"' });
  await page.goto(dash('apps/shop/triggers'));
  await page.getByLabel('Script').selectOption('tick');
  await page.getByLabel('Kind').selectOption('cron');
  await page.getByLabel('Schedule').fill('0 0 1 1 *');
  await page.getByLabel('Time zone').fill('America/New_York');
  await page.getByRole('button', { name: 'Add trigger' }).click();
  const fires = page.getByRole('list', { name: 'Next fire times of 0 0 1 1 * (America/New_York)' });
  await fires.waitFor();
  assert.equal(await fires.getByRole('listitem').count(), 5);
  const { body } = await admin(server, 'GET', '/api/v1/apps/shop/triggers');
  const tick = body.triggers.find((t) => t.script === 'tick');
  assert.equal(tick.next_fire_times.length, 5);
  for (const at of tick.next_fire_times) {
    // Midnight on January 1st in New York is 05:00 UTC.
    assert.match(at, /-01-01T05:00:00Z$/);
  }

  // The live tail, in a second tab of the same session.
  const tail = await context.newPage();
  watchCsp(tail);
  try {
    await tail.goto(dash('apps/shop/invocations'));
    await tail.getByRole('heading', { name: 'Invocations of shop' }).waitFor();
    await tail.getByLabel('Live tail').check();
    await tail.getByText('Live: new invocations appear as they finish.').waitFor();

    await page.getByRole('button', { name: 'Run now: 0 0 1 1 * (America/New_York)' }).click();
    await page.getByText('Queued a run of tick').waitFor();
    const row = tail.getByTestId('live-row').filter({ hasText: 'tick' });
    await row.waitFor();
    assert.match(await row.innerText(), /cron/);
    assert.match(await row.innerText(), /ok/);
    await row.getByRole('button', { name: /Open invocation/ }).click();
    await tail.getByRole('heading', { name: /Invocation / }).waitFor();
    assert.match(await tail.locator('section.panel').last().innerText(), /tick true/);
    await audit('live-tail', true, tail);
  } finally {
    await tail.close();
  }
  // An http trigger has no "run now".
  assert.equal(await page.getByRole('button', { name: 'Run now: GET /hello' }).count(), 0);
  await audit('triggers-cron', false);
});

test('a test run shows status, headers, body, duration, logs and the invocation id', async () => {
  await page.goto(dash('apps/shop/scripts/hello'));
  await page.locator('.cm-content').waitFor();
  await page.getByLabel('Path', { exact: true }).fill('/hello');
  await page.getByLabel('Query').fill('name=pi');
  await page.getByRole('button', { name: 'Send request' }).click();
  await page.getByTestId('run-status').waitFor();
  assert.equal(await page.getByTestId('run-status').innerText(), '200');
  assert.match(await page.getByTestId('run-body').innerText(), /"version":\s*2/);
  await page.getByTestId('run-logs').waitFor();
  assert.match(await page.getByTestId('run-logs').innerText(), /info: two for pi/);
  const id = await page.getByTestId('run-invocation').innerText();
  assert.equal((await admin(server, 'GET', `/api/v1/apps/shop/invocations/${id}`)).status, 200);
  await audit('editor');
});

test('two versions are compared and an earlier one rolled back', async () => {
  await page.locator('select[name="diff-from"]').selectOption('1');
  await page.locator('select[name="diff-to"]').selectOption('2');
  await page.getByRole('button', { name: 'Show diff' }).click();
  const diff = await page.getByTestId('diff').innerText();
  assert.match(diff, /- log::info\("one"\);/);
  assert.match(diff, /\+ log::info\(`two for/);
  await page.getByRole('button', { name: 'Roll back to version 1' }).click();
  await page.getByText('Version 1 is active again.').waitFor();
  const { body } = await admin(server, 'GET', '/api/v1/apps/shop/scripts/hello');
  assert.equal(body.active_version, 1);
  // The editor loads version 1's source after the notice.
  await until(async () => /log::info\("one"\)/.test(await page.locator('.cm-content').innerText()), 'the editor to show version 1');
  await audit('versions', false);
});

test('invocations are filtered and opened', async () => {
  await page.goto(dash('apps/shop/invocations'));
  await page.getByRole('button', { name: /Open invocation/ }).first().waitFor();
  // The trigger kind is filtered by the server: the request names it, and the page
  // shows what the API answers for it.
  await page.getByLabel('Trigger kind').selectOption('cron');
  const asked = page.waitForRequest((r) => /\/invocations\?.*trigger=cron/.test(r.url()));
  await page.getByRole('button', { name: 'Filter' }).click();
  await asked;
  const crons = (await admin(server, 'GET', '/api/v1/apps/shop/invocations?trigger=cron')).body.invocations;
  assert.ok(crons.length >= 1, 'the cron run of "Run now"');
  await until(async () => (await page.getByRole('button', { name: /Open invocation/ }).count()) === crons.length, 'the cron runs alone');
  for (const row of await page.locator('tbody tr').all()) assert.match(await row.innerText(), /\bcron\b/);
  await page.getByLabel('Trigger kind').selectOption('dead_letter');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.getByText('No invocations match.').waitFor();
  await page.getByLabel('Trigger kind').selectOption('');
  await page.getByLabel('Status').selectOption('error');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.getByText('No invocations match.').waitFor();
  await page.getByLabel('Status').selectOption('ok');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.getByRole('button', { name: /Open invocation/ }).first().click();
  await page.getByRole('heading', { name: /Invocation / }).waitFor();
  assert.match(await page.locator('section.panel').last().innerText(), /two for pi/);
  await audit('invocations');
});

test('very long logs, bodies and payloads are cut in view and downloaded whole', async () => {
  // 12,000 characters of log, of body and of payload: more than the 10,000 shown.
  const long = 'let s = ""; for i in 0..1200 { s += "0123456789"; }';
  await admin(server, 'PUT', '/api/v1/apps/shop/scripts/chatty', { source: `${long} log::info(s); queue::send("big-q", #{ text: s }); s` });
  await admin(server, 'POST', '/api/v1/apps/shop/triggers', { kind: 'http', method: 'GET', path: '/chatty', script: 'chatty' });
  await admin(server, 'PUT', '/api/v1/apps/shop/scripts/refuses', { source: 'throw "too big";' });
  await admin(server, 'POST', '/api/v1/apps/shop/triggers', { kind: 'queue', queue: 'big-q', script: 'refuses', max_attempts: 1 });
  const whole = '0123456789'.repeat(1200);
  const saved = async (button) => {
    const [file] = await Promise.all([page.waitForEvent('download'), button.click()]);
    return readFileSync(await file.path(), 'utf8');
  };

  // The test run's body and logs.
  await page.goto(dash('apps/shop/scripts/chatty'));
  await page.locator('.cm-content').waitFor();
  await page.getByLabel('Path', { exact: true }).fill('/chatty');
  await page.getByRole('button', { name: 'Send request' }).click();
  await page.getByTestId('run-body-cut').waitFor();
  assert.equal((await page.getByTestId('run-body').innerText()).length, 10000);
  assert.match(await page.getByTestId('run-body-cut').innerText(), /Showing the first 10000 of 12000 characters/);
  assert.equal(await saved(page.getByRole('button', { name: 'Download the whole body' })), whole);
  await page.getByTestId('run-logs-cut').waitFor();
  assert.ok((await saved(page.getByRole('button', { name: 'Download the whole logs' }))).endsWith(`info: ${whole}`));

  // An invocation's logs.
  await page.goto(dash('apps/shop/invocations'));
  await page.getByLabel('Script').fill('chatty');
  await page.getByRole('button', { name: 'Filter' }).click();
  await until(async () => (await page.getByRole('button', { name: /Open invocation/ }).count()) === 1, 'the chatty run alone');
  await page.getByRole('button', { name: /Open invocation/ }).click();
  await page.getByTestId('inv-logs-cut').waitFor();
  assert.ok((await page.getByTestId('inv-logs').innerText()).length <= 10000);
  assert.ok((await saved(page.getByRole('button', { name: 'Download the whole logs' }))).endsWith(`info: ${whole}`));
  await audit('invocation-long-logs', false);

  // A dead letter's payload.
  const letter = await until(async () => {
    const { body } = await admin(server, 'GET', '/api/v1/apps/shop/dead-letters?script=refuses');
    return body.dead_letters[0];
  }, 'the big dead letter');
  await page.goto(dash('apps/shop/dead-letters'));
  await page.getByRole('button', { name: `Inspect dead letter ${letter.id}` }).click();
  await page.getByTestId('dl-payload-cut').waitFor();
  assert.equal((await page.getByTestId('dl-payload').innerText()).length, 10000);
  const payload = JSON.parse(await saved(page.getByRole('button', { name: 'Download the whole payload' })));
  assert.equal(payload.text, whole);
  await admin(server, 'DELETE', `/api/v1/apps/shop/dead-letters/${letter.id}`);
});

test('a dead letter is inspected and replayed', async () => {
  await admin(server, 'PUT', '/api/v1/apps/shop/scripts/fails', { source: 'throw "no stock for " + event.payload.sku;' });
  await admin(server, 'PUT', '/api/v1/apps/shop/scripts/order', { source: 'queue::send("orders-q", #{ sku: "pi-5" }); "queued"' });
  await admin(server, 'POST', '/api/v1/apps/shop/triggers', { kind: 'queue', queue: 'orders-q', script: 'fails', max_attempts: 1 });
  await admin(server, 'POST', '/api/v1/apps/shop/triggers', { kind: 'http', method: 'POST', path: '/order', script: 'order' });
  const res = await fetch(`${server.url}/shop/order`, { method: 'POST' });
  assert.equal(res.status, 200);
  const first = await until(async () => {
    const { body } = await admin(server, 'GET', '/api/v1/apps/shop/dead-letters');
    return body.dead_letters.find((d) => d.kind === 'queue');
  }, 'the dead letter');
  await page.goto(dash('apps/shop/dead-letters'));
  await page.getByRole('button', { name: `Inspect dead letter ${first.id}` }).click();
  assert.match(await page.getByTestId('dl-payload').innerText(), /pi-5/);
  await audit('dead-letters');
  await page.getByRole('button', { name: `Replay dead letter ${first.id}` }).click();
  await page.getByText(`Replayed dead letter ${first.id}`).waitFor();
  // The replayed event runs again (and, still failing, comes back as a new dead letter).
  await until(async () => {
    const { body } = await admin(server, 'GET', '/api/v1/apps/shop/dead-letters');
    return body.dead_letters.some((d) => d.kind === 'queue' && d.id !== first.id) &&
      !body.dead_letters.some((d) => d.id === first.id);
  }, 'the replayed event to run again');
});

test('dead letters are filtered on the server and every match replayed after a confirmation naming the count', async () => {
  for (let i = 0; i < 2; i++) assert.equal((await fetch(`${server.url}/shop/order`, { method: 'POST' })).status, 200);
  const old = await until(async () => {
    const { body } = await admin(server, 'GET', '/api/v1/apps/shop/dead-letters?script=fails');
    return body.matching === 3 && body.dead_letters;
  }, 'three dead letters of fails');
  await page.goto(dash('apps/shop/dead-letters'));
  await page.getByLabel('Script').fill('fails');
  await page.getByLabel('Error contains').fill('no stock');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.getByText('3 dead letter(s) match.').waitFor();
  await page.getByLabel('Kind').selectOption('topic');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.getByText('0 dead letter(s) match.').waitFor();
  assert.equal(await page.getByRole('button', { name: 'Replay all 0 matching' }).isDisabled(), true);
  await page.getByLabel('Kind').selectOption('queue');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.getByText('3 dead letter(s) match.').waitFor();
  await page.getByRole('button', { name: 'Replay all 3 matching' }).click();
  const dialog = page.getByRole('dialog');
  assert.match(await dialog.innerText(), /Replay 3 dead letter\(s\)\?/);
  assert.match(await dialog.innerText(), /kind queue, script fails, error containing "no stock"/);
  await audit('dead-letters-replay', true);
  await dialog.getByRole('button', { name: 'Replay 3' }).click();
  await page.getByText('Replayed 3 dead letter(s).').waitFor();
  // Each ran again and, still failing, came back as a new dead letter.
  await until(async () => {
    const { body } = await admin(server, 'GET', '/api/v1/apps/shop/dead-letters?script=fails');
    return body.matching === 3 && body.dead_letters.every((d) => !old.some((o) => o.id === d.id));
  }, 'the replayed events to fail again');
});

test('the overview charts an app\'s last hour from the server\'s per-minute figures', async () => {
  await page.goto(dash());
  await page.getByLabel('App').selectOption('shop');
  const summary = page.getByTestId('activity-summary');
  await summary.waitFor();
  // Runs may still be finishing (replayed dead letters): the page and the route agree
  // once they stop, after a Refresh.
  await until(async () => {
    const shown = Number(/^(\d+) invocation/.exec(await summary.innerText())?.[1]);
    const { body } = await admin(server, 'GET', '/api/v1/apps/shop/invocations/stats');
    const total = body.minutes.reduce((n, m) => n + m.ok + m.error + m.timeout, 0);
    if (total > 0 && shown === total) return true;
    await page.getByRole('button', { name: 'Refresh' }).click();
    return false;
  }, "the overview to show the stats route's figures");
  // The queue charts end with the app's current counts, as the queue history route says.
  const { body: queue } = await admin(server, 'GET', '/api/v1/apps/shop/queue/history');
  const last = queue.minutes.at(-1);
  await page.getByRole('button', { name: 'Refresh' }).click();
  await until(async () => (await summary.innerText()).includes(`${last.dead_letters} dead letter(s) waiting`), 'the dead letters waiting');
  for (const [id, value] of [['chart-queue', last.queue_depth], ['chart-dead-letters', last.dead_letters]]) {
    const cell = page.getByTestId(id).locator('tbody tr').last().locator('td').last();
    assert.equal(await cell.textContent(), String(value), `${id} ends with the current count`);
  }
  for (const id of ['chart-invocations', 'chart-durations', 'chart-queue', 'chart-dead-letters']) {
    const chart = page.getByTestId(id);
    assert.equal(await chart.locator('canvas').count(), 1, `${id} draws on a canvas`);
    await chart.getByText(/as a table/).click();
    assert.ok(await chart.locator('tbody tr').count() >= 1, `${id} has a table`);
  }
  await audit('overview', false);
  await page.screenshot({ path: `${shots}dashboard-overview.png`, fullPage: true });
});

test('realtime topics are exposed, published to and unexposed; origins set; the key rotated', async () => {
  await page.goto(dash('apps/shop/realtime'));
  await page.getByText('No topic is exposed.').waitFor();
  await page.getByLabel('Topic to expose').fill('orders');
  await page.getByRole('button', { name: 'Expose topic' }).click();
  await page.getByTestId('subscribers-orders').waitFor();
  assert.equal(await page.getByTestId('subscribers-orders').innerText(), '0');
  await page.getByLabel('Topic', { exact: true }).fill('orders');
  await page.getByLabel('Payload (JSON)').fill('{"n": 1}');
  await page.getByRole('button', { name: 'Publish' }).click();
  await page.getByText('Published to orders: its subscribers hear it').waitFor();
  await page.getByLabel('Origins', { exact: true }).fill('https://shop.example\nhttp://localhost:5173');
  await page.getByRole('button', { name: 'Save origins' }).click();
  await page.getByText('Pages from https://shop.example, http://localhost:5173 may open streams.').waitFor();
  const cors = await admin(server, 'GET', '/api/v1/apps/shop/realtime/cors');
  assert.deepEqual(cors.body.origins, ['https://shop.example', 'http://localhost:5173']);
  await page.evaluate(() => window.scrollTo(0, 0));
  await audit('realtime');
  await page.getByLabel('Payload (JSON)').fill('{not json');
  await page.getByRole('button', { name: 'Publish' }).click();
  await page.getByText('The payload must be JSON').waitFor();
  await page.getByLabel('Origins', { exact: true }).fill('ftp://nope/path');
  await page.getByRole('button', { name: 'Save origins' }).click();
  await page.getByText("an origin is '*' or scheme://host[:port]").waitFor();
  await page.getByRole('button', { name: 'Rotate key' }).click();
  assert.match(await page.getByRole('dialog').innerText(), /signed before now stops working/);
  await page.getByRole('dialog').getByRole('button', { name: 'Rotate key' }).click();
  await page.getByText('The signing key is rotated').waitFor();
  await page.getByRole('button', { name: 'Unexpose topic orders' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Unexpose orders' }).click();
  await page.getByText('No topic is exposed.').waitFor();
  const topics = await admin(server, 'GET', '/api/v1/apps/shop/realtime/topics');
  assert.deepEqual(topics.body.topics, []);
});

test('the nodes page lists this server, up', async () => {
  await page.goto(dash('nodes'));
  const row = page.getByRole('row').filter({ hasText: 'up' });
  await row.first().waitFor();
  const { body } = await admin(server, 'GET', '/api/v1/nodes');
  assert.equal(body.nodes.length, 1);
  assert.match(await row.first().innerText(), new RegExp(body.nodes[0].id));
  await audit('nodes');
});

test('data, config and secret names are browsed; a secret value is never shown', async () => {
  await admin(server, 'PUT', '/api/v1/apps/shop/config/greeting', { value: 'hi' });
  await admin(server, 'PUT', '/api/v1/apps/shop/secrets/stripe_key', { value: 'sk_live_hidden' });
  await page.goto(dash('apps/shop/data'));
  await page.getByText('stripe_key').waitFor();
  await page.getByLabel('Key', { exact: true }).fill('mode');
  await page.getByLabel('Value (JSON or text)').fill('"fast"');
  await page.getByRole('button', { name: 'Set config value' }).click();
  await page.getByRole('button', { name: 'Delete config value mode' }).waitFor();
  assert.doesNotMatch(await page.content(), /sk_live_hidden/);
  const { body } = await admin(server, 'GET', '/api/v1/apps/shop/config/mode');
  assert.equal(body.value, 'fast');
  await audit('data');
});

test('a token is created and shown once, then revoked', async () => {
  await page.goto(dash('tokens'));
  await page.getByLabel('Name').fill('ci');
  await page.getByRole('button', { name: 'Create token' }).click();
  const secret = await page.getByTestId('new-token').innerText();
  assert.match(secret, /^pct_[0-9a-f]{64}$/);
  await page.getByRole('button', { name: 'Done' }).click();
  assert.doesNotMatch(await page.content(), new RegExp(secret));
  await audit('tokens');
  await page.getByRole('button', { name: 'Revoke token ci' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Revoke ci' }).click();
  await page.getByRole('button', { name: 'Revoke token ci' }).waitFor({ state: 'detached' });
  const res = await fetch(`${server.url}/api/v1/token`, { headers: { authorization: `Bearer ${secret}` } });
  assert.equal(res.status, 401);
});

test('the overview and every page fit a phone-width screen', async () => {
  await page.goto(dash());
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  await page.setViewportSize({ width: 390, height: 844 });
  try {
    for (const path of ['', 'apps', 'apps/shop/scripts/hello', 'apps/shop/triggers', 'apps/shop/invocations', 'apps/shop/dead-letters', 'apps/shop/data', 'apps/shop/realtime', 'tokens', 'nodes']) {
      await page.goto(dash(path));
      await page.getByRole('button', { name: 'Sign out' }).waitFor();
      await page.getByRole('heading', { level: 1 }).waitFor();
      const overflow = await page.evaluate(() => {
        const wide = [...document.querySelectorAll('body *')]
          .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
          .filter((e) => !e.closest('.table-wrap, .cm-editor, pre'))
          .map((e) => e.tagName.toLowerCase() + (e.className ? '.' + String(e.className).split(' ')[0] : ''));
        return { by: document.documentElement.scrollWidth - window.innerWidth, wide: wide.slice(0, 5) };
      });
      assert.ok(overflow.by <= 0, `${path || 'overview'} scrolls sideways by ${overflow.by}px: ${overflow.wide}`);
    }
    await page.goto(dash('apps/shop/scripts/hello'));
    await page.locator('.cm-content').waitFor();
    await page.screenshot({ path: `${shots}dashboard-phone.png` });
  } finally {
    await page.setViewportSize({ width: 1280, height: 800 });
  }
});

test('an ended session goes back to sign-in and keeps the edit', async () => {
  await page.goto(dash('apps/shop/scripts/hello'));
  await page.getByRole('button', { name: /Roll back to version/ }).first().waitFor();
  // The session ends behind the page's back (as at expiry).
  const [cookie] = await context.cookies();
  const info = await (await fetch(`${server.url}/api/v1/session`, { headers: { cookie: `picloud_session=${cookie.value}` } })).json();
  const ended = await fetch(`${server.url}/api/v1/session`, {
    method: 'DELETE',
    headers: { cookie: `picloud_session=${cookie.value}`, 'x-csrf-token': info.csrf_token }
  });
  assert.equal(ended.status, 204);
  await typeSource('// kept across sign-in\n"v3"\n');
  await page.getByRole('button', { name: 'Deploy' }).click();
  await page.getByText('Your session has ended').waitFor();
  await page.getByLabel('Admin API token').fill(server.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Restored your unsaved edits.').waitFor();
  assert.match(await page.locator('.cm-content').innerText(), /kept across sign-in/);
});

test('signing out ends the session on the server', async () => {
  const [cookie] = await context.cookies();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('Admin API token').waitFor();
  const res = await fetch(`${server.url}/api/v1/apps`, { headers: { cookie: `picloud_session=${cookie.value}` } });
  assert.equal(res.status, 401, 'the old cookie no longer works');
  // Bearer tokens work as before.
  assert.equal((await admin(server, 'GET', '/api/v1/apps')).status, 200);
});
