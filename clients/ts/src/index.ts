/**
 * `@picloud/client`: the browser (and Node) client of PiCloud.
 *
 * - `subscribe` receives an app's realtime topics over SSE, resuming by event id.
 * - `call` calls an app's own endpoints, JSON in and out.
 * - `createClient` binds both to one server URL.
 * - Every failure is a `PiCloudError` (status, code, message, invocation id).
 */
export { call, parseRoute } from "./call.js";
export type { CallOptions, QueryValue } from "./call.js";
export { subscribe, backoffDelay } from "./subscribe.js";
export type { ErrorInfo, RealtimeEvent, ResetInfo, SubscribeOptions, Subscription } from "./subscribe.js";
export { PiCloudError, INVOCATION_ID_HEADER } from "./errors.js";
export type { ClientErrorCode, PiCloudErrorInit } from "./errors.js";
export { createClient } from "./client.js";
export type { ClientOptions, PiCloudClient } from "./client.js";
