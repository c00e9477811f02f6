// The built client against a real PiCloud server (PICLOUD_BIN), on SQLite and, when
// PICLOUD_TEST_DATABASE_URL is set, on PostgreSQL: events a script publishes, resume by
// id, token expiry, errors before the stream, and call().
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { PiCloudError, createClient } from "../../dist/index.js";
import { Channel } from "../unit/helpers.mjs";
import { backends, shopApp, startPiCloud } from "./picloud.mjs";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

for (const backend of backends()) {
  describe(`against a real server on ${backend}`, { timeout: 120_000 }, () => {
    let server;
    let client;
    before(async () => {
      server = await startPiCloud(backend);
      await shopApp(server);
      client = createClient({ url: server.url });
    });
    after(async () => {
      await server?.stop();
    });

    /** A subscription to `orders` whose tokens come from the app's own token route. */
    function subscribed(options = {}) {
      const events = new Channel();
      const errors = new Channel();
      const opened = new Channel();
      const resets = new Channel();
      let tokens = 0;
      const ttl = options.ttl;
      const topics = options.topics ?? ["orders"];
      const sub = client.subscribe({
        app: "shop",
        topics,
        getToken: async () => {
          tokens += 1;
          const query = { ttl, topics: topics.join(",") };
          const { token } = await client.call("shop", "POST /token", { query });
          return token;
        },
        onEvent: (e) => events.push(e),
        onError: (error, info) => errors.push({ error, info }),
        onOpen: () => opened.push(true),
        onReset: (info) => resets.push(info),
        ...options.subscribe,
      });
      return { sub, events, errors, opened, resets, tokens: () => tokens };
    }

    test("an event a script publishes reaches the subscriber, with an id and the topic", async () => {
      const { sub, events, opened } = subscribed();
      await opened.next();
      assert.deepEqual(await client.call("shop", "POST /orders/a1", { body: { n: 1 } }), { ok: true });
      const event = await events.next();
      assert.equal(event.topic, "orders");
      assert.deepEqual(event.data, { sku: "a1", n: 1 });
      assert.match(event.id, /^\d+$/);
      assert.equal(sub.lastEventId, event.id);
      sub.close();
      await sub.done;
    });

    test("a client that resumes from its last id gets exactly what it missed, then live events", async () => {
      const first = subscribed();
      await first.opened.next();
      await server.publish("shop", "orders", { n: "seen" });
      const seen = await first.events.next();
      first.sub.close();
      await first.sub.done;

      await server.publish("shop", "orders", { n: "missed-1" });
      await server.publish("shop", "orders", { n: "missed-2" });

      const second = subscribed({ subscribe: { lastEventId: first.sub.lastEventId } });
      const m1 = await second.events.next();
      const m2 = await second.events.next();
      assert.deepEqual([m1.data, m2.data], [{ n: "missed-1" }, { n: "missed-2" }]);
      assert.ok(BigInt(m1.id) > BigInt(seen.id) && BigInt(m2.id) > BigInt(m1.id), "ids increase");
      await server.publish("shop", "orders", { n: "live" });
      const live = await second.events.next();
      assert.deepEqual(live.data, { n: "live" });
      assert.equal(second.events.size, 0, "no duplicate at the seam");
      assert.equal(second.resets.size, 0);
      second.sub.close();
      await second.sub.done;
    });

    test("a resume id the server does not have calls onReset, then the buffer comes from the oldest", async () => {
      await server.publish("shop", "orders", { n: "before-reset" });
      const { sub, events, resets } = subscribed({ subscribe: { lastEventId: "999999999" } });
      const reset = await resets.next();
      assert.equal(reset.lastEventId, "999999999");
      assert.match(reset.oldest, /^\d+$/);
      const first = await events.next();
      assert.equal(first.id, reset.oldest, "the stream goes on from the oldest event kept");
      sub.close();
      await sub.done;
    });

    test("at the token's expiry the client gets a new token and loses nothing", async (t) => {
      const { sub, events, opened, errors, tokens } = subscribed({ ttl: 1 });
      await opened.next();
      // Publish without pause until the token has been renewed twice, then once more.
      let n = 0;
      while (tokens() < 3 && n < 20_000) {
        n += 1;
        await server.publish("shop", "orders", { n });
      }
      assert.ok(tokens() >= 3, "the token was renewed");
      n += 1;
      await server.publish("shop", "orders", { n });
      for (let i = 1; i <= n; i++) {
        const event = await events.next();
        assert.deepEqual(event.data, { n: i }, `event ${i} of ${n}`);
      }
      assert.equal(errors.size, 0, "expiry is not an error");
      t.diagnostic(`${n} events in order across ${tokens()} tokens`);
      sub.close();
      await sub.done;
    });

    test("a topic that is not exposed is refused with 403 and the client stops", async () => {
      // A valid token for the topic: only the exposure is missing.
      const { sub, errors } = subscribed({ topics: ["secret"] });
      const { error, info } = await errors.next();
      assert.ok(error instanceof PiCloudError);
      assert.equal(error.status, 403);
      assert.equal(error.code, "forbidden");
      assert.equal(info.willRetry, false);
      await sub.done;
    });

    test("a forged token is a final 401", async () => {
      const events = new Channel();
      const errors = new Channel();
      const sub = client.subscribe({
        app: "shop",
        topics: ["orders"],
        token: "not-a-token",
        onEvent: (e) => events.push(e),
        onError: (error, info) => errors.push({ error, info }),
      });
      const { error, info } = await errors.next();
      assert.equal(error.status, 401);
      assert.equal(error.code, "unauthorized");
      assert.equal(info.willRetry, false);
      await sub.done;
    });

    test("an unknown app is a final 404", async () => {
      const errors = new Channel();
      const sub = client.subscribe({
        app: "no-such-app",
        topics: ["orders"],
        token: "t",
        onEvent() {},
        onError: (error, info) => errors.push({ error, info }),
      });
      const { error, info } = await errors.next();
      assert.equal(error.status, 404);
      assert.equal(info.willRetry, false);
      await sub.done;
    });

    test("call() returns the script's JSON and throws PiCloudError with the invocation id", async () => {
      const { token } = await client.call("shop", "POST /token");
      assert.equal(typeof token, "string");
      await assert.rejects(client.call("shop", "POST /fail"), (error) => {
        assert.ok(error instanceof PiCloudError);
        assert.equal(error.status, 500);
        assert.equal(error.code, "script_failed");
        assert.match(error.invocationId, UUID);
        assert.ok(error.message.includes(error.invocationId), error.message);
        return true;
      });
      await assert.rejects(client.call("shop", "GET /nowhere"), (error) => {
        assert.equal(error.status, 404);
        assert.equal(error.code, "not_found");
        assert.equal(error.invocationId, undefined);
        return true;
      });
    });
  });
}
