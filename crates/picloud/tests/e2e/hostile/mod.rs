//! The hostile suite: what a hostile script, client or token tries, run against the real
//! server, which must still answer other apps normally afterwards (docs/security.md).
mod tokens; // scoped tokens, the last admin token, per-app origins
