//! What one invocation may consume. The engine enforces the sizes and depths; the
//! operation budget and the wall-clock deadline are enforced per run by the sandbox's
//! progress callback.
use std::time::Duration;

use shared::LimitOverrides;

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
    /// The overridable limits take `shared::LimitPolicy`'s defaults, so the admin API and
    /// the executor agree on them.
    fn default() -> Self {
        let d = shared::LimitPolicy::default().defaults;
        let num = |v: Option<u64>| usize::try_from(v.unwrap_or(0)).unwrap_or(usize::MAX);
        Limits {
            max_operations: d.max_operations.unwrap_or(0),
            timeout: Duration::from_millis(d.timeout_ms.unwrap_or(0)),
            max_call_depth: num(d.max_call_depth),
            max_expr_depth: 64,
            max_string_bytes: num(d.max_string_bytes),
            max_array_len: num(d.max_array_len),
            max_map_len: num(d.max_map_len),
            max_output_bytes: num(d.max_output_bytes),
            max_log_bytes: num(d.max_log_bytes),
            max_kv_value_bytes: 256 * 1024,
            max_blob_bytes: 10 * 1024 * 1024,
            max_payload_bytes: 256 * 1024,
            max_invoke_depth: 8,
            max_effects_per_run: 1_000,
            max_effect_bytes_per_run: 16 * 1024 * 1024,
        }
    }
}

/// Stack every script thread starts with, whatever the limits.
const BASE_STACK: u64 = 16 * 1024 * 1024;
/// Stack one level of script function calls takes: ~7.2 KiB measured with Rhai built at
/// opt-level 1 (the test profile), ~6.7 KiB in a release build; with a margin.
const STACK_PER_CALL: u64 = 10 * 1024;
/// Rhai clones, drops and hashes nested values (arrays, maps, chains of closures that
/// capture each other) by recursion, up to ~210 bytes of stack a level (a closure chain
/// dropped, measured at opt-level 1). Each level costs a script at least `OPS_PER_LEVEL`
/// operations (a closure chain ~5), so the operation budget bounds how deep a value can
/// be; an unbounded budget gets the stack for `MAX_LEVELS` (the wall clock bounds it then:
/// a release build adds about two million levels a second).
const STACK_PER_LEVEL: u64 = 256;
const OPS_PER_LEVEL: u64 = 4;
const MAX_LEVELS: u64 = 4 * 1024 * 1024;
/// The largest stack the call depth may ask for (address space, not memory).
pub const MAX_CALL_STACK_BYTES: u64 = 1 << 30;

impl Limits {
    /// Stack for a script thread that no script within these limits can overflow: deep
    /// recursion stops at `max_call_depth`, and the deepest value a run can build within
    /// `max_operations` is walked within it. Only the pages a run touches are ever
    /// resident; the rest is address space (about 660 MiB with the defaults).
    pub fn stack_bytes(&self) -> usize {
        let levels = (self.max_operations / OPS_PER_LEVEL).min(MAX_LEVELS);
        let bytes = self
            .call_stack_bytes()
            .saturating_add(levels * STACK_PER_LEVEL);
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }

    /// The stack the call depth alone needs: what a thread gets when the machine cannot
    /// reserve [`Limits::stack_bytes`] (see the pool).
    pub fn call_stack_bytes(&self) -> u64 {
        let calls = u64::try_from(self.max_call_depth).unwrap_or(u64::MAX);
        BASE_STACK.saturating_add(calls.saturating_mul(STACK_PER_CALL))
    }

    /// Check that these limits can be served safely.
    ///
    /// # Errors
    /// A message naming `max_call_depth` when recursion that deep would need a stack over
    /// [`MAX_CALL_STACK_BYTES`].
    pub fn validate(&self) -> Result<(), String> {
        if self.call_stack_bytes() > MAX_CALL_STACK_BYTES {
            return Err(format!(
                "limits.max_call_depth ({}) would need script thread stacks of {} MiB \
                 (at most {} MiB): lower it",
                self.max_call_depth,
                self.call_stack_bytes() / (1024 * 1024),
                MAX_CALL_STACK_BYTES / (1024 * 1024)
            ));
        }
        Ok(())
    }
}

impl Limits {
    /// These limits with an app's and script's `overrides` over them. The operation budget
    /// and the call depth never go above these (the script threads' stacks are sized
    /// from them), whatever the overrides ask.
    #[must_use]
    pub fn with_overrides(&self, overrides: &LimitOverrides) -> Limits {
        let size = |v: Option<u64>, server: usize| {
            v.map_or(server, |n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        Limits {
            max_operations: overrides
                .max_operations
                .map_or(self.max_operations, |n| n.min(self.max_operations)),
            timeout: overrides
                .timeout_ms
                .map_or(self.timeout, Duration::from_millis),
            max_call_depth: size(overrides.max_call_depth, self.max_call_depth)
                .min(self.max_call_depth),
            max_string_bytes: size(overrides.max_string_bytes, self.max_string_bytes),
            max_array_len: size(overrides.max_array_len, self.max_array_len),
            max_map_len: size(overrides.max_map_len, self.max_map_len),
            max_output_bytes: size(overrides.max_output_bytes, self.max_output_bytes),
            max_log_bytes: size(overrides.max_log_bytes, self.max_log_bytes),
            ..self.clone()
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
    fn the_stack_grows_with_the_call_depth_and_the_operation_budget() {
        let defaults = Limits::default();
        assert!(defaults.validate().is_ok());
        let deeper = Limits {
            max_call_depth: 10_000,
            ..Limits::default()
        };
        assert!(
            deeper.stack_bytes() as u64 >= defaults.stack_bytes() as u64 + 9_000 * STACK_PER_CALL
        );
        let absurd = Limits {
            max_call_depth: 1_000_000,
            ..Limits::default()
        };
        let err = absurd.validate().unwrap_err();
        assert!(err.contains("max_call_depth (1000000)"), "{err}");
        let endless = Limits {
            max_operations: u64::MAX,
            ..Limits::default()
        };
        assert!(endless.validate().is_ok(), "the time limit bounds it");
        assert!(endless.stack_bytes() < 1 << 31);
    }

    #[test]
    fn overrides_change_their_fields_but_never_raise_the_stack_sized_ones() {
        let server = Limits::default();
        let lowered = server.with_overrides(&LimitOverrides {
            timeout_ms: Some(250),
            max_string_bytes: Some(16),
            max_log_bytes: Some(0),
            ..LimitOverrides::default()
        });
        assert_eq!(lowered.timeout, Duration::from_millis(250));
        assert_eq!((lowered.max_string_bytes, lowered.max_log_bytes), (16, 0));
        assert_eq!(lowered.max_operations, server.max_operations);
        let raised = server.with_overrides(&LimitOverrides {
            max_operations: Some(u64::MAX),
            max_call_depth: Some(100_000),
            ..LimitOverrides::default()
        });
        assert_eq!(raised.max_operations, server.max_operations);
        assert_eq!(raised.max_call_depth, server.max_call_depth);
        assert!(raised.stack_bytes() <= server.stack_bytes());
    }

    #[test]
    fn the_defaults_are_the_admin_apis_defaults() {
        let d = shared::LimitPolicy::default().defaults;
        let l = Limits::default();
        assert_eq!(d.max_operations, Some(l.max_operations));
        assert_eq!(d.timeout_ms, Some(5_000));
        assert_eq!(d.max_call_depth, Some(64));
        assert_eq!(l.max_string_bytes, 1024 * 1024);
    }

    #[test]
    fn durations_read_as_seconds_when_whole_and_milliseconds_otherwise() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1500ms");
    }
}
