//! `kv::get/set/delete/list/incr`: the app's key-value store.
//!
//! What must stay true: writes are only buffered (`Effects.kv`, under the run's caps)
//! and commit with the run, all or nothing (so `set` and `delete`, which read nothing,
//! may run in an inline try: `context::buffering_limits`); reads see the run's own writes laid over the store; every call is
//! scoped to the run's app; keys and values never reach a span, a log line or an error.
use std::collections::BTreeMap;

use rhai::{Array, Dynamic, EvalAltResult, ImmutableString, Map, Module};
use serde_json::Value;
use shared::{KvWrite, check_data_name};

use super::page;
use super::value::{check_options, from_json, int_in, opt_string, seconds, to_json};
use crate::context::{self, Current};
use crate::error::HostError;

const MAX_KEY_BYTES: usize = 512;
const DEFAULT_LIST_LIMIT: i64 = 100;
const MAX_LIST_LIMIT: i64 = 1000;

type HostResult<T> = Result<T, Box<EvalAltResult>>;

pub(super) fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("get", |key: ImmutableString| -> HostResult<Dynamic> {
        Ok(get(&key)?)
    });
    m.set_native_fn(
        "set",
        |key: ImmutableString, value: Dynamic| -> HostResult<()> { Ok(set(&key, &value, None)?) },
    );
    m.set_native_fn(
        "set",
        |key: ImmutableString, value: Dynamic, opts: Map| -> HostResult<()> {
            Ok(set(&key, &value, Some(&opts))?)
        },
    );
    m.set_native_fn("delete", |key: ImmutableString| -> HostResult<()> {
        Ok(delete(&key)?)
    });
    m.set_native_fn("list", |prefix: ImmutableString| -> HostResult<Map> {
        Ok(list(&prefix, &Map::new())?)
    });
    m.set_native_fn(
        "list",
        |prefix: ImmutableString, opts: Map| -> HostResult<Map> { Ok(list(&prefix, &opts)?) },
    );
    m.set_native_fn("incr", |key: ImmutableString| -> HostResult<i64> {
        Ok(incr(&key, 1)?)
    });
    m.set_native_fn("incr", |key: ImmutableString, by: i64| -> HostResult<i64> {
        Ok(incr(&key, by)?)
    });
    m
}

fn check_key(call: &str, key: &str) -> Result<(), HostError> {
    check_data_name("key", key, MAX_KEY_BYTES)
        .map_err(|e| HostError::refused(format!("{call}: {e}")))
}

fn get(key: &str) -> Result<Dynamic, HostError> {
    let cx = context::current("kv::get")?;
    let _span = tracing::info_span!("host.kv.get", app = %cx.app).entered();
    check_key("kv::get", key)?;
    Ok(view(&cx, "kv::get", key)?.map_or(Dynamic::UNIT, |v| from_json(&v)))
}

fn set(key: &str, value: &Dynamic, opts: Option<&Map>) -> Result<(), HostError> {
    let max_bytes = context::buffering_limits("kv::set", |l| l.max_kv_value_bytes)?;
    check_key("kv::set", key)?;
    let value = to_json("kv::set: value", value, max_bytes)?;
    let mut ttl = None;
    if let Some(opts) = opts {
        check_options("kv::set", opts, &["ttl"])?;
        if let Some(raw) = opts.get("ttl").filter(|v| !v.is_unit()) {
            let secs = seconds("kv::set", "ttl", raw)?;
            if secs.is_zero() {
                return Err(HostError::refused(
                    "kv::set: ttl must be more than 0 seconds",
                ));
            }
            ttl = Some(secs);
        }
    }
    context::buffer_kv(
        "kv::set",
        KvWrite::Set {
            key: key.to_owned(),
            value,
            ttl,
        },
    )
}

fn delete(key: &str) -> Result<(), HostError> {
    context::buffering_limits("kv::delete", |_| ())?;
    check_key("kv::delete", key)?;
    context::buffer_kv(
        "kv::delete",
        KvWrite::Delete {
            key: key.to_owned(),
        },
    )
}

fn incr(key: &str, by: i64) -> Result<i64, HostError> {
    let cx = context::current("kv::incr")?;
    let _span = tracing::info_span!("host.kv.incr", app = %cx.app).entered();
    check_key("kv::incr", key)?;
    let current = view(&cx, "kv::incr", key)?;
    let next = add("kv::incr", current.as_ref(), by)?;
    context::buffer_kv(
        "kv::incr",
        KvWrite::Incr {
            key: key.to_owned(),
            by,
        },
    )?;
    Ok(next)
}

fn list(prefix: &str, opts: &Map) -> Result<Map, HostError> {
    let cx = context::current("kv::list")?;
    let _span = tracing::info_span!("host.kv.list", app = %cx.app).entered();
    if !prefix.is_empty() {
        check_data_name("prefix", prefix, MAX_KEY_BYTES)
            .map_err(|e| HostError::refused(format!("kv::list: {e}")))?;
    }
    check_options("kv::list", opts, &["limit", "cursor"])?;
    let limit = match opts.get("limit").filter(|v| !v.is_unit()) {
        Some(v) => int_in("kv::list", "limit", v, 1, MAX_LIST_LIMIT)?,
        None => DEFAULT_LIST_LIMIT,
    };
    let after = opt_string("kv::list", "cursor", opts.get("cursor"))?;
    let limit = usize::try_from(limit).unwrap_or(100);
    let stored = cx
        .block_on(cx.store().kv.list(
            &cx.app,
            prefix,
            after.as_deref(),
            u32::try_from(limit).unwrap_or(100),
        ))
        .map_err(|e| HostError::backend("kv::list", e))?;
    let full = stored.len() >= limit;
    let stored = stored.into_iter().map(|e| (e.key, ())).collect();
    let buffered = buffered_keys(prefix, after.as_deref());
    let (items, cursor) = page::merge(stored, full, buffered, limit);
    let keys: Array = items.into_iter().map(|(k, ())| Dynamic::from(k)).collect();
    let mut out = Map::new();
    out.insert("keys".into(), keys.into());
    out.insert("cursor".into(), cursor.map_or(Dynamic::UNIT, Dynamic::from));
    Ok(out)
}

fn key_of(write: &KvWrite) -> &str {
    match write {
        KvWrite::Set { key, .. } | KvWrite::Delete { key } | KvWrite::Incr { key, .. } => key,
    }
}

/// The key's value as this run sees it: the store, then the run's writes in order.
fn view(cx: &Current, call: &'static str, key: &str) -> Result<Option<Value>, HostError> {
    let writes: Vec<KvWrite> = context::with_effects(|effects| {
        effects
            .kv
            .iter()
            .filter(|w| key_of(w) == key)
            .cloned()
            .collect()
    })
    .unwrap_or_default();
    let reset = writes
        .iter()
        .rposition(|w| !matches!(w, KvWrite::Incr { .. }));
    let (mut value, rest) = match reset {
        Some(i) => {
            let value = match &writes[i] {
                KvWrite::Set { value, .. } => Some(value.clone()),
                _ => None,
            };
            (value, &writes[i + 1..])
        }
        None => {
            let stored = cx
                .store()
                .kv
                .get_blocking(cx.rt(), &cx.app, key)
                .map_err(|e| HostError::backend(call, e))?;
            (stored.map(|e| e.value), &writes[..])
        }
    };
    for write in rest {
        if let KvWrite::Incr { by, .. } = write {
            value = Some(Value::from(add(call, value.as_ref(), *by)?));
        }
    }
    Ok(value)
}

/// `current + by`, where a missing value (or null) counts as 0.
fn add(call: &str, current: Option<&Value>, by: i64) -> Result<i64, HostError> {
    let base = match current {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().ok_or_else(|| {
            HostError::refused(format!("{call}: the stored value is not an integer"))
        })?,
    };
    base.checked_add(by).ok_or_else(|| {
        HostError::refused(format!(
            "{call}: the result would overflow a 64-bit integer"
        ))
    })
}

/// The run's final state of each buffered key under `prefix` after `after`.
fn buffered_keys(prefix: &str, after: Option<&str>) -> BTreeMap<String, Option<()>> {
    context::with_effects(|effects| {
        let mut state = BTreeMap::new();
        for write in &effects.kv {
            let key = key_of(write);
            if !key.starts_with(prefix) || after.is_some_and(|a| key <= a) {
                continue;
            }
            let present = !matches!(write, KvWrite::Delete { .. });
            state.insert(key.to_owned(), present.then_some(()));
        }
        state
    })
    .unwrap_or_default()
}
