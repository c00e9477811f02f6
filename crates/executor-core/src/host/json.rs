//! `json::parse(text)` and `json::stringify(value)`, through `rhai::serde`.
use rhai::{Dynamic, EvalAltResult, ImmutableString, Module};

pub(super) fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("parse", |text: ImmutableString| parse(&text));
    m.set_native_fn("stringify", |value: Dynamic| stringify(&value));
    m
}

pub(crate) fn parse(text: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("json::parse: invalid JSON: {e}"))?;
    rhai::serde::to_dynamic(value).map_err(|_| "json::parse: the value is too large".into())
}

fn stringify(value: &Dynamic) -> Result<String, Box<EvalAltResult>> {
    if crate::nesting::too_deep(value) {
        return Err(crate::nesting::too_deep_message("json::stringify").into());
    }
    let json: serde_json::Value = rhai::serde::from_dynamic(value).map_err(|_| {
        format!(
            "json::stringify: a value of type '{}' cannot be written as JSON",
            value.type_name()
        )
    })?;
    Ok(json.to_string())
}
