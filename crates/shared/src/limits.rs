//! Per-app and per-script limits: what an operator overrides (`LimitOverrides`), the
//! server's defaults and ceilings (`LimitPolicy`), and what one invocation runs under
//! (`InvocationLimits`).
//!
//! What must stay true:
//! - an override never asks for more than the server can take: `max_operations` and
//!   `max_call_depth` at most the server's own (the script threads' stacks are sized from
//!   them at start), `timeout_ms` at most `LimitPolicy::max_timeout_ms` (an event must
//!   finish inside its lease). `LimitPolicy::check` refuses more with a message naming the
//!   field; `LimitPolicy::resolve` clamps again, for an override stored before the
//!   server's configuration was lowered;
//! - a script's override wins over its app's, field by field, for the run's limits; the
//!   concurrency and rate limits are two gates, the app's (all its scripts together) and
//!   the script's own, and a run must pass both.
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::ids::ScriptName;

/// The largest byte size an override may set (strings, output, logs) unless the server's
/// own default is larger.
pub const MAX_BYTES_LIMIT: u64 = 1 << 30;
/// The largest array or map length an override may set unless the server's is larger.
pub const MAX_LEN_LIMIT: u64 = 100_000_000;
/// The largest concurrency cap an override may set.
pub const MAX_CONCURRENCY_LIMIT: u64 = 10_000;
/// The largest rate an override may set.
pub const MAX_RATE_LIMIT: u64 = 1_000_000;

macro_rules! limit_fields {
    ($($(#[doc = $doc:literal])+ $field:ident,)+) => {
        /// Limits set for one app or one script; an unset field keeps what the app (for a
        /// script) or the server (`[limits]`) says. As JSON: only the set fields.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct LimitOverrides {
            $(
                $(#[doc = $doc])+
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<u64>,
            )+
        }

        impl LimitOverrides {
            /// Every field's name, as in JSON, the config file and the CLI.
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),+];

            /// The field called `name` (`None` for an unknown name).
            pub fn get(&self, name: &str) -> Option<Option<u64>> {
                match name {
                    $(stringify!($field) => Some(self.$field),)+
                    _ => None,
                }
            }

            /// Set the field called `name`; `false` for an unknown name.
            pub fn set(&mut self, name: &str, value: Option<u64>) -> bool {
                match name {
                    $(stringify!($field) => self.$field = value,)+
                    _ => return false,
                }
                true
            }

            /// Each field of `self`, or `other`'s where `self` has none.
            #[must_use]
            pub fn or(self, other: &LimitOverrides) -> LimitOverrides {
                LimitOverrides {
                    $($field: self.$field.or(other.$field),)+
                }
            }
        }
    };
}

limit_fields! {
    /// Rhai operations per run.
    max_operations,
    /// Wall-clock milliseconds per run.
    timeout_ms,
    /// Nested script function calls.
    max_call_depth,
    /// Bytes in any one string.
    max_string_bytes,
    /// Elements in any one array.
    max_array_len,
    /// Entries in any one object map.
    max_map_len,
    /// Bytes in the response body.
    max_output_bytes,
    /// Bytes of captured log text per run.
    max_log_bytes,
    /// Invocations running at once on a node (HTTP and events together).
    max_concurrency,
    /// HTTP requests per second on a node (a burst of one second's worth is allowed).
    max_requests_per_sec,
}

impl LimitOverrides {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == LimitOverrides::default()
    }

    /// The fields that shape a run (everything but the concurrency and rate gates).
    #[must_use]
    pub fn run_fields(self) -> LimitOverrides {
        LimitOverrides {
            max_concurrency: None,
            max_requests_per_sec: None,
            ..self
        }
    }
}

/// An app's own overrides and its scripts'.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppLimits {
    pub app: LimitOverrides,
    pub scripts: BTreeMap<ScriptName, LimitOverrides>,
}

impl AppLimits {
    pub fn is_empty(&self) -> bool {
        self.app.is_empty() && self.scripts.is_empty()
    }
}

/// What one invocation runs under, besides the executor's own limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvocationLimits {
    /// The run's limits: the script's overrides over the app's; an unset field keeps the
    /// executor's own (the concurrency and rate fields are never set here).
    pub run: LimitOverrides,
    /// Invocations of the app that may be queued or running at once on the executor.
    pub app_concurrency: Option<u32>,
    /// The same for the script.
    pub script_concurrency: Option<u32>,
}

/// The server's side of per-app limits: what runs get when nobody overrode anything, and
/// the most an override may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitPolicy {
    /// The server's `[limits]`: every run field set; `max_concurrency` and
    /// `max_requests_per_sec` only when configured.
    pub defaults: LimitOverrides,
    /// The longest `timeout_ms` an override may set (an event's run must end well inside
    /// its lease).
    pub max_timeout_ms: u64,
}

impl Default for LimitPolicy {
    fn default() -> Self {
        LimitPolicy {
            defaults: LimitOverrides {
                max_operations: Some(10_000_000),
                timeout_ms: Some(5_000),
                max_call_depth: Some(64),
                max_string_bytes: Some(1024 * 1024),
                max_array_len: Some(100_000),
                max_map_len: Some(100_000),
                max_output_bytes: Some(1024 * 1024),
                max_log_bytes: Some(64 * 1024),
                max_concurrency: None,
                max_requests_per_sec: None,
            },
            max_timeout_ms: 30_000,
        }
    }
}

/// Stored as a signed 64-bit integer by both backends.
const STORABLE: u64 = i64::MAX as u64;

impl LimitPolicy {
    /// The values an override of `field` may take (`None` for an unknown field).
    pub fn range(&self, field: &str) -> Option<RangeInclusive<u64>> {
        let server = |f: &str| self.defaults.get(f).flatten().unwrap_or(0);
        let at_least = |hard: u64, f: &str| hard.max(server(f));
        let range = match field {
            "max_operations" => 1..=server(field).max(1),
            "timeout_ms" => 1..=self.max_timeout_ms.max(1),
            "max_call_depth" => 1..=server(field).max(1),
            "max_string_bytes" => 1..=at_least(MAX_BYTES_LIMIT, field),
            "max_array_len" | "max_map_len" => 1..=at_least(MAX_LEN_LIMIT, field),
            "max_output_bytes" | "max_log_bytes" => 0..=at_least(MAX_BYTES_LIMIT, field),
            "max_concurrency" => 1..=MAX_CONCURRENCY_LIMIT,
            "max_requests_per_sec" => 1..=MAX_RATE_LIMIT,
            _ => return None,
        };
        Some(*range.start()..=(*range.end()).min(STORABLE))
    }

    /// Whether this server can take `overrides`.
    ///
    /// # Errors
    /// The first field out of its range, in the caller's words
    /// (`timeout_ms must be an integer from 1 to 30000`).
    pub fn check(&self, overrides: &LimitOverrides) -> Result<(), String> {
        for &field in LimitOverrides::FIELDS {
            let (Some(Some(value)), Some(range)) = (overrides.get(field), self.range(field)) else {
                continue;
            };
            if !range.contains(&value) {
                return Err(self.out_of_range(field, &range));
            }
        }
        Ok(())
    }

    /// Why a value of `field` outside `range` is refused.
    pub fn out_of_range(&self, field: &str, range: &RangeInclusive<u64>) -> String {
        let why = match field {
            "max_operations" | "max_call_depth" => {
                " (at most the server's own [limits] value: script thread stacks are sized from it)"
            }
            "timeout_ms" => " (an event must finish well inside its lease: [events] lease_secs)",
            _ => "",
        };
        format!(
            "{field} must be an integer from {} to {}{why}",
            range.start(),
            range.end()
        )
    }

    /// Each field clamped into its range (an override stored before the server's
    /// configuration was lowered).
    #[must_use]
    pub fn clamp(&self, overrides: LimitOverrides) -> LimitOverrides {
        let mut clamped = overrides;
        for &field in LimitOverrides::FIELDS {
            if let (Some(Some(value)), Some(range)) = (overrides.get(field), self.range(field)) {
                clamped.set(field, Some(value.clamp(*range.start(), *range.end())));
            }
        }
        clamped
    }

    /// What the admin API shows as in force: without `script`, the app's run limits and
    /// its gates (every run field set); with `script`, its run limits (its overrides over
    /// the app's) and the script's own gates only (the app's gates apply to it as well).
    pub fn effective(&self, limits: &AppLimits, script: Option<&ScriptName>) -> LimitOverrides {
        let app = self.clamp(limits.app).or(&self.defaults);
        match script {
            None => app,
            Some(script) => {
                let own = limits
                    .scripts
                    .get(script)
                    .map(|o| self.clamp(*o))
                    .unwrap_or_default();
                own.or(&app.run_fields())
            }
        }
    }

    /// What one invocation of `script` runs under, and its app's and script's request
    /// rates (per second; `None`: no limit).
    pub fn resolve(&self, limits: &AppLimits, script: &ScriptName) -> Resolved {
        let app = self.clamp(limits.app);
        let own = limits
            .scripts
            .get(script)
            .map(|o| self.clamp(*o))
            .unwrap_or_default();
        let to_u32 = |v: Option<u64>| v.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        Resolved {
            invocation: InvocationLimits {
                run: own.or(&app).run_fields(),
                app_concurrency: to_u32(app.max_concurrency.or(self.defaults.max_concurrency)),
                script_concurrency: to_u32(own.max_concurrency),
            },
            app_rate: to_u32(
                app.max_requests_per_sec
                    .or(self.defaults.max_requests_per_sec),
            ),
            script_rate: to_u32(own.max_requests_per_sec),
        }
    }
}

/// What `LimitPolicy::resolve` gives one invocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resolved {
    pub invocation: InvocationLimits,
    /// HTTP requests per second for the app (all its scripts), if limited.
    pub app_rate: Option<u32>,
    /// HTTP requests per second for the script alone, if limited.
    pub script_rate: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(name: &str) -> ScriptName {
        ScriptName::parse(name).unwrap()
    }

    #[test]
    fn overrides_serialize_only_their_set_fields_and_refuse_unknown_ones() {
        let o = LimitOverrides {
            timeout_ms: Some(250),
            ..LimitOverrides::default()
        };
        assert_eq!(serde_json::to_string(&o).unwrap(), r#"{"timeout_ms":250}"#);
        assert!(serde_json::from_str::<LimitOverrides>(r#"{"timeout":1}"#).is_err());
        assert_eq!(LimitOverrides::FIELDS.len(), 10);
        for field in LimitOverrides::FIELDS {
            let mut o = LimitOverrides::default();
            assert!(o.set(field, Some(7)));
            assert_eq!(o.get(field), Some(Some(7)));
        }
        assert!(!LimitOverrides::default().set("nope", Some(1)));
    }

    #[test]
    fn the_server_decides_the_ceilings_of_operations_call_depth_and_time() {
        let policy = LimitPolicy::default();
        let ok = LimitOverrides {
            max_operations: Some(10_000_000),
            timeout_ms: Some(30_000),
            max_string_bytes: Some(64 * 1024 * 1024),
            max_log_bytes: Some(0),
            ..LimitOverrides::default()
        };
        assert_eq!(policy.check(&ok), Ok(()));
        for (field, value, says) in [
            ("max_operations", 10_000_001, "from 1 to 10000000"),
            ("max_call_depth", 65, "stacks"),
            ("timeout_ms", 30_001, "lease"),
            ("timeout_ms", 0, "from 1 to 30000"),
            ("max_concurrency", 0, "max_concurrency must be"),
            ("max_string_bytes", MAX_BYTES_LIMIT + 1, "max_string_bytes"),
        ] {
            let mut o = LimitOverrides::default();
            o.set(field, Some(value));
            let err = policy.check(&o).unwrap_err();
            assert!(err.contains(says), "{field}={value}: {err}");
        }
    }

    #[test]
    fn a_script_wins_over_its_app_and_the_gates_stay_apart() {
        let policy = LimitPolicy {
            defaults: LimitOverrides {
                max_concurrency: Some(8),
                ..LimitPolicy::default().defaults
            },
            ..LimitPolicy::default()
        };
        let mut limits = AppLimits {
            app: LimitOverrides {
                timeout_ms: Some(1_000),
                max_operations: Some(5_000),
                max_concurrency: Some(2),
                max_requests_per_sec: Some(10),
                ..LimitOverrides::default()
            },
            ..AppLimits::default()
        };
        limits.scripts.insert(
            script("slow"),
            LimitOverrides {
                timeout_ms: Some(3_000),
                max_concurrency: Some(1),
                ..LimitOverrides::default()
            },
        );
        let slow = policy.resolve(&limits, &script("slow"));
        assert_eq!(slow.invocation.run.timeout_ms, Some(3_000));
        assert_eq!(slow.invocation.run.max_operations, Some(5_000));
        assert_eq!(slow.invocation.run.max_concurrency, None);
        assert_eq!(slow.invocation.app_concurrency, Some(2));
        assert_eq!(slow.invocation.script_concurrency, Some(1));
        assert_eq!((slow.app_rate, slow.script_rate), (Some(10), None));

        let other = policy.resolve(&AppLimits::default(), &script("x"));
        assert_eq!(other.invocation.run, LimitOverrides::default());
        assert_eq!(
            other.invocation.app_concurrency,
            Some(8),
            "the server's default"
        );

        let shown = policy.effective(&limits, Some(&script("slow")));
        assert_eq!(shown.timeout_ms, Some(3_000));
        assert_eq!(shown.max_call_depth, Some(64));
        assert_eq!(shown.max_concurrency, Some(1));
        assert_eq!(
            shown.max_requests_per_sec, None,
            "the app's rate is the app's gate"
        );
        let app = policy.effective(&limits, None);
        assert_eq!(
            (app.max_concurrency, app.max_requests_per_sec),
            (Some(2), Some(10))
        );
    }

    #[test]
    fn an_override_above_a_lowered_server_is_clamped() {
        let policy = LimitPolicy {
            defaults: LimitOverrides {
                max_call_depth: Some(16),
                ..LimitPolicy::default().defaults
            },
            max_timeout_ms: 2_000,
        };
        let limits = AppLimits {
            app: LimitOverrides {
                max_call_depth: Some(64),
                timeout_ms: Some(10_000),
                ..LimitOverrides::default()
            },
            ..AppLimits::default()
        };
        let run = policy.resolve(&limits, &script("s")).invocation.run;
        assert_eq!(
            (run.max_call_depth, run.timeout_ms),
            (Some(16), Some(2_000))
        );
    }
}
