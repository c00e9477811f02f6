/**
 * `call(app, "POST /orders/42", { query, headers, body })`: an app's own endpoints, served
 * at `{url}/{app}/...`, JSON in and out, errors thrown as {@link PiCloudError}.
 */
import { INVOCATION_ID_HEADER, PiCloudError, errorFromResponse, isAbortError } from "./errors.js";
import { appUrl, defaultFetch } from "./url.js";

export type QueryValue = string | number | boolean | null | undefined;

export interface CallOptions {
  /** The server, e.g. `https://picloud.example.com`. Defaults to the page's origin. */
  url?: string | undefined;
  /** Query parameters; `undefined` and `null` values are left out, arrays repeat the key. */
  query?: Record<string, QueryValue | readonly QueryValue[]> | undefined;
  headers?: HeadersInit | undefined;
  /**
   * The request body. Plain values (objects, arrays, numbers, booleans, `null`) are sent as
   * JSON with `content-type: application/json`; a string, `Blob`, `ArrayBuffer`, typed
   * array, `FormData`, `URLSearchParams` or `ReadableStream` is sent as it is.
   */
  body?: unknown;
  /** Sent as `Authorization: Bearer <token>` (an explicit `authorization` header wins). */
  token?: string | undefined;
  signal?: AbortSignal | undefined;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch | undefined;
}

const METHOD_AND_PATH = /^\s*([A-Za-z]+)\s+(\S+)\s*$/;

/** `"POST /orders/42"` -> `["POST", "/orders/42"]`; a bare path is a GET. */
export function parseRoute(route: string): [method: string, path: string] {
  const match = METHOD_AND_PATH.exec(route);
  const [method, path] = match ? [match[1]!.toUpperCase(), match[2]!] : ["GET", route.trim()];
  if (!path.startsWith("/")) {
    throw new TypeError(`PiCloud client: the route must be "METHOD /path", got ${JSON.stringify(route)}`);
  }
  return [method, path];
}

function isRawBody(body: unknown): body is BodyInit {
  return (
    typeof body === "string" ||
    (typeof Blob !== "undefined" && body instanceof Blob) ||
    body instanceof ArrayBuffer ||
    ArrayBuffer.isView(body) ||
    (typeof FormData !== "undefined" && body instanceof FormData) ||
    body instanceof URLSearchParams ||
    (typeof ReadableStream !== "undefined" && body instanceof ReadableStream)
  );
}

function queryString(query: CallOptions["query"]): string {
  if (!query) return "";
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    const values = Array.isArray(value) ? value : [value];
    for (const v of values as QueryValue[]) {
      if (v !== undefined && v !== null) params.append(key, String(v));
    }
  }
  return params.toString();
}

/** Calls `METHOD {url}/{app}{path}` and returns the answer's JSON (or text). */
export async function call<T = unknown>(app: string, route: string, options: CallOptions = {}): Promise<T> {
  const [method, path] = parseRoute(route);
  const qs = queryString(options.query);
  const target = appUrl(options.url, app) + path + (qs ? (path.includes("?") ? "&" : "?") + qs : "");

  const headers = new Headers(options.headers);
  if (!headers.has("accept")) headers.set("accept", "application/json");
  if (options.token !== undefined && !headers.has("authorization")) {
    headers.set("authorization", `Bearer ${options.token}`);
  }
  let body: BodyInit | undefined;
  if (options.body !== undefined) {
    if (isRawBody(options.body)) {
      body = options.body;
    } else {
      body = JSON.stringify(options.body);
      if (!headers.has("content-type")) headers.set("content-type", "application/json");
    }
  }

  const init: RequestInit & { duplex?: "half" } = { method, headers };
  if (body !== undefined) init.body = body;
  if (typeof ReadableStream !== "undefined" && body instanceof ReadableStream) init.duplex = "half";
  if (options.signal) init.signal = options.signal;

  let res: Response;
  try {
    res = await (options.fetch ?? defaultFetch())(target, init);
  } catch (error) {
    if (isAbortError(error)) throw error;
    throw new PiCloudError({
      status: 0,
      code: "network_error",
      message: `${method} ${target} failed: ${error instanceof Error ? error.message : String(error)}`,
      cause: error,
    });
  }
  if (!res.ok) throw await errorFromResponse(res);
  return (await readBody(res)) as T;
}

/** JSON when the answer says JSON, `undefined` when it is empty, the text otherwise. */
async function readBody(res: Response): Promise<unknown> {
  if (res.status === 204 || res.status === 205) return undefined;
  const text = await res.text();
  if (text.length === 0) return undefined;
  const type = res.headers.get("content-type") ?? "";
  if (/[/+]json\b/i.test(type)) {
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new PiCloudError({
        status: res.status,
        code: "http_error",
        message: "the answer says JSON but is not JSON",
        invocationId: res.headers.get(INVOCATION_ID_HEADER) ?? undefined,
        body: text,
        cause: error,
      });
    }
  }
  return text;
}
