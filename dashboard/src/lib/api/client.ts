// The dashboard's one way to the admin API: openapi-fetch typed by the generated
// schema. The browser's session cookie authenticates (it is HttpOnly: no script here
// ever sees a token after sign-in); every state-changing request carries the session's
// CSRF token; a 401 means the session is over and sends the user back to sign-in.
import createClient, { type Middleware } from 'openapi-fetch';
import type { components, paths } from './schema';

export type Schemas = components['schemas'];
export type SessionInfo = Schemas['SessionInfo'];

let csrfToken = '';
let onExpired: () => void = () => {};

export function setCsrfToken(token: string) {
  csrfToken = token;
}

export function onSessionExpired(handler: () => void) {
  onExpired = handler;
}

const session: Middleware = {
  onRequest({ request }) {
    if (!['GET', 'HEAD', 'OPTIONS'].includes(request.method) && csrfToken) {
      request.headers.set('X-CSRF-Token', csrfToken);
    }
    return request;
  },
  onResponse({ request, response }) {
    const url = new URL(request.url);
    if (response.status === 401 && url.pathname !== '/api/v1/sessions') onExpired();
    return response;
  }
};

export const api = createClient<paths>({
  baseUrl: typeof location === 'undefined' ? 'http://localhost' : location.origin,
  credentials: 'same-origin'
});
api.use(session);

/** The API's own message for a failed call (never a blank page). */
export function messageOf(error: unknown, response?: Response): string {
  const e = error as { error?: { message?: string } } | undefined;
  if (e?.error?.message) return e.error.message;
  if (response) return `The server answered ${response.status} ${response.statusText}`.trim();
  if (error instanceof Error) return error.message;
  return 'Something went wrong';
}

/** A raw call for what the typed client cannot express (a whole blob, a public route). */
export async function rawFetch(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  const method = (init.method ?? 'GET').toUpperCase();
  if (!['GET', 'HEAD', 'OPTIONS'].includes(method) && csrfToken && path.startsWith('/api/v1/')) {
    headers.set('X-CSRF-Token', csrfToken);
  }
  const res = await fetch(path, { ...init, headers, credentials: 'same-origin' });
  if (res.status === 401 && path.startsWith('/api/v1/')) onExpired();
  return res;
}
