//! Formatting shared by the commands: aligned tables, short times, field access on JSON
//! answers that tolerates a missing field (shown as `-`).
use serde_json::Value;

/// `println!` that ignores a closed stdout (`picloud logs | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
pub(crate) use out;

/// A field as display text: strings as is, numbers and booleans as JSON, null or missing as `-`.
pub fn field(v: &Value, key: &str) -> String {
    text(v.get(key).unwrap_or(&Value::Null))
}

pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `2026-11-22T13:40:27.123456Z` -> `2026-11-22 13:40:27`; anything else unchanged.
pub fn short_time(raw: &str) -> String {
    let bytes = raw.as_bytes();
    if bytes.len() >= 19 && bytes[10] == b'T' && raw.is_char_boundary(19) {
        format!("{} {}", &raw[..10], &raw[11..19])
    } else {
        raw.to_owned()
    }
}

pub fn time_field(v: &Value, key: &str) -> String {
    short_time(&field(v, key))
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The items of `key` in an answer (`{"apps": [...]}`), empty when absent.
pub fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Print an answer: the raw JSON with `--json`, otherwise the human text.
pub fn print(json: bool, answer: &Value, human: impl FnOnce(&Value) -> String) {
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(answer).unwrap_or_else(|_| answer.to_string())
        );
    } else {
        let text = human(answer);
        if !text.is_empty() {
            out!("{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_columns_to_the_widest_cell() {
        let out = table(
            &["NAME", "CREATED"],
            &[
                vec!["shop".into(), "2026-11-22 10:00:00".into()],
                vec!["a-longer-name".into(), "-".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME           CREATED\nshop           2026-11-22 10:00:00\na-longer-name  -"
        );
    }

    #[test]
    fn times_are_shortened_to_the_second_and_odd_values_kept() {
        assert_eq!(
            short_time("2026-11-22T13:40:27.123456Z"),
            "2026-11-22 13:40:27"
        );
        assert_eq!(
            short_time("2026-11-22T13:40:27+00:00"),
            "2026-11-22 13:40:27"
        );
        assert_eq!(short_time("yesterday"), "yesterday");
    }

    #[test]
    fn missing_and_null_fields_show_as_a_dash() {
        let v = json!({"a": null, "n": 3, "s": "x"});
        assert_eq!(field(&v, "a"), "-");
        assert_eq!(field(&v, "missing"), "-");
        assert_eq!(field(&v, "n"), "3");
        assert_eq!(field(&v, "s"), "x");
        assert!(items(&v, "apps").is_empty());
    }
}
