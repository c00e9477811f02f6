// A real PiCloud server for the end-to-end tests: the binary in PICLOUD_BIN, started on a
// free loopback port with its own data directory and database (SQLite in the directory,
// or a fresh PostgreSQL schema made with psql), stopped with SIGTERM.
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

export const ADMIN_TOKEN = "pct_e2e_admin_token_for_the_ts_client";

/** The backends to run on: SQLite always, PostgreSQL when PICLOUD_TEST_DATABASE_URL is set. */
export function backends() {
  return process.env.PICLOUD_TEST_DATABASE_URL ? ["sqlite", "postgres"] : ["sqlite"];
}

function binary() {
  const bin = process.env.PICLOUD_BIN;
  if (!bin) throw new Error("set PICLOUD_BIN to the picloud binary (cargo build -p picloud)");
  return bin;
}

function psql(url, sql) {
  execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, PGOPTIONS: "-c client_min_messages=warning" },
  });
}

/**
 * Starts a server. `env` adds PICLOUD_* settings. Returns `{ url, admin, stop }`.
 */
export async function startPiCloud(backend, env = {}) {
  const dir = mkdtempSync(join(tmpdir(), "picloud-ts-e2e-"));
  let databaseUrl; // SQLite in the data directory unless PostgreSQL is asked for
  let schema;
  const base = process.env.PICLOUD_TEST_DATABASE_URL;
  if (backend === "postgres") {
    schema = `picloud_t_${randomBytes(16).toString("hex")}`;
    psql(base, `CREATE SCHEMA ${schema}`);
    databaseUrl = `${base}${base.includes("?") ? "&" : "?"}options=-c%20search_path%3D${schema}`;
  }
  // Only what the server needs: no PICLOUD_* from the caller's shell leaks in.
  const childEnv = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? dir,
    RUST_LOG: process.env.RUST_LOG ?? "error",
    PICLOUD_ADMIN_TOKEN: ADMIN_TOKEN,
    ...env,
  };
  const child = spawn(
    binary(),
    [
      "serve",
      "--bind",
      "127.0.0.1:0",
      "--data-dir",
      join(dir, "data"),
      "--config",
      join(dir, "none.toml"),
      ...(databaseUrl ? ["--database-url", databaseUrl] : []),
    ],
    { env: childEnv, stdio: ["ignore", "pipe", "inherit"] },
  );
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const url = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      const match = /^listening on (http:\/\/\S+)/.exec(line);
      if (match) resolve(match[1]);
    });
    void exited.then(({ code, signal }) => reject(new Error(`picloud exited before listening (${code ?? signal})`)));
  });

  async function admin(method, path, body) {
    const res = await fetch(`${url}/api/v1${path}`, {
      method,
      headers: {
        authorization: `Bearer ${ADMIN_TOKEN}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : undefined;
  }

  return {
    url,
    admin,
    /** Creates the app, deploys `source` as `script` and binds `route` ("POST /token") to it. */
    async endpoint(app, script, route, source) {
      await admin("POST", "/apps", { name: app }).catch((error) => {
        if (!String(error.message).includes(" 409 ")) throw error;
      });
      await admin("PUT", `/apps/${app}/scripts/${script}`, { source });
      const [method, path] = route.split(" ");
      await admin("POST", `/apps/${app}/triggers`, { kind: "http", method, path, script });
    },
    expose: (app, topic) => admin("PUT", `/apps/${app}/realtime/topics/${encodeURIComponent(topic)}`),
    publish: (app, topic, payload) =>
      admin("POST", `/apps/${app}/realtime/topics/${encodeURIComponent(topic)}/publish`, { payload }),
    async stop() {
      child.kill("SIGTERM");
      await exited;
      if (schema) psql(base, `DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The app every end-to-end test uses: a token route, a publishing route, a failing route. */
export async function shopApp(server, app = "shop") {
  await server.endpoint(
    app,
    "token",
    "POST /token",
    `let ttl = if "ttl" in request.query { parse_int(request.query.ttl) } else { 300 };
let topics = if "topics" in request.query { request.query.topics.split(",") } else { ["orders"] };
#{ token: realtime::token(#{ topics: topics, sub: "user-42", ttl: ttl }) }`,
  );
  await server.endpoint(
    app,
    "order",
    "POST /orders/:sku",
    `pubsub::publish("orders", #{ sku: request.params.sku, n: request.json.n });
#{ ok: true }`,
  );
  await server.endpoint(app, "fail", "POST /fail", `throw "the warehouse is closed";`);
  await server.expose(app, "orders");
}
