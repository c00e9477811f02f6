//! What one invocation may consume. The engine enforces the sizes and depths; the
//! operation budget and the wall-clock deadline are enforced per run by the sandbox's
//! progress callback.
use std::time::Duration;

/// Per-invocation resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Rhai operations per run.
    pub max_operations: u64,
    /// Wall-clock time per run (checked every 1024 operations).
    pub timeout: Duration,
    /// Nested function calls.
    pub max_call_depth: usize,
    /// Nesting of expressions and statements, checked when compiling.
    pub max_expr_depth: usize,
    /// Bytes in any one string.
    pub max_string_bytes: usize,
    /// Elements in any one array.
    pub max_array_len: usize,
    /// Entries in any one object map.
    pub max_map_len: usize,
    /// Bytes in the response body.
    pub max_output_bytes: usize,
    /// Bytes of captured log text (`print`, `debug`, `log::*`) per run.
    pub max_log_bytes: usize,
    /// Bytes of one KV value, written as JSON.
    pub max_kv_value_bytes: usize,
    /// Bytes of one blob (empty blobs are allowed).
    pub max_blob_bytes: usize,
    /// Bytes of one emitted payload as JSON (publish, send, invoke, email).
    pub max_payload_bytes: usize,
    /// Nested `invoke` calls on top of the run itself.
    pub max_invoke_depth: usize,
    /// Writes and events a run may buffer (KV writes, blob puts and deletes, events,
    /// emails); a write over a key or name the run already wrote replaces it.
    pub max_effects_per_run: usize,
    /// Bytes a run may buffer: keys, names, values and payloads as JSON, blob contents.
    pub max_effect_bytes_per_run: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 10_000_000,
            timeout: Duration::from_secs(5),
            max_call_depth: 64,
            max_expr_depth: 64,
            max_string_bytes: 1024 * 1024,
            max_array_len: 100_000,
            max_map_len: 100_000,
            max_output_bytes: 1024 * 1024,
            max_log_bytes: 64 * 1024,
            max_kv_value_bytes: 256 * 1024,
            max_blob_bytes: 10 * 1024 * 1024,
            max_payload_bytes: 256 * 1024,
            max_invoke_depth: 8,
            max_effects_per_run: 1_000,
            max_effect_bytes_per_run: 16 * 1024 * 1024,
        }
    }
}

/// `5s`, `1500ms`: how a limit reads in a failure message.
pub(crate) fn human_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_seconds_when_whole_and_milliseconds_otherwise() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1500ms");
    }
}
