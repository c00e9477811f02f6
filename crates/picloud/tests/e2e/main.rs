//! End-to-end tests: the real server on a random loopback port, real SQLite and real
//! PostgreSQL, driven through HTTP like a user would.
mod common;

mod admin; // the admin API's bad-input table
mod app_limits; // limits per app and per script: concurrency, rate, operations, time
mod binary; // the real `picloud` binary and its CLI
mod caddy; // Caddy in front of two nodes: balancing, health checks, app hosts, SSE, TLS
mod cluster; // several nodes on one PostgreSQL: changes reach every node
mod crash; // kill -9 with events in flight
mod data; // KV, blobs, modules, config, secrets, outbound HTTP, email
mod endpoints; // deploy, call, redeploy, rollback, invocations
mod events; // pub/sub, queues, invoke, retries, dead letters, cron
mod faults; // PostgreSQL cut and restored during a burst of events
mod folders; // apps as folders: push, pull, dev, the example app
mod hostile; // hostile scripts, clients and tokens (docs/security.md)
mod idempotency; // HTTP idempotency keys: replay, conflicts, release, expiry
mod limits; // runaway scripts are stopped and reported
mod operations; // health, readiness, metrics, graceful shutdown
mod realtime; // SSE streams: tokens, delivery after commit, resume, reset, limits
mod s3; // two nodes share one S3-compatible bucket (moto)
mod startup; // data directory lock and modes, secrets key, bootstrap token, readiness
mod traces; // traceparent through requests, events and queues; OTLP export
