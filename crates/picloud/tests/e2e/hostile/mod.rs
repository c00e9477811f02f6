//! The hostile suite: what a hostile script, client or token tries, run against the real
//! server, which must still answer other apps normally afterwards (docs/security.md).
mod effects; // sleep on every thread, effects floods, counters, orphan blobs, a recreated app
