//! How deep a script's values may nest, and the engine functions that check it.
//!
//! Rhai prints and compares nested arrays and maps by recursion through the engine (deep
//! stack frames per level), and the JSON writers recurse too: a value nested thousands of
//! levels (a linked list built in a loop) would overflow the script thread's stack and
//! abort the whole process. What must stay true:
//! - every path that walks a whole value with deep frames checks the nesting first (a
//!   walk that stops at the cap) and fails the run with a clear error: `print`, `debug`,
//!   `to_string`, `to_debug`, string interpolation and `+` on strings (they all resolve
//!   to the functions registered here, which take precedence over Rhai's packages), `==`
//!   and `!=` (also reached from `in`, `contains`, `index_of`), JSON writing (host calls,
//!   the response body), log lines and a thrown value's message;
//! - values written anywhere (KV, payloads, responses) nest at most [`MAX_DEPTH`] levels,
//!   below the JSON readers' limit of 128, so whatever is stored can be read back;
//! - the walks Rhai still makes on its own (clone, drop, hash, its data-size checks) have
//!   small frames; the script threads' stack is sized for them (see `pool.rs`).
use crate::run_state::{self, Termination};
use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, NativeCallContext};

/// Levels of arrays and maps a value may have: `[1]` is 1, `[[1]]` is 2.
pub const MAX_DEPTH: usize = 100;

/// Whether `value` nests more than [`MAX_DEPTH`] levels.
pub(crate) fn too_deep(value: &Dynamic) -> bool {
    exceeds(value, MAX_DEPTH)
}

/// The error a run fails with when `what` ("print", "kv::set: value") meets a value
/// nested too deeply.
pub(crate) fn too_deep_message(what: &str) -> String {
    format!("{what}: the value is nested deeper than {MAX_DEPTH} levels")
}

/// Whether `value` has more than `levels` levels of arrays and maps. Recursion is bounded
/// by `levels`, so this never goes deeper than the cap whatever the value.
fn exceeds(value: &Dynamic, levels: usize) -> bool {
    if let Ok(array) = value.as_array_ref() {
        return levels == 0 || array.iter().any(|v| exceeds(v, levels - 1));
    }
    if let Ok(map) = value.as_map_ref() {
        return levels == 0 || map.values().any(|v| exceeds(v, levels - 1));
    }
    false
}

/// A string as is; anything else as Rhai displays it, unless it nests too deeply.
pub(crate) fn to_text(what: &str, value: Dynamic) -> Result<String, Box<EvalAltResult>> {
    if value.is_string() {
        Ok(value.into_string().unwrap_or_default())
    } else {
        check(what, &value)?;
        Ok(value.to_string())
    }
}

fn check(what: &str, value: &Dynamic) -> Result<(), Box<EvalAltResult>> {
    if too_deep(value) {
        Err(too_deep_message(what).into())
    } else {
        Ok(())
    }
}

/// Register the checked printing and comparison of arrays and maps.
pub(crate) fn register(engine: &mut Engine) {
    for name in ["print", "debug", "to_string", "to_debug"] {
        engine.register_fn(
            name,
            move |ctx: NativeCallContext, array: &mut Array| -> Result<_, Box<EvalAltResult>> {
                let value = Dynamic::from_array(std::mem::take(array));
                let result = checked_format(&ctx, name, &value);
                *array = value.into_array().unwrap_or_default();
                result
            },
        );
        engine.register_fn(
            name,
            move |ctx: NativeCallContext, map: &mut Map| -> Result<_, Box<EvalAltResult>> {
                let value = Dynamic::from_map(std::mem::take(map));
                let result = checked_format(&ctx, name, &value);
                *map = value.try_cast::<Map>().unwrap_or_default();
                result
            },
        );
    }
    for (name, negate) in [("==", false), ("!=", true)] {
        engine.register_fn(
            name,
            move |ctx: NativeCallContext,
                  a: &mut Array,
                  b: Array|
                  -> Result<bool, Box<EvalAltResult>> {
                let (value, b) = (
                    Dynamic::from_array(std::mem::take(a)),
                    Dynamic::from_array(b),
                );
                let result = checked_equal(&ctx, name, &value, &b);
                *a = value.into_array().unwrap_or_default();
                result.map(|eq| eq != negate)
            },
        );
        engine.register_fn(
            name,
            move |ctx: NativeCallContext,
                  a: &mut Map,
                  b: Map|
                  -> Result<bool, Box<EvalAltResult>> {
                let (value, b) = (Dynamic::from_map(std::mem::take(a)), Dynamic::from_map(b));
                let result = checked_equal(&ctx, name, &value, &b);
                *a = value.try_cast::<Map>().unwrap_or_default();
                result.map(|eq| eq != negate)
            },
        );
    }
}

/// What a value nested too deeply prints as, in the moment before its run is stopped.
const TOO_DEEP_TEXT: &str = "<nested too deeply>";

/// Rhai's text for an array or map (`[1, "a"]`, `#{"k": 2}`), once its nesting is known
/// to be within the cap. Past the cap the run is stopped rather than failed here: string
/// interpolation and `+` swallow a failing `to_string` and fall back to Rust's
/// formatting, which would walk the whole value.
fn checked_format(
    ctx: &NativeCallContext,
    name: &'static str,
    value: &Dynamic,
) -> Result<ImmutableString, Box<EvalAltResult>> {
    if too_deep(value) {
        run_state::stop(Termination::TooDeep(name));
        return Ok(TOO_DEEP_TEXT.into());
    }
    let mut out = String::new();
    format_into(ctx, value, &mut out);
    Ok(out.into())
}

/// Arrays and maps are written here (bounded by the cap); every other value as Rhai's
/// `to_debug` writes it, so custom types keep their own text.
fn format_into(ctx: &NativeCallContext, value: &Dynamic, out: &mut String) {
    if let Ok(array) = value.as_array_ref() {
        out.push('[');
        for (i, item) in array.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            format_into(ctx, item, out);
        }
        out.push(']');
    } else if let Ok(map) = value.as_map_ref() {
        out.push_str("#{");
        for (i, (key, item)) in map.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("{key:?}: "));
            format_into(ctx, item, out);
        }
        out.push('}');
    } else {
        let mut leaf = value.clone();
        match ctx.call_native_fn_raw("to_debug", true, &mut [&mut leaf]) {
            Ok(text) if text.is_string() => out.push_str(&text.into_string().unwrap_or_default()),
            Ok(other) => out.push_str(ctx.engine().map_type_name(other.type_name())),
            Err(_) => out.push_str(&format!("{value:?}")),
        }
    }
}

fn checked_equal(
    ctx: &NativeCallContext,
    name: &str,
    a: &Dynamic,
    b: &Dynamic,
) -> Result<bool, Box<EvalAltResult>> {
    check(name, a)?;
    check(name, b)?;
    equal(ctx, a, b)
}

/// Rhai's equality, with arrays and maps compared here (bounded by the cap) and every
/// other pair by the engine's `==`. Values of different types without a `==` are unequal.
fn equal(ctx: &NativeCallContext, a: &Dynamic, b: &Dynamic) -> Result<bool, Box<EvalAltResult>> {
    if let (Ok(x), Ok(y)) = (a.as_array_ref(), b.as_array_ref()) {
        if x.len() != y.len() {
            return Ok(false);
        }
        for (p, q) in x.iter().zip(y.iter()) {
            if !equal(ctx, p, q)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    if let (Ok(x), Ok(y)) = (a.as_map_ref(), b.as_map_ref()) {
        if x.len() != y.len() {
            return Ok(false);
        }
        for (key, p) in x.iter() {
            match y.get(key) {
                Some(q) if equal(ctx, p, q)? => {}
                _ => return Ok(false),
            }
        }
        return Ok(true);
    }
    let (mut p, mut q) = (a.clone(), b.clone());
    match ctx.call_native_fn_raw("==", true, &mut [&mut p, &mut q]) {
        Ok(result) => Ok(result.as_bool().unwrap_or(false)),
        Err(err) if matches!(*err, EvalAltResult::ErrorFunctionNotFound(..)) => {
            if a.type_id() == b.type_id() {
                Err(err)
            } else {
                Ok(false)
            }
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> Dynamic {
        let mut v = Dynamic::from(1_i64);
        for _ in 0..levels {
            v = Dynamic::from_array(vec![v]);
        }
        v
    }

    #[test]
    fn the_cap_counts_levels_of_arrays_and_maps() {
        assert!(!too_deep(&Dynamic::from(1_i64)));
        assert!(!too_deep(&nested(MAX_DEPTH)));
        assert!(too_deep(&nested(MAX_DEPTH + 1)));
        let mut map = Map::new();
        map.insert("n".into(), nested(MAX_DEPTH));
        assert!(too_deep(&Dynamic::from_map(map)));
    }

    #[test]
    fn arrays_and_maps_print_and_compare_as_rhai_does() {
        let stock = Engine::new();
        let mut checked = Engine::new();
        register(&mut checked);
        for source in [
            r#"let v = [1, "a", #{ b: [2.5, (), 'x'], "odd key": -0.0 }, true, blob(2)]; `${v}`"#,
            r#""v=" + [1, [2, #{ c: "d\"e" }]]"#,
            r#"#{ k: "s", n: #{ m: [] } }.to_debug()"#,
            r#"let s = ""; s += [1, 2]; s"#,
            r#"[1, [2, #{ a: 3 }]] == [1, [2, #{ a: 3 }]]"#,
            r#"#{ a: 1 } != #{ a: 2 }"#,
            r#"[1] == [1.0]"#,
            r#"[1] == ["1"]"#,
            r#"#{ a: [1] } in [1, #{ a: [1] }]"#,
            r#"[[1, 2], [3]].index_of([3])"#,
        ] {
            let want = stock.eval::<Dynamic>(source).unwrap().to_string();
            let got = checked.eval::<Dynamic>(source).unwrap().to_string();
            assert_eq!(got, want, "{source}");
        }
    }

    #[test]
    fn checking_a_very_deep_value_does_not_recurse_past_the_cap() {
        // Built and dropped on a thread with a small stack: a walk of all 200,000 levels
        // would overflow it.
        std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(|| {
                let mut v = nested(200_000);
                assert!(too_deep(&v));
                // Unwind by hand: dropping the chain recursively would overflow this stack.
                while v.is_array() {
                    let mut items = std::mem::take(&mut v).into_array().unwrap_or_default();
                    v = items.pop().unwrap_or(Dynamic::UNIT);
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
