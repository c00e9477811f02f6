// subscribe() against a small SSE server written here: parsing, reconnection, resume,
// tokens, reset, errors and stopping. Every wait is on a request or a callback, never a
// sleep; delays are checked as the numbers the client reports, not as elapsed time.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { PiCloudError, backoffDelay, subscribe } from "../../dist/index.js";
import { Channel, errorAnswer, event, openStream, startServer } from "./helpers.mjs";

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server.close();
});

/** A subscription whose callbacks feed channels. */
function subscribed(options = {}) {
  const events = new Channel();
  const errors = new Channel();
  const resets = new Channel();
  const opened = new Channel();
  const sub = subscribe({
    url: server.url,
    app: "shop",
    topics: ["orders"],
    token: "t1",
    initialRetryMs: 5,
    onEvent: (e) => events.push(e),
    onError: (error, info) => errors.push({ error, info }),
    onReset: (info) => resets.push(info),
    onOpen: () => opened.push(true),
    ...options,
  });
  return { sub, events, errors, resets, opened };
}

describe("subscribe", { timeout: 20_000 }, () => {
  test("asks for the topics with the token as a bearer header and parses every event", async () => {
    const { sub, events } = subscribed({ topics: ["orders", "chat room"] });
    const { url, headers, res } = await server.next();
    assert.equal(url.pathname, "/shop/_realtime");
    assert.equal(url.searchParams.get("topics"), "orders,chat room");
    assert.equal(headers.authorization, "Bearer t1");
    assert.equal(headers.accept, "text/event-stream");
    assert.equal(headers["last-event-id"], undefined);
    openStream(res);
    // A retry hint, a heartbeat, an event cut in the middle of a line, CRLF line ends,
    // a payload that is not JSON.
    res.write("retry: 3000\n\n: hb\n\n");
    res.write('id: 1\nevent: orders\nda');
    res.write('ta: {"sku":"42","n":[1,2]}\n\n');
    res.write("id: 2\r\nevent: chat room\r\ndata: hello\r\n\r\n");
    res.write(event({ id: 3, event: "orders", data: "line one\ndata: line two" }));
    assert.deepEqual(await events.next(), { id: "1", topic: "orders", data: { sku: "42", n: [1, 2] } });
    assert.deepEqual(await events.next(), { id: "2", topic: "chat room", data: "hello" });
    assert.deepEqual(await events.next(), { id: "3", topic: "orders", data: "line one\nline two" });
    assert.equal(sub.lastEventId, "3");
    sub.close();
    await sub.done;
  });

  test("reconnects after failures with a growing, jittered backoff, then resets it", async () => {
    const { sub, errors, events } = subscribed();
    const delays = [];
    for (let i = 1; i <= 3; i++) {
      const { res } = await server.next();
      errorAnswer(res, 500, "internal", "internal error");
      const { error, info } = await errors.next();
      assert.ok(error instanceof PiCloudError);
      assert.equal(error.status, 500);
      assert.equal(error.code, "internal");
      assert.equal(info.willRetry, true);
      assert.equal(info.attempt, i);
      delays.push(info.delayMs);
    }
    // base 5 ms: [5, 6.25], [10, 12.5], [20, 25] (rounded)
    assert.ok(delays[0] >= 5 && delays[0] <= 7, `first delay ${delays[0]}`);
    assert.ok(delays[1] > delays[0] && delays[1] >= 10 && delays[1] <= 13, `second delay ${delays[1]}`);
    assert.ok(delays[2] > delays[1] && delays[2] >= 20 && delays[2] <= 25, `third delay ${delays[2]}`);

    const { res } = await server.next();
    openStream(res);
    res.end(event({ id: 1, event: "orders", data: {} }));
    await events.next();
    // The stream opened, so the next wait starts from the base again.
    const { error, info } = await errors.next();
    assert.equal(error.code, "disconnected");
    assert.equal(info.attempt, 1);
    assert.ok(info.delayMs >= 5 && info.delayMs <= 7, `delay after a good stream ${info.delayMs}`);
    await server.next();
    sub.close();
    await sub.done;
  });

  test("honours the server's retry hint and resumes with the last id it saw", async () => {
    const { sub, events, errors } = subscribed({ lastEventId: "5" });
    const first = await server.next();
    assert.equal(first.headers["last-event-id"], "5");
    openStream(first.res);
    first.res.write("retry: 120\n\n");
    first.res.write(event({ id: 6, event: "orders", data: { n: 6 } }));
    first.res.end(event({ id: 7, event: "orders", data: { n: 7 } }));
    assert.equal((await events.next()).id, "6");
    assert.equal((await events.next()).id, "7");
    const { error, info } = await errors.next();
    assert.equal(error.code, "disconnected");
    assert.ok(info.delayMs >= 120 && info.delayMs <= 150, `delay ${info.delayMs} follows retry: 120`);
    const second = await server.next();
    assert.equal(second.headers["last-event-id"], "7");
    assert.equal(sub.lastEventId, "7");
    sub.close();
    await sub.done;
  });

  test("a 401 gets a fresh token from getToken and retries at once", async () => {
    const tokens = ["t2", "t3", "t4"];
    let asked = 0;
    const { sub, errors, events } = subscribed({
      getToken: async () => {
        asked += 1;
        return tokens.shift();
      },
    });
    const first = await server.next();
    assert.equal(first.headers.authorization, "Bearer t1", "a given token is used before getToken");
    errorAnswer(first.res, 401, "unauthorized", "the token has expired");
    const second = await server.next();
    assert.equal(second.headers.authorization, "Bearer t2");
    assert.equal(errors.size, 0, "the first 401 is handled without an error");
    // A second 401 in a row is reported and backed off, with yet another token after.
    errorAnswer(second.res, 401, "unauthorized", "invalid token");
    const { error, info } = await errors.next();
    assert.equal(error.status, 401);
    assert.equal(info.willRetry, true);
    const third = await server.next();
    assert.equal(third.headers.authorization, "Bearer t3");
    openStream(third.res);
    third.res.write(event({ id: 1, event: "orders", data: 1 }));
    await events.next();
    assert.equal(asked, 2);
    sub.close();
    await sub.done;
  });

  test("without getToken a 401 is final", async () => {
    const { sub, errors } = subscribed();
    errorAnswer((await server.next()).res, 401, "unauthorized", "invalid token");
    const { error, info } = await errors.next();
    assert.equal(error.code, "unauthorized");
    assert.equal(info.willRetry, false);
    await sub.done;
    assert.equal(server.pending(), 0);
  });

  test("event: expired gets a new token and resumes from the last id without an error", async () => {
    const { sub, events, errors } = subscribed({ token: undefined, getToken: (() => {
      let n = 0;
      return () => `fresh-${++n}`;
    })() });
    const first = await server.next();
    assert.equal(first.headers.authorization, "Bearer fresh-1");
    openStream(first.res);
    first.res.write(event({ id: 41, event: "orders", data: { n: 41 } }));
    first.res.write(event({ event: "expired", data: {} }));
    assert.equal((await events.next()).id, "41");
    // The client does not wait for the server to close: it moves on at once.
    const second = await server.next();
    assert.equal(second.headers.authorization, "Bearer fresh-2");
    assert.equal(second.headers["last-event-id"], "41");
    openStream(second.res);
    second.res.write(event({ id: 42, event: "orders", data: { n: 42 } }));
    assert.equal((await events.next()).id, "42");
    assert.equal(errors.size, 0);
    first.res.end();
    sub.close();
    await sub.done;
  });

  test("event: expired without getToken stops with token_expired", async () => {
    const { sub, errors } = subscribed();
    const { res } = await server.next();
    openStream(res);
    res.end(event({ event: "expired", data: {} }));
    const { error, info } = await errors.next();
    assert.equal(error.code, "token_expired");
    assert.equal(info.willRetry, false);
    await sub.done;
  });

  test("event: reset calls onReset with the oldest id, then the stream goes on", async () => {
    const { sub, events, resets } = subscribed({ lastEventId: "2" });
    const { res } = await server.next();
    openStream(res);
    res.write("retry: 3000\n\n");
    res.write(event({ event: "reset", data: { oldest: 10 } }));
    res.write(event({ id: 10, event: "orders", data: { n: 10 } }));
    assert.deepEqual(await resets.next(), { oldest: "10", lastEventId: "2" });
    assert.deepEqual(await events.next(), { id: "10", topic: "orders", data: { n: 10 } });
    assert.equal(sub.lastEventId, "10");
    sub.close();
    await sub.done;
  });

  for (const [status, code] of [
    [400, "invalid_input"],
    [403, "forbidden"],
    [404, "not_found"],
  ]) {
    test(`a ${status} before the stream is final`, async () => {
      const { sub, errors } = subscribed();
      errorAnswer((await server.next()).res, status, code, "no");
      const { error, info } = await errors.next();
      assert.equal(error.status, status);
      assert.equal(error.code, code);
      assert.equal(error.message, "no");
      assert.equal(info.willRetry, false);
      await sub.done;
      assert.equal(server.pending(), 0);
    });
  }

  test("429 and 503 wait at least Retry-After", async () => {
    const { sub, errors } = subscribed();
    errorAnswer((await server.next()).res, 429, "too_many_requests", "too many subscribers", { "retry-after": "7" });
    const { error, info } = await errors.next();
    assert.equal(error.retryAfterMs, 7000);
    assert.equal(info.willRetry, true);
    assert.ok(info.delayMs >= 7000, `delay ${info.delayMs}`);
    sub.close();
    await sub.done;
    assert.equal(server.pending(), 0, "close() cancels the pending reconnection");
  });

  test("an answer that is not an event stream is retried as bad_stream", async () => {
    const { sub, errors } = subscribed();
    const { res } = await server.next();
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<p>proxy</p>");
    const { error, info } = await errors.next();
    assert.equal(error.code, "bad_stream");
    assert.equal(info.willRetry, true);
    await server.next();
    sub.close();
    await sub.done;
  });

  test("a retry: 0 hint cannot make the client spin", async () => {
    const { sub, errors } = subscribed();
    const { res } = await server.next();
    openStream(res);
    res.end("retry: 0\n\n");
    const { info } = await errors.next();
    assert.ok(info.delayMs >= 100, `delay ${info.delayMs}`);
    sub.close();
    await sub.done;
  });

  test("a silent stream is dropped after heartbeatTimeoutMs and reopened", async () => {
    const { sub, errors, opened } = subscribed({ heartbeatTimeoutMs: 100 });
    const first = await server.next();
    openStream(first.res);
    first.res.write(": hb\n\n");
    await opened.next();
    const { error } = await errors.next();
    assert.equal(error.code, "heartbeat_timeout");
    await first.closed;
    await server.next();
    sub.close();
    await sub.done;
  });

  test("aborting the signal closes the open stream and stops", async () => {
    const controller = new AbortController();
    const { sub, events, errors } = subscribed({ signal: controller.signal });
    const { res, closed } = await server.next();
    openStream(res);
    res.write(event({ id: 1, event: "orders", data: 1 }));
    await events.next();
    controller.abort();
    await sub.done;
    await closed;
    assert.equal(errors.size, 0, "stopping is not an error");
    assert.equal(server.pending(), 0);
  });

  test("close() during a backoff wait stops without another request", async () => {
    const { sub, errors } = subscribed({ initialRetryMs: 60_000 });
    errorAnswer((await server.next()).res, 503, "unavailable", "busy");
    await errors.next();
    sub.close();
    await sub.done;
    assert.equal(server.pending(), 0);
  });

  test("an already aborted signal never connects", async () => {
    const { sub } = subscribed({ signal: AbortSignal.abort() });
    await sub.done;
    assert.equal(server.pending(), 0);
  });

  test("a network error is retried", async () => {
    const dead = await startServer();
    const deadUrl = dead.url;
    await dead.close();
    const { sub, errors } = subscribed({ url: deadUrl });
    const { error, info } = await errors.next();
    assert.equal(error.code, "network_error");
    assert.equal(error.status, 0);
    assert.equal(info.willRetry, true);
    sub.close();
    await sub.done;
  });

  test("needs a token or getToken, and a topic", () => {
    assert.throws(() => subscribe({ url: server.url, app: "shop", topics: ["a"], onEvent() {} }), TypeError);
    assert.throws(() => subscribe({ url: server.url, app: "shop", topics: [], token: "t", onEvent() {} }), TypeError);
  });
});

describe("backoffDelay", () => {
  test("doubles per attempt, is capped, and adds at most a quarter of jitter", () => {
    assert.equal(backoffDelay(0, 1000, 30_000, () => 0), 1000);
    assert.equal(backoffDelay(0, 1000, 30_000, () => 1), 1250);
    assert.equal(backoffDelay(3, 1000, 30_000, () => 0), 8000);
    assert.equal(backoffDelay(10, 1000, 30_000, () => 0), 30_000);
    assert.equal(backoffDelay(1000, 1000, 30_000, () => 0.5), 33_750);
  });
});
