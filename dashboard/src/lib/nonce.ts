/** The page's CSP nonce, written into the page by the server for injected styles. */
export function cspNonce(): string {
  const meta = document.querySelector('meta[name="picloud-csp-nonce"]');
  const value = meta?.getAttribute('content') ?? '';
  return value.startsWith('__') ? '' : value;
}
