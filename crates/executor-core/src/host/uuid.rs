//! `uuid::v4()` (random) and `uuid::v7()` (time-ordered), as lowercase hyphenated strings.
use rhai::{EvalAltResult, Module};
use uuid::Uuid;

pub(super) fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("v4", || -> Result<String, Box<EvalAltResult>> {
        Ok(Uuid::new_v4().to_string())
    });
    m.set_native_fn("v7", || -> Result<String, Box<EvalAltResult>> {
        Ok(Uuid::now_v7().to_string())
    });
    m
}
