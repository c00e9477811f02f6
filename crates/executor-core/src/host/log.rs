//! `log::info/warn/error(msg)`: lines captured into the invocation record.
//!
//! There is no `log::debug`: `debug` is a reserved word in Rhai; scripts call `debug(x)`.
use rhai::{Dynamic, EvalAltResult, Module};
use shared::LogLevel;

use crate::run_state::push_log;

pub(super) fn module() -> Module {
    let mut m = Module::new();
    for (name, level) in [
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
    ] {
        m.set_native_fn(
            name,
            move |msg: Dynamic| -> Result<(), Box<EvalAltResult>> {
                push_log(level, &text(msg)?);
                Ok(())
            },
        );
    }
    m
}

/// A string as is; anything else as Rhai prints it.
fn text(value: Dynamic) -> Result<String, Box<EvalAltResult>> {
    crate::nesting::to_text("log", value)
}
