// Chromium (Debian's, driven by playwright-core) against a real PiCloud server: one page
// loads the built client and receives events; one uses the browser's own EventSource with
// `?token=`. The pages come from a small server here that also passes every other path on
// to PiCloud, so page and API share one origin, as behind a reverse proxy.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import http from "node:http";
import { dirname, join, normalize } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { createClient } from "../../dist/index.js";
import { shopApp, startPiCloud } from "./picloud.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

const CLIENT_PAGE = `<!doctype html>
<meta charset="utf-8">
<title>client</title>
<script type="importmap">{ "imports": { "eventsource-parser": "/vendor/eventsource-parser.js" } }</script>
<script type="module">
  import { createClient } from "/client/index.js";
  const client = createClient(); // the page's origin
  window.received = [];
  window.opened = 0;
  client.subscribe({
    app: "shop",
    topics: ["orders"],
    getToken: async () => (await client.call("shop", "POST /token")).token,
    onOpen: () => { window.opened += 1; },
    onEvent: (event) => { window.received.push(event); },
    onError: (error) => { window.lastError = error.code + ": " + error.message; },
  });
</script>`;

// The plain-EventSource example of the README: the token in the query, and at `expired` a
// new EventSource with a fresh token that resumes with `last_event_id`.
const EVENTSOURCE_PAGE = `<!doctype html>
<meta charset="utf-8">
<title>eventsource</title>
<script type="module">
  window.received = [];
  window.opened = 0;
  const ttl = new URLSearchParams(location.search).get("ttl") ?? "300";
  let lastId = "";
  async function open() {
    const { token } = await fetch("/shop/token?ttl=" + ttl, { method: "POST" }).then((r) => r.json());
    const query = new URLSearchParams({ topics: "orders", token });
    if (lastId) query.set("last_event_id", lastId);
    const source = new EventSource("/shop/_realtime?" + query);
    source.onopen = () => { window.opened += 1; };
    source.addEventListener("orders", (e) => {
      lastId = e.lastEventId;
      window.received.push({ id: e.lastEventId, topic: e.type, data: JSON.parse(e.data) });
    });
    source.addEventListener("expired", () => {
      source.close();
      open();
    });
  }
  open();
</script>`;

/** Serves the two pages, the built client and its one dependency; proxies the rest. */
async function pageServer(picloudUrl) {
  const upstream = new URL(picloudUrl);
  const files = {
    "/vendor/eventsource-parser.js": join(ROOT, "node_modules", "eventsource-parser", "dist", "index.js"),
  };
  const server = http.createServer(async (req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    const send = (type, body) => {
      res.writeHead(200, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    };
    if (path === "/client.html") return send("text/html", CLIENT_PAGE);
    if (path === "/eventsource.html") return send("text/html", EVENTSOURCE_PAGE);
    if (files[path]) return send("text/javascript", await readFile(files[path]));
    if (path.startsWith("/client/") && path.endsWith(".js")) {
      const file = normalize(join(ROOT, "dist", path.slice("/client/".length)));
      if (!file.startsWith(join(ROOT, "dist"))) return res.writeHead(404).end();
      return send("text/javascript", await readFile(file));
    }
    if (path === "/favicon.ico") return res.writeHead(404).end();
    const proxied = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    proxied.on("error", () => res.destroy());
    res.on("close", () => proxied.destroy());
    req.pipe(proxied);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe("in Chromium", { timeout: 120_000 }, () => {
  let picloud;
  let pages;
  let browser;
  before(async () => {
    picloud = await startPiCloud("sqlite");
    await shopApp(picloud);
    pages = await pageServer(picloud.url);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
  });
  after(async () => {
    await browser?.close();
    await pages?.close();
    await picloud?.stop();
  });

  /** Opens `path`, waits until its stream is open, publishes, and returns what arrived. */
  async function receiveIn(path, payloads) {
    const page = await browser.newPage();
    const problems = [];
    page.on("pageerror", (error) => problems.push(error.message));
    try {
      await page.goto(`${pages.url}${path}`);
      await page.waitForFunction(() => window.opened >= 1);
      const client = createClient({ url: picloud.url });
      for (const payload of payloads) {
        await client.call("shop", `POST /orders/${payload.sku}`, { body: { n: payload.n } });
      }
      await page.waitForFunction((count) => window.received.length >= count, payloads.length);
      assert.deepEqual(problems, []);
      return await page.evaluate(() => window.received);
    } finally {
      await page.close();
    }
  }

  test("a page with the built client receives the events a script publishes", async () => {
    const received = await receiveIn("/client.html", [
      { sku: "b1", n: 1 },
      { sku: "b2", n: 2 },
    ]);
    assert.deepEqual(
      received.map((e) => [e.topic, e.data]),
      [
        ["orders", { sku: "b1", n: 1 }],
        ["orders", { sku: "b2", n: 2 }],
      ],
    );
    assert.ok(BigInt(received[1].id) > BigInt(received[0].id));
  });

  test("the browser's own EventSource reopens with a fresh token at expiry and misses nothing", async () => {
    const page = await browser.newPage();
    try {
      await page.goto(`${pages.url}/eventsource.html?ttl=1`);
      await page.waitForFunction(() => window.opened >= 1);
      const client = createClient({ url: picloud.url });
      await client.call("shop", "POST /orders/x1", { body: { n: 1 } });
      // While the first token expires and the page opens a second stream, publish more.
      let n = 1;
      while ((await page.evaluate(() => window.opened)) < 2 && n < 5_000) {
        n += 1;
        await client.call("shop", `POST /orders/x${n}`, { body: { n } });
      }
      assert.ok((await page.evaluate(() => window.opened)) >= 2, "the page reopened its stream");
      n += 1;
      await client.call("shop", `POST /orders/x${n}`, { body: { n } });
      await page.waitForFunction((count) => window.received.length >= count, n);
      const received = await page.evaluate(() => window.received.map((e) => e.data.n));
      assert.deepEqual(received, Array.from({ length: n }, (_, i) => i + 1));
    } finally {
      await page.close();
    }
  });

  test("the browser's own EventSource subscribes with ?token= and receives events", async () => {
    const received = await receiveIn("/eventsource.html", [{ sku: "e1", n: 3 }]);
    assert.equal(received.length, 1);
    assert.equal(received[0].topic, "orders");
    assert.deepEqual(received[0].data, { sku: "e1", n: 3 });
    assert.match(received[0].id, /^\d+$/);
  });
});
