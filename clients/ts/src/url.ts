/** The server's base URL: the one given, or the page's origin in a browser. */
export function baseUrl(url: string | undefined): string {
  const base = url ?? (globalThis as { location?: { origin?: string } }).location?.origin;
  if (base === undefined || base === "null") {
    throw new TypeError("PiCloud client: `url` is required outside a browser page");
  }
  return base.replace(/\/+$/, "");
}

/** `{base}/{app}`: the prefix of an app's own endpoints. */
export function appUrl(url: string | undefined, app: string): string {
  if (app.length === 0) throw new TypeError("PiCloud client: `app` must not be empty");
  return `${baseUrl(url)}/${encodeURIComponent(app)}`;
}

/** The global `fetch`, called as a plain function (browsers refuse a detached `this`). */
export function defaultFetch(): typeof fetch {
  return (input, init) => globalThis.fetch(input, init);
}
