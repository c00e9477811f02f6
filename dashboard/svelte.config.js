import adapter from '@sveltejs/adapter-static';
import { vitePreprocess } from '@sveltejs/vite-plugin-svelte';

/** @type {import('@sveltejs/kit').Config} */
export default {
  preprocess: vitePreprocess(),
  kit: {
    // One page (index.html) that routes in the browser; the server answers every
    // /dashboard/ path that is no file with it.
    adapter: adapter({ pages: 'build', assets: 'build', fallback: 'index.html', strict: true }),
    paths: { base: '/dashboard', relative: false },
    // A fixed version keeps the build reproducible (no timestamp in the output).
    version: { name: 'picloud-dashboard' },
    output: { bundleStrategy: 'single' }
  }
};
