//! The host API: one file per script module, each building a Rhai `Module` that is
//! registered as a static module (`log::info`, `json::parse`, ...).
//!
//! Rules every host function keeps: no filesystem, process or network access (except
//! through `http::*`, later); failures are plain script errors in our own words, never a
//! `Debug` dump or a host path.
use rhai::{Engine, Module, Shared};

mod base64;
mod crypto;
mod json;
mod log;
mod time;
mod uuid;

pub(crate) fn register_all(engine: &mut Engine) {
    let modules: [(&str, Module); 6] = [
        ("log", log::module()),
        ("json", json::module()),
        ("time", time::module()),
        ("uuid", uuid::module()),
        ("base64", base64::module()),
        ("crypto", crypto::module()),
    ];
    for (name, module) in modules {
        engine.register_static_module(name, Shared::new(module));
    }
}
