/** `createClient({ url })`: `call` and `subscribe` bound to one server. */
import { call, type CallOptions } from "./call.js";
import { subscribe, type SubscribeOptions, type Subscription } from "./subscribe.js";

export interface ClientOptions {
  /** The server, e.g. `https://picloud.example.com`. Defaults to the page's origin. */
  url?: string | undefined;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch | undefined;
}

export interface PiCloudClient {
  call<T = unknown>(app: string, route: string, options?: Omit<CallOptions, "url" | "fetch">): Promise<T>;
  subscribe(options: Omit<SubscribeOptions, "url" | "fetch">): Subscription;
}

export function createClient(options: ClientOptions = {}): PiCloudClient {
  const shared = { url: options.url, fetch: options.fetch };
  return {
    call: (app, route, callOptions = {}) => call(app, route, { ...callOptions, ...shared }),
    subscribe: (subscribeOptions) => subscribe({ ...subscribeOptions, ...shared }),
  };
}
