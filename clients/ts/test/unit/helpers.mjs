// A small HTTP server on 127.0.0.1 whose requests the test answers one by one, and a queue
// that a test awaits instead of sleeping.
import http from "node:http";

/** Values pushed by callbacks, awaited in order by the test. */
export class Channel {
  #items = [];
  #waiting = [];
  push(value) {
    const waiter = this.#waiting.shift();
    if (waiter) waiter(value);
    else this.#items.push(value);
  }
  next() {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift());
    return new Promise((resolve) => this.#waiting.push(resolve));
  }
  get size() {
    return this.#items.length;
  }
}

/**
 * Starts a server on a free loopback port. Each request becomes an entry
 * `{ req, res, url, headers, closed }` that `next()` hands to the test to answer.
 */
export async function startServer() {
  const requests = new Channel();
  const server = http.createServer((req, res) => {
    const closed = new Promise((resolve) => res.on("close", resolve));
    requests.push({ req, res, url: new URL(req.url, "http://127.0.0.1"), headers: req.headers, closed });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    next: () => requests.next(),
    pending: () => requests.size,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Answers with the headers of an event stream and flushes them. */
export function openStream(res, extraHeaders = {}) {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", ...extraHeaders });
  res.flushHeaders();
}

/** One SSE event as text. */
export function event({ id, event: name, data, retry }) {
  let text = "";
  if (retry !== undefined) text += `retry: ${retry}\n`;
  if (id !== undefined) text += `id: ${id}\n`;
  if (name !== undefined) text += `event: ${name}\n`;
  if (data !== undefined) text += `data: ${typeof data === "string" ? data : JSON.stringify(data)}\n`;
  return text + "\n";
}

/** Answers with PiCloud's error JSON. */
export function errorAnswer(res, status, code, message, headers = {}) {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify({ error: { code, message } }));
}
