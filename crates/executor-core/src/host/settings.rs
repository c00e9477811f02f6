//! `config::get(key)` and `secrets::get(name)`: the app's settings, set through the
//! admin API.
//!
//! What must stay true: a secret's value never reaches a span, a log line or an error
//! message (nor does its name: spans carry the app only); both calls are read-only and
//! scoped to the run's app.
use rhai::{Dynamic, EvalAltResult, ImmutableString, Module};
use shared::check_data_name;

use super::value::from_json;
use crate::context;
use crate::error::HostError;

/// Longest config key or secret name a script may ask for.
const MAX_NAME_BYTES: usize = 256;

type HostResult<T> = Result<T, Box<EvalAltResult>>;

pub(super) fn config_module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("get", |key: ImmutableString| -> HostResult<Dynamic> {
        Ok(config_get(&key)?)
    });
    m
}

pub(super) fn secrets_module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("get", |name: ImmutableString| -> HostResult<Dynamic> {
        Ok(secret_get(&name)?)
    });
    m
}

fn config_get(key: &str) -> Result<Dynamic, HostError> {
    let cx = context::current("config::get")?;
    let _span = tracing::info_span!("host.config.get", app = %cx.app).entered();
    check_data_name("config key", key, MAX_NAME_BYTES)
        .map_err(|e| HostError::refused(format!("config::get: {e}")))?;
    let value = cx
        .block_on(cx.store().settings.config_get(&cx.app, key))
        .map_err(|e| HostError::backend("config::get", e))?;
    Ok(value.map_or(Dynamic::UNIT, |v| from_json(&v)))
}

fn secret_get(name: &str) -> Result<Dynamic, HostError> {
    let cx = context::current("secrets::get")?;
    let _span = tracing::info_span!("host.secrets.get", app = %cx.app).entered();
    check_data_name("secret name", name, MAX_NAME_BYTES)
        .map_err(|e| HostError::refused(format!("secrets::get: {e}")))?;
    let value = cx
        .block_on(cx.store().settings.secret_get(&cx.app, name))
        .map_err(|e| HostError::backend("secrets::get", e))?;
    Ok(value.map_or(Dynamic::UNIT, Dynamic::from))
}
