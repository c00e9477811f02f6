/**
 * `subscribe(...)`: an app's realtime topics over SSE, read with streaming `fetch` so that
 * the token travels as `Authorization: Bearer`.
 *
 * One loop per subscription: get a token, open `GET {url}/{app}/_realtime?topics=...`
 * (with `Last-Event-ID` once an event has been seen), feed the body to the SSE parser,
 * and when the stream ends or fails, wait (exponential backoff with jitter, never less
 * than the server's `retry:` hint or `Retry-After`) and open it again from the last id.
 * `event: expired` and a 401 fetch a fresh token and resume at once; `close()` or the
 * caller's `AbortSignal` stop everything.
 */
import { createParser } from "eventsource-parser";

import { PiCloudError, errorFromResponse, isAbortError } from "./errors.js";
import { appUrl, defaultFetch } from "./url.js";

/** One event of a topic. */
export interface RealtimeEvent<T = unknown> {
  /** The event's id (ids increase per app in commit order). */
  id: string;
  /** The topic the event was published to. */
  topic: string;
  /** The published payload, parsed from JSON (the raw text if it is not JSON). */
  data: T;
}

/** The server no longer had the events after the id we resumed from. */
export interface ResetInfo {
  /** The oldest event id the server still has; the stream continues from there. */
  oldest: string | undefined;
  /** The id the client asked to resume after. */
  lastEventId: string | undefined;
}

export interface ErrorInfo {
  /** `false` when the subscription has stopped for good (the error is final). */
  willRetry: boolean;
  /** How long the client waits before the next attempt, when it retries. */
  delayMs: number | undefined;
  /** Failed attempts in a row, counting this one. */
  attempt: number;
}

export interface SubscribeOptions {
  /** The server, e.g. `https://picloud.example.com`. Defaults to the page's origin. */
  url?: string | undefined;
  app: string;
  topics: readonly string[];
  /** A subscription token minted by one of the app's scripts with `realtime::token(...)`. */
  token?: string | undefined;
  /**
   * Returns a fresh token. Called at the start when no `token` is given, and again after a
   * 401 or at the token's expiry (`event: expired`).
   */
  getToken?: (() => string | Promise<string>) | undefined;
  /** Resume after this event id (e.g. one kept in `sessionStorage`). */
  lastEventId?: string | undefined;
  onEvent: (event: RealtimeEvent) => void;
  /** The requested id was older than the server's replay buffer: events were missed. */
  onReset?: ((info: ResetInfo) => void) | undefined;
  /** A failed or lost connection; `info.willRetry` says whether the client carries on. */
  onError?: ((error: PiCloudError, info: ErrorInfo) => void) | undefined;
  /** A stream is open (the first one and each reconnection). */
  onOpen?: (() => void) | undefined;
  signal?: AbortSignal | undefined;
  /** Backoff before the server's `retry:` hint is known, in ms (default 1000). */
  initialRetryMs?: number | undefined;
  /** Upper bound of the backoff before jitter, in ms (default 30000). */
  maxRetryMs?: number | undefined;
  /**
   * Reconnect when nothing (not even a heartbeat) arrived for this long, in ms (default
   * 45000, three of the server's default 15 s heartbeats; 0 turns the check off).
   */
  heartbeatTimeoutMs?: number | undefined;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch | undefined;
}

export interface Subscription {
  /** Stops the subscription: closes the stream and cancels any pending reconnection. */
  close(): void;
  /** The id of the last event received (or the one given), to resume from later. */
  readonly lastEventId: string | undefined;
  /** Settles when the subscription has stopped, by `close()`, abort or a final error. */
  readonly done: Promise<void>;
}

const DEFAULT_INITIAL_RETRY_MS = 1000;
const DEFAULT_MAX_RETRY_MS = 30_000;
const DEFAULT_HEARTBEAT_TIMEOUT_MS = 45_000;
/** A `retry:` hint below this is raised to it, so that `retry: 0` cannot spin. */
const MIN_SERVER_RETRY_MS = 100;
/** Bound on one event's buffered text, so a broken stream cannot take all memory. */
const MAX_EVENT_CHARS = 16 * 1024 * 1024;

/**
 * The wait before attempt `attempt + 1`: `base * 2^attempt` capped at `max`, plus up to a
 * quarter more of jitter, so that clients cut off together do not come back together and
 * no wait is shorter than what the server asked for.
 */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const exp = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(exp * (1 + random() * 0.25));
}

/** How one stream ended. */
type StreamEnd = "expired" | "ended" | "heartbeat_timeout";

class Stopped extends Error {}

export function subscribe(options: SubscribeOptions): Subscription {
  if (options.token === undefined && options.getToken === undefined) {
    throw new TypeError("PiCloud subscribe: give a `token` or a `getToken` function");
  }
  if (options.topics.length === 0) {
    throw new TypeError("PiCloud subscribe: `topics` must name at least one topic");
  }
  const endpoint = `${appUrl(options.url, options.app)}/_realtime?topics=${options.topics
    .map(encodeURIComponent)
    .join(",")}`;
  const doFetch = options.fetch ?? defaultFetch();
  const maxRetryMs = options.maxRetryMs ?? DEFAULT_MAX_RETRY_MS;
  const heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? DEFAULT_HEARTBEAT_TIMEOUT_MS;

  let lastEventId = options.lastEventId === "" ? undefined : options.lastEventId;
  let token = options.token;
  let retryMs = options.initialRetryMs ?? DEFAULT_INITIAL_RETRY_MS;
  let closed = false;
  /** Aborts the current request or wait. */
  let current = new AbortController();

  const close = (): void => {
    if (closed) return;
    closed = true;
    current.abort();
  };
  const signal = options.signal;
  if (signal?.aborted) closed = true;
  signal?.addEventListener("abort", close, { once: true });

  /** A user callback's exception must not end the subscription, nor vanish. */
  const guarded = <A extends unknown[]>(fn: ((...args: A) => void) | undefined, ...args: A): void => {
    if (!fn) return;
    try {
      fn(...args);
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  };

  async function freshToken(): Promise<string> {
    let value: unknown;
    try {
      value = await options.getToken!();
    } catch (error) {
      if (closed) throw new Stopped();
      throw new PiCloudError({ status: 0, code: "token_error", message: "getToken() failed", cause: error });
    }
    if (typeof value !== "string" || value.length === 0) {
      throw new PiCloudError({ status: 0, code: "token_error", message: "getToken() returned no token" });
    }
    return value;
  }

  /** Waits `ms`, or less if the subscription is closed meanwhile. */
  function wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const ctl = (current = new AbortController());
      const timer = setTimeout(resolve, ms);
      ctl.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Opens one stream and reads it to its end. */
  async function connect(bearer: string): Promise<Response> {
    const ctl = (current = new AbortController());
    if (closed) throw new Stopped();
    const headers: Record<string, string> = {
      accept: "text/event-stream",
      authorization: `Bearer ${bearer}`,
    };
    if (lastEventId !== undefined) headers["last-event-id"] = lastEventId;
    try {
      return await doFetch(endpoint, { headers, cache: "no-store", signal: ctl.signal });
    } catch (error) {
      if (closed) throw new Stopped();
      if (isAbortError(error)) throw error;
      throw new PiCloudError({
        status: 0,
        code: "network_error",
        message: `cannot reach ${endpoint}: ${error instanceof Error ? error.message : String(error)}`,
        cause: error,
      });
    }
  }

  async function read(res: Response): Promise<StreamEnd> {
    const ctl = current;
    const body = res.body;
    if (!body) return "ended";
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let end: StreamEnd | undefined;
    let watchdog: ReturnType<typeof setTimeout> | undefined;
    const arm = (): void => {
      if (heartbeatTimeoutMs <= 0) return;
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        end = "heartbeat_timeout";
        void reader.cancel().catch(() => {});
      }, heartbeatTimeoutMs);
    };
    const onAbort = (): void => void reader.cancel().catch(() => {});
    ctl.signal.addEventListener("abort", onAbort, { once: true });

    const parser = createParser({
      maxBufferSize: MAX_EVENT_CHARS,
      onRetry(ms) {
        retryMs = Math.max(ms, MIN_SERVER_RETRY_MS);
      },
      onEvent(message) {
        if (end !== undefined || closed) return;
        const topic = message.event ?? "message";
        if (topic === "expired") {
          end = "expired";
          return;
        }
        const requested = lastEventId;
        if (message.id !== undefined && message.id !== "") lastEventId = message.id;
        const data = parseData(message.data);
        if (topic === "reset") {
          const oldest = (data as { oldest?: unknown } | null)?.oldest;
          guarded(options.onReset, {
            oldest: oldest === undefined || oldest === null ? undefined : String(oldest),
            lastEventId: requested,
          });
          return;
        }
        guarded(options.onEvent, { id: message.id ?? "", topic, data });
      },
      onError() {
        // A malformed line is skipped, as an EventSource does.
      },
    });

    arm();
    try {
      while (end === undefined && !closed) {
        const chunk = await reader.read();
        if (chunk.done) break;
        arm();
        parser.feed(decoder.decode(chunk.value, { stream: true }));
      }
    } catch (error) {
      if (closed) throw new Stopped();
      if (end === undefined) {
        throw new PiCloudError({ status: 0, code: "disconnected", message: "the stream broke off", cause: error });
      }
    } finally {
      clearTimeout(watchdog);
      ctl.signal.removeEventListener("abort", onAbort);
      void reader.cancel().catch(() => {});
    }
    if (closed) throw new Stopped();
    return end ?? "ended";
  }

  /** What one attempt came to: go again at once, or an error to wait on (or stop at). */
  type Outcome = { again: true } | { again: false; error: PiCloudError; final: boolean };
  const again: Outcome = { again: true };
  const retry = (error: PiCloudError): Outcome => ({ again: false, error, final: false });
  const stop = (error: PiCloudError): Outcome => ({ again: false, error, final: true });

  let unauthorized = 0;
  let needToken = token === undefined;
  /** Failed attempts in a row; 0 after a stream opened. */
  let failures = 0;

  /** One connection: a token if needed, the request, then the stream to its end. */
  async function attempt(): Promise<Outcome> {
    if (needToken) {
      token = await freshToken();
      needToken = false;
    }
    const res = await connect(token!);
    if (!res.ok) {
      const error = await errorFromResponse(res);
      if (res.status === 401 && options.getToken !== undefined) {
        needToken = true;
        unauthorized += 1;
        // The token may just have expired: one fresh token at once, then back off.
        return unauthorized === 1 ? again : retry(error);
      }
      const transient = res.status === 408 || res.status === 429 || res.status >= 500;
      return transient ? retry(error) : stop(error);
    }
    const type = res.headers.get("content-type") ?? "";
    if (!type.toLowerCase().startsWith("text/event-stream")) {
      void res.body?.cancel().catch(() => {});
      const message = `expected text/event-stream, got ${type || "no content type"}`;
      return retry(new PiCloudError({ status: res.status, code: "bad_stream", message }));
    }
    failures = 0;
    unauthorized = 0;
    guarded(options.onOpen);
    switch (await read(res)) {
      case "expired":
        if (options.getToken === undefined) {
          const message = "the token expired and there is no getToken to renew it";
          return stop(new PiCloudError({ status: 0, code: "token_expired", message }));
        }
        needToken = true;
        return again;
      case "heartbeat_timeout": {
        const message = `nothing arrived for ${heartbeatTimeoutMs} ms`;
        return retry(new PiCloudError({ status: 0, code: "heartbeat_timeout", message }));
      }
      case "ended":
        return retry(new PiCloudError({ status: 0, code: "disconnected", message: "the stream ended" }));
    }
  }

  async function run(): Promise<void> {
    while (!closed) {
      let outcome: Outcome;
      try {
        outcome = await attempt();
      } catch (caught) {
        if (closed || caught instanceof Stopped) break;
        outcome = retry(
          caught instanceof PiCloudError
            ? caught
            : new PiCloudError({
                status: 0,
                code: "network_error",
                message: caught instanceof Error ? caught.message : String(caught),
                cause: caught,
              }),
        );
      }
      if (closed) break;
      if (outcome.again) continue;
      failures += 1;
      if (outcome.final) {
        guarded(options.onError, outcome.error, { willRetry: false, delayMs: undefined, attempt: failures });
        break;
      }
      const delayMs = Math.max(backoffDelay(failures - 1, retryMs, maxRetryMs), outcome.error.retryAfterMs ?? 0);
      guarded(options.onError, outcome.error, { willRetry: true, delayMs, attempt: failures });
      await wait(delayMs);
    }
    closed = true;
    signal?.removeEventListener("abort", close);
  }

  const done = run();
  return {
    close,
    get lastEventId() {
      return lastEventId;
    },
    done,
  };
}

function parseData(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
