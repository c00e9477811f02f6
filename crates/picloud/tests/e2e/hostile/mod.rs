//! The hostile suite: what a hostile script, client or token tries, run against the real
//! server, which must still answer other apps normally afterwards (docs/security.md).
mod events; // never-firing cron schedules, failure-record floods, email from spoofing
