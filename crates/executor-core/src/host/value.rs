//! Argument helpers shared by the data and messaging modules: Rhai values to JSON under
//! a size cap, option maps with known keys only, durations in seconds.
use std::time::Duration;

use rhai::{Dynamic, Map};
use serde_json::Value;

use crate::error::HostError;
use crate::nesting;

/// The longest delay or TTL a script may ask for: ten years.
const MAX_SECS: f64 = 10.0 * 365.0 * 24.0 * 3600.0;

/// `value` as JSON, refused when it is not JSON-able, nests too deeply or its JSON is
/// over `max` bytes.
/// `what` names the value in messages ("kv::set: value", "queue::send: payload").
pub(crate) fn to_json(what: &str, value: &Dynamic, max: usize) -> Result<Value, HostError> {
    if nesting::too_deep(value) {
        return Err(HostError::refused(nesting::too_deep_message(what)));
    }
    let json = serde_json::to_value(value).map_err(|_| {
        HostError::refused(format!(
            "{what} of type '{}' cannot be written as JSON",
            value.type_name()
        ))
    })?;
    let size = json_len(&json);
    if size > max {
        return Err(HostError::refused(format!(
            "{what} is larger than {max} bytes"
        )));
    }
    Ok(json)
}

/// The length of `json`'s text, counted without writing it anywhere.
fn json_len(json: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, json).map_or(usize::MAX, |()| count.0)
}

/// JSON as a Rhai value (`null` is `()`).
pub(crate) fn from_json(value: &Value) -> Dynamic {
    rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT)
}

/// Refuse keys of `opts` outside `known`, so a typo is an error rather than ignored.
pub(crate) fn check_options(call: &str, opts: &Map, known: &[&str]) -> Result<(), HostError> {
    match opts.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(HostError::refused(format!(
            "{call}: unknown option '{}' (known: {})",
            printable(unknown),
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

/// A number of seconds (integer or decimal, 0 to ten years).
pub(crate) fn seconds(call: &str, name: &str, value: &Dynamic) -> Result<Duration, HostError> {
    let secs = if let Ok(i) = value.as_int() {
        i as f64
    } else if let Ok(f) = value.as_float() {
        f
    } else {
        return Err(HostError::refused(format!(
            "{call}: {name} must be a number of seconds"
        )));
    };
    if !(0.0..=MAX_SECS).contains(&secs) {
        return Err(HostError::refused(format!(
            "{call}: {name} must be between 0 and {MAX_SECS} seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A whole number in `min..=max`.
pub(crate) fn int_in(
    call: &str,
    name: &str,
    value: &Dynamic,
    min: i64,
    max: i64,
) -> Result<i64, HostError> {
    match value.as_int() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(HostError::refused(format!(
            "{call}: {name} must be a whole number from {min} to {max}"
        ))),
    }
}

/// A string option, or `None` for `()`.
pub(crate) fn opt_string(
    call: &str,
    name: &str,
    value: Option<&Dynamic>,
) -> Result<Option<String>, HostError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => v
            .clone()
            .into_string()
            .map(Some)
            .map_err(|_| HostError::refused(format!("{call}: {name} must be a string"))),
    }
}

/// A name as it may appear in a message: without control characters, at most 64 chars.
pub(crate) fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_over_the_cap_is_refused_with_the_cap_in_the_message() {
        let err = to_json("kv::set: value", &Dynamic::from("x".repeat(20)), 10).unwrap_err();
        assert_eq!(err.to_string(), "kv::set: value is larger than 10 bytes");
        assert!(to_json("v", &Dynamic::from(1_i64), 10).is_ok());
    }

    #[test]
    fn the_json_length_is_that_of_its_text() {
        let value = serde_json::json!({"k": [1, "two", null], "ü": 1.5});
        assert_eq!(json_len(&value), serde_json::to_vec(&value).unwrap().len());
    }

    #[test]
    fn seconds_accept_integers_and_decimals_in_range_only() {
        let d = seconds("c", "delay", &Dynamic::from(1.5_f64)).unwrap();
        assert_eq!(d, Duration::from_millis(1500));
        assert!(seconds("c", "delay", &Dynamic::from(-1_i64)).is_err());
        assert!(seconds("c", "delay", &Dynamic::from("1")).is_err());
    }

    #[test]
    fn unknown_options_are_named() {
        let mut opts = Map::new();
        opts.insert("tll".into(), Dynamic::from(1_i64));
        let err = check_options("kv::set", &opts, &["ttl"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kv::set: unknown option 'tll' (known: ttl)"
        );
    }
}
