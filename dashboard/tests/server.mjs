// Starts a real PiCloud server (PICLOUD_BIN) on a free loopback port with a fresh SQLite
// data directory, and stops it.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export async function startServer() {
  const bin = process.env.PICLOUD_BIN;
  if (!bin) throw new Error('set PICLOUD_BIN to a built picloud binary');
  const dataDir = mkdtempSync(join(tmpdir(), 'picloud-dash-'));
  const token = 'pct_' + 'd'.repeat(64);
  const child = spawn(bin, ['serve', '--bind', '127.0.0.1:0', '--data-dir', dataDir], {
    env: {
      PATH: process.env.PATH,
      PICLOUD_ADMIN_TOKEN: token,
      PICLOUD_CONFIG: join(dataDir, 'none.toml'),
      PICLOUD_EVENTS__BACKOFF_BASE_MS: '10',
      PICLOUD_EVENTS__BACKOFF_MAX_MS: '20',
      RUST_LOG: 'warn'
    },
    stdio: ['ignore', 'pipe', 'inherit']
  });
  const url = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`picloud exited with ${code} before listening`)));
  });
  return {
    url,
    token,
    async stop() {
      const exited = new Promise((r) => child.on('exit', r));
      child.kill('SIGTERM');
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    }
  };
}

/** A bearer-token call to the admin API. */
export async function admin(server, method, path, body) {
  const res = await fetch(server.url + path, {
    method,
    headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Waits until `probe` returns a truthy value, checking after each short pause. */
export async function until(probe, what, tries = 200) {
  for (let i = 0; i < tries; i++) {
    const v = await probe();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`gave up waiting for ${what}`);
}
