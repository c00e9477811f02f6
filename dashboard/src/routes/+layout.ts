// A single-page app: no server rendering, one page the server falls back to.
export const ssr = false;
export const prerender = false;
export const trailingSlash = 'ignore';
