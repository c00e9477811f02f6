// call() against a small server written here: the request it makes, what it returns, and
// the PiCloudError it throws.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { PiCloudError, call, createClient, parseRoute } from "../../dist/index.js";
import { errorAnswer, startServer } from "./helpers.mjs";

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server.close();
});

async function bodyOf(req) {
  let text = "";
  for await (const chunk of req) text += chunk;
  return text;
}

describe("call", { timeout: 20_000 }, () => {
  test("sends METHOD /{app}/path with the query, headers and a JSON body, and returns JSON", async () => {
    const result = call("shop", "post /orders/42", {
      url: `${server.url}/`,
      query: { a: 1, b: ["x", "y"], skipped: undefined, none: null, flag: true },
      headers: { "x-trace": "abc" },
      token: "user-token",
      body: { qty: 2 },
    });
    const { req, res, url, headers } = await server.next();
    assert.equal(req.method, "POST");
    assert.equal(url.pathname, "/shop/orders/42");
    assert.equal(url.search, "?a=1&b=x&b=y&flag=true");
    assert.equal(headers["content-type"], "application/json");
    assert.equal(headers.accept, "application/json");
    assert.equal(headers["x-trace"], "abc");
    assert.equal(headers.authorization, "Bearer user-token");
    assert.deepEqual(JSON.parse(await bodyOf(req)), { qty: 2 });
    res.writeHead(201, { "content-type": "application/json" });
    res.end(JSON.stringify({ id: 42, ok: true }));
    assert.deepEqual(await result, { id: 42, ok: true });
  });

  test("a bare path is a GET; text comes back as text and an empty answer as undefined", async () => {
    const text = call("shop", "/hello?name=Pi", { url: server.url, query: { x: "1" } });
    let entry = await server.next();
    assert.equal(entry.req.method, "GET");
    assert.equal(entry.url.search, "?name=Pi&x=1");
    entry.res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
    entry.res.end("Hello, Pi!");
    assert.equal(await text, "Hello, Pi!");

    const empty = call("shop", "DELETE /orders/1", { url: server.url });
    entry = await server.next();
    assert.equal(entry.req.method, "DELETE");
    entry.res.writeHead(204);
    entry.res.end();
    assert.equal(await empty, undefined);
  });

  test("a string body is sent as it is", async () => {
    const result = call("shop", "PUT /notes/1", { url: server.url, body: "plain words" });
    const { req, res, headers } = await server.next();
    assert.equal(await bodyOf(req), "plain words");
    assert.match(headers["content-type"], /^text\/plain/);
    res.end();
    await result;
  });

  test("PiCloud's error JSON becomes a PiCloudError with status, code, message and invocation id", async () => {
    const result = call("shop", "POST /orders/42", { url: server.url, body: {} });
    const { res } = await server.next();
    errorAnswer(res, 500, "script_failed", "the script failed (invocation 0193-abc)", {
      "x-picloud-invocation-id": "0193-abc",
    });
    await assert.rejects(result, (error) => {
      assert.ok(error instanceof PiCloudError);
      assert.ok(error instanceof Error);
      assert.equal(error.name, "PiCloudError");
      assert.equal(error.status, 500);
      assert.equal(error.code, "script_failed");
      assert.equal(error.message, "the script failed (invocation 0193-abc)");
      assert.equal(error.invocationId, "0193-abc");
      assert.deepEqual(error.body, { error: { code: "script_failed", message: "the script failed (invocation 0193-abc)" } });
      return true;
    });
  });

  test("429 carries Retry-After; an error that is not PiCloud's JSON is http_error with its text", async () => {
    const limited = call("shop", "GET /x", { url: server.url });
    errorAnswer((await server.next()).res, 429, "too_many_requests", "slow down", { "retry-after": "2" });
    await assert.rejects(limited, (error) => error.code === "too_many_requests" && error.retryAfterMs === 2000);

    const custom = call("shop", "GET /x", { url: server.url });
    const { res } = await server.next();
    res.writeHead(418, { "content-type": "text/plain" });
    res.end("I am a teapot");
    await assert.rejects(custom, (error) => {
      assert.equal(error.status, 418);
      assert.equal(error.code, "http_error");
      assert.equal(error.message, "I am a teapot");
      assert.equal(error.invocationId, undefined);
      return true;
    });
  });

  test("no server is a network_error with status 0", async () => {
    const dead = await startServer();
    const url = dead.url;
    await dead.close();
    await assert.rejects(call("shop", "GET /x", { url }), (error) => {
      assert.ok(error instanceof PiCloudError);
      assert.equal(error.status, 0);
      assert.equal(error.code, "network_error");
      assert.ok(error.cause);
      return true;
    });
  });

  test("an aborted call rejects with the AbortError itself", async () => {
    const controller = new AbortController();
    const result = call("shop", "GET /slow", { url: server.url, signal: controller.signal });
    await server.next();
    controller.abort();
    await assert.rejects(result, { name: "AbortError" });
  });

  test("createClient binds the server URL", async () => {
    const client = createClient({ url: server.url });
    const result = client.call("shop", "GET /ping");
    const { url, res } = await server.next();
    assert.equal(url.pathname, "/shop/ping");
    res.writeHead(200, { "content-type": "application/json" });
    res.end("true");
    assert.equal(await result, true);
  });

  test("parseRoute reads METHOD and path and rejects a path without /", () => {
    assert.deepEqual(parseRoute("post /orders/42"), ["POST", "/orders/42"]);
    assert.deepEqual(parseRoute("/hello"), ["GET", "/hello"]);
    assert.throws(() => parseRoute("GET orders"), TypeError);
  });

  test("call() without a url outside a page, or with a bad route, rejects with TypeError", async () => {
    await assert.rejects(call("shop", "orders", { url: server.url }), TypeError);
    await assert.rejects(call("shop", "GET /x"), TypeError);
  });
});
