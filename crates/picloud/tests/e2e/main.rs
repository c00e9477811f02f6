//! End-to-end tests: the real server on a random loopback port, real SQLite and real
//! PostgreSQL, driven through HTTP like a user would.
mod common;

mod admin; // the admin API's bad-input table
mod binary; // the real `picloud` binary and its CLI
mod endpoints; // deploy, call, redeploy, rollback, invocations
mod limits; // runaway scripts are stopped and reported
mod operations; // health, readiness, metrics, graceful shutdown
