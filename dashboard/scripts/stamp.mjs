// Writes (or, with --check, verifies) build/source-hash.txt: the SHA-256 of every file the
// build is made from. The built files are committed, so CI fails when someone changes a
// source without rebuilding.
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const inputs = ['src', 'static', 'package.json', 'package-lock.json', 'svelte.config.js', 'vite.config.ts', 'tsconfig.json'];

function files(path) {
  const full = join(root, path);
  if (!existsSync(full)) return [];
  if (statSync(full).isDirectory()) {
    return readdirSync(full).sort().flatMap((name) => files(join(path, name)));
  }
  return [path];
}

const hash = createHash('sha256');
for (const file of inputs.flatMap(files).sort()) {
  hash.update(relative(root, join(root, file)).replaceAll('\\', '/') + '\0');
  hash.update(readFileSync(join(root, file)));
  hash.update('\0');
}
const digest = hash.digest('hex') + '\n';
const stamp = join(root, 'build', 'source-hash.txt');
if (process.argv.includes('--check')) {
  const built = existsSync(stamp) ? readFileSync(stamp, 'utf8') : '(none)';
  if (built !== digest) {
    console.error(`dashboard/build is stale: sources hash ${digest.trim()}, build made from ${built.trim()}.`);
    console.error('Run `npm run build` in dashboard/ and commit dashboard/build.');
    process.exit(1);
  }
  console.log('dashboard/build matches its sources');
} else {
  writeFileSync(stamp, digest);
  console.log(`stamped dashboard/build: ${digest.trim()}`);
}
