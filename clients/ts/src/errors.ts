/**
 * The one error type of the client.
 *
 * Every JSON error PiCloud sends is `{"error": {"code": "...", "message": "..."}}`, and an
 * answer that involved a script run names its invocation in the `x-picloud-invocation-id`
 * header. A `PiCloudError` carries both, plus the status; errors that never reached the
 * server use status 0 and a client-side code (see {@link ClientErrorCode}).
 */

/** The header that names the invocation behind an answer. */
export const INVOCATION_ID_HEADER = "x-picloud-invocation-id";

/**
 * Codes the client itself uses, next to the server's codes (`not_found`, `unauthorized`,
 * `forbidden`, `invalid_input`, `script_failed`, `timeout`, `unavailable`,
 * `too_many_requests`, ...).
 */
export type ClientErrorCode =
  /** `fetch` failed: no answer from the server (DNS, refused connection, CORS, offline). */
  | "network_error"
  /** The server answered with an error whose body is not PiCloud's error JSON. */
  | "http_error"
  /** A realtime answer that is not `text/event-stream` (a proxy's page, for example). */
  | "bad_stream"
  /** The realtime stream ended without `event: expired`; the client reconnects. */
  | "disconnected"
  /** Nothing, not even a heartbeat, arrived on a realtime stream for `heartbeatTimeoutMs`. */
  | "heartbeat_timeout"
  /** The token expired and there is no `getToken` to get a fresh one. */
  | "token_expired"
  /** `getToken()` threw or returned something that is not a non-empty string. */
  | "token_error";

export interface PiCloudErrorInit {
  /** The HTTP status, or 0 when the server never answered. */
  status: number;
  /** The server's error code (`forbidden`, `script_failed`, ...) or a {@link ClientErrorCode}. */
  code: string;
  message: string;
  /** The invocation behind the answer (`x-picloud-invocation-id`), if a script ran. */
  invocationId?: string | undefined;
  /** How long the server asked to wait (`Retry-After`), in milliseconds. */
  retryAfterMs?: number | undefined;
  /** The parsed answer body (JSON when it was JSON, the text otherwise). */
  body?: unknown;
  cause?: unknown;
}

export class PiCloudError extends Error {
  override readonly name = "PiCloudError";
  readonly status: number;
  readonly code: string;
  readonly invocationId: string | undefined;
  readonly retryAfterMs: number | undefined;
  readonly body: unknown;

  constructor(init: PiCloudErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.code = init.code;
    this.invocationId = init.invocationId;
    this.retryAfterMs = init.retryAfterMs;
    this.body = init.body;
  }
}

/** `Retry-After` (seconds or an HTTP date) in milliseconds from now. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Reads an error answer into a `PiCloudError`, whatever its body is. */
export async function errorFromResponse(res: Response): Promise<PiCloudError> {
  let text = "";
  try {
    text = await res.text();
  } catch {
    // The body broke off: status and headers still say enough.
  }
  let body: unknown = text;
  let code = "http_error";
  let message = text.length > 0 && text.length <= 500 ? text : `HTTP ${res.status} ${res.statusText}`.trim();
  try {
    body = JSON.parse(text);
    const detail = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    if (detail && typeof detail.code === "string") {
      code = detail.code;
      if (typeof detail.message === "string") message = detail.message;
    }
  } catch {
    // Not JSON: keep the text.
  }
  return new PiCloudError({
    status: res.status,
    code,
    message,
    invocationId: res.headers.get(INVOCATION_ID_HEADER) ?? undefined,
    retryAfterMs: parseRetryAfter(res.headers.get("retry-after")),
    body,
  });
}

export function isAbortError(error: unknown): boolean {
  return (
    typeof error === "object" &&
    error !== null &&
    ((error as { name?: unknown }).name === "AbortError" ||
      (error as { name?: unknown }).name === "TimeoutError")
  );
}
