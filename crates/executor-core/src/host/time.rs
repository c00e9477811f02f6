//! `time::now()` (RFC 3339, UTC, milliseconds) and `time::now_ms()` (Unix milliseconds).
use chrono::{SecondsFormat, Utc};
use rhai::{EvalAltResult, Module};

pub(super) fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("now", || -> Result<String, Box<EvalAltResult>> {
        Ok(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true))
    });
    m.set_native_fn("now_ms", || -> Result<i64, Box<EvalAltResult>> {
        Ok(Utc::now().timestamp_millis())
    });
    m
}
