//! The hostile suite: what a hostile script, client or token tries, run against the real
//! server, which must still answer other apps normally afterwards (docs/security.md).
mod effects; // sleep on every thread, effects floods, counters, orphan blobs, a recreated app
mod events; // never-firing cron schedules, failure-record floods, email from spoofing
mod http; // slow, idle and excess connections, h2c
mod tokens; // scoped tokens, the last admin token, per-app origins
mod values; // deep values, closure chains, poison events
