//! The one `Config` value: built in `main` from defaults, `picloud.toml` and `PICLOUD_*`
//! variables (in that order, later wins), then passed down. Libraries never read the
//! environment themselves.
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `PICLOUD_BIND`: where `picloud serve` listens (port 0 picks a free port).
    pub bind: String,
    /// `PICLOUD_DATA_DIR`: the SQLite database and (later) local blobs live here.
    pub data_dir: PathBuf,
    /// `PICLOUD_DATABASE_URL`: `postgres://...` for PostgreSQL; SQLite in `data_dir` when unset.
    pub database_url: Option<String>,
    /// `PICLOUD_ADMIN_TOKEN`: accepted as an admin token (stored hashed) instead of a generated
    /// one; at least 16 characters. A changed value revokes the previous value's token.
    pub admin_token: Option<String>,
    /// `PICLOUD_LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: String,
    /// `PICLOUD_NODE_ID`: this node's name in outbox leases; a random one per start when unset.
    pub node_id: Option<String>,
    /// `PICLOUD_SECRETS_KEY_FILE`: the 32-byte key that encrypts app secrets at rest;
    /// created (mode 0600) in the data directory on first start when unset. With secrets
    /// stored, a missing or different key stops the start.
    pub secrets_key_file: Option<PathBuf>,
    pub executor: ExecutorSettings,
    pub limits: LimitSettings,
    pub http: HttpSettings,
    pub events: EventSettings,
    pub invocations: InvocationSettings,
    pub blobs: BlobSettings,
    pub smtp: SmtpSettings,
    pub outbound: OutboundSettings,
    pub realtime: RealtimeSettings,
    pub cluster: ClusterSettings,
    pub tracing: TracingSettings,
}

/// Trace export (`[tracing]`, `PICLOUD_TRACING__...`; docs/tracing.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TracingSettings {
    /// `PICLOUD_TRACING__OTLP_ENDPOINT`: an OTLP/HTTP collector (`http://collector:4318`,
    /// `/v1/traces` added when the URL has no path). Unset: nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// How long a span waits for others to share its export request.
    pub export_delay_ms: u64,
    /// How long one export request may take.
    pub export_timeout_ms: u64,
}

impl Default for TracingSettings {
    fn default() -> Self {
        TracingSettings {
            otlp_endpoint: None,
            service_name: "picloud".into(),
            export_delay_ms: 1_000,
            export_timeout_ms: 10_000,
        }
    }
}

/// Realtime streams (`[realtime]`, `PICLOUD_REALTIME__...`; docs/realtime.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RealtimeSettings {
    /// The longest life `realtime::token` gives a token; a longer `ttl` is cut to it.
    pub max_token_ttl_secs: u64,
    /// A heartbeat comment on every stream this often.
    pub heartbeat_ms: u64,
    /// The `retry:` hint: how long a disconnected client waits before reconnecting.
    pub retry_ms: u64,
    /// Topics one subscription may name.
    pub max_topics: usize,
    /// Streams open at once on this node (past it: 503).
    pub max_connections: usize,
    /// Streams open at once on this node for one app (past it: 429).
    pub max_connections_per_app: usize,
    /// Events a stream may fall behind before it is disconnected (it resumes by id).
    pub buffer: usize,
    /// The replay buffer keeps each app's newest this many events ...
    pub retention_count: u64,
    /// ... and none older than this.
    pub retention_secs: u64,
    /// The shortest time between two prunes of the replay buffer: it is pruned this long
    /// after events are committed and when its oldest event expires, never on a timer.
    pub prune_interval_secs: u64,
}

impl Default for RealtimeSettings {
    fn default() -> Self {
        RealtimeSettings {
            max_token_ttl_secs: 3600,
            heartbeat_ms: 15_000,
            retry_ms: 3_000,
            max_topics: 16,
            max_connections: 20_000,
            max_connections_per_app: 10_000,
            buffer: 1024,
            retention_count: 1000,
            retention_secs: 24 * 60 * 60,
            prune_interval_secs: 60,
        }
    }
}

/// This node in the cluster's `nodes` table (`[cluster]`, `PICLOUD_CLUSTER__...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterSettings {
    /// How often the node writes its heartbeat (one small UPDATE per interval); it is shown
    /// `down` after missing three. On SQLite (one process) nothing is written on a timer:
    /// the row is written at start, and the nodes list asks the process itself.
    pub heartbeat_ms: u64,
    /// `PICLOUD_CLUSTER__ADVERTISE_URL`: the address the nodes list shows for this node;
    /// the address it listens on when unset.
    pub advertise_url: Option<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            heartbeat_ms: 5_000,
            advertise_url: None,
        }
    }
}

/// The outbox dispatcher and dead letters (`[events]`, `PICLOUD_EVENTS__...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EventSettings {
    /// Rows claimed (and committed) together.
    pub batch_size: u32,
    /// How long a claimed row stays ours before another node may take it.
    pub lease_secs: u64,
    /// Events running at once on this node.
    pub max_in_flight: usize,
    /// Retry backoff: base * 2^(attempt-1) with full jitter, capped.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Dead letters older than this are purged.
    pub dead_letter_retention_days: u64,
    /// Successful event runs recorded per second at most on this node; past it their
    /// records are sampled out (`picloud_invocation_records_sampled_total{source="event"}`).
    /// 0 records every one.
    pub recorded_successes_per_sec: u32,
}

/// Invocation history (`[invocations]`, `PICLOUD_INVOCATIONS__...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct InvocationSettings {
    /// Invocation records older than this are purged; 0 keeps them forever.
    pub retention_days: u64,
    /// Failure records (error, timeout) of HTTP invocations stored per app per second;
    /// past it they are only counted (`dropped` in the invocation list). 0: no bound.
    pub failures_per_sec: u32,
    /// Log bytes kept in one stored invocation record; the rest is cut and marked.
    /// 0: no bound (the executor's `limits.max_log_bytes` still applies).
    pub max_record_log_bytes: usize,
}

impl Default for InvocationSettings {
    fn default() -> Self {
        InvocationSettings {
            retention_days: 7,
            failures_per_sec: 10,
            max_record_log_bytes: 16 * 1024,
        }
    }
}

/// Where blob bytes live (`[blobs]`): a local directory, or an S3-compatible bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BlobSettings {
    /// Local directory; `<data_dir>/blobs` when unset.
    pub dir: Option<PathBuf>,
    /// Set to use S3 (e.g. `http://127.0.0.1:9000` for MinIO) instead of the directory.
    pub s3_endpoint: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_region: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    pub s3_allow_http: bool,
}

/// Outgoing email (`[smtp]`). Without a host, messages go to the development mailbox
/// that the admin API lists.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SmtpSettings {
    pub host: Option<String>,
    pub port: u16,
    /// `starttls` (default), `tls` or `none`.
    pub security: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender when a script gives no `from`.
    pub from: String,
    pub timeout_ms: u64,
    /// Other addresses a script may give as `email::send`'s `from`; the `from` above is
    /// always allowed. Default: none, so scripts send as `from` only.
    pub allowed_from: Vec<String>,
}

/// Outbound `http::*` from scripts (`[outbound]`): public addresses only, plus these.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboundSettings {
    /// Host names allowed whatever they resolve to.
    pub allow_hosts: Vec<String>,
    /// Address ranges allowed although not public (`10.1.0.0/16`).
    pub allow_cidrs: Vec<String>,
    pub timeout_ms: u64,
    pub max_response_bytes: usize,
    pub max_redirects: usize,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            batch_size: 100,
            lease_secs: 60,
            max_in_flight: 128,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            dead_letter_retention_days: 30,
            recorded_successes_per_sec: 1_000,
        }
    }
}

impl Default for SmtpSettings {
    fn default() -> Self {
        SmtpSettings {
            host: None,
            port: 587,
            security: "starttls".into(),
            username: None,
            password: None,
            from: "picloud@localhost".into(),
            timeout_ms: 30_000,
            allowed_from: Vec::new(),
        }
    }
}

impl Default for OutboundSettings {
    fn default() -> Self {
        OutboundSettings {
            allow_hosts: Vec::new(),
            allow_cidrs: Vec::new(),
            timeout_ms: 10_000,
            max_response_bytes: 5 * 1024 * 1024,
            max_redirects: 5,
        }
    }
}

/// The script-thread pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecutorSettings {
    /// Script threads; 0 means one per core.
    pub threads: usize,
    /// Invocations that may wait for a thread; past that, callers get 503.
    pub queue_capacity: usize,
    /// `PICLOUD_EXECUTOR__SOCKET` (cluster mode): the Unix socket of the executor process.
    /// `picloud-executor` listens on it; `picloud-orchestrator` connects to it (and
    /// reconnects) instead of starting its own executor. Unset: the orchestrator starts
    /// `picloud-executor` itself, on a socket in the data directory.
    pub socket: Option<PathBuf>,
    /// `PICLOUD_EXECUTOR__BINARY`: the `picloud-executor` program the orchestrator starts
    /// (default: the one next to the `picloud-orchestrator` binary).
    pub binary: Option<PathBuf>,
}

/// Per-invocation limits (`PICLOUD_LIMITS__TIMEOUT_MS=2000`, or `[limits]` in picloud.toml):
/// what every app gets unless an operator overrides some for an app or a script (admin API
/// `/api/v1/apps/{app}/limits`). `max_operations` and `max_call_depth` are also the most an
/// override may set (script thread stacks are sized from them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitSettings {
    pub max_operations: u64,
    pub timeout_ms: u64,
    pub max_call_depth: usize,
    pub max_expr_depth: usize,
    pub max_string_bytes: usize,
    pub max_array_len: usize,
    pub max_map_len: usize,
    pub max_output_bytes: usize,
    pub max_log_bytes: usize,
    pub max_kv_value_bytes: usize,
    pub max_blob_bytes: usize,
    pub max_payload_bytes: usize,
    pub max_invoke_depth: usize,
    /// Writes and events one run may buffer before it commits (KV writes, blob puts and
    /// deletes, events, emails); rewriting a key or name the run wrote does not add one.
    pub max_effects_per_run: usize,
    /// Bytes one run may buffer: values and payloads as JSON, blob contents, keys, names.
    pub max_effect_bytes_per_run: usize,
    /// Invocations of one app queued or running at once on a node (HTTP and events
    /// together); past it HTTP gets 429 and events wait. 0: no cap.
    pub max_concurrency: u32,
    /// HTTP requests per second to one app on a node; past it 429. 0: no limit.
    pub max_requests_per_sec: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// Largest request body an endpoint accepts (413 past it).
    pub max_body_bytes: usize,
    /// Largest script source a deploy accepts (413 past it).
    pub max_script_bytes: usize,
    /// Longest a sync request may wait for and run its script (504 past it).
    pub request_timeout_ms: u64,
    /// On shutdown, how long in-flight requests get to finish.
    pub shutdown_grace_ms: u64,
    /// Successful endpoint calls recorded per second at most; past it successes are
    /// sampled (failures are always recorded). 0 records every call.
    pub recorded_successes_per_sec: u32,
    /// How long a client may take to send a request head, from its first byte (or from
    /// connecting, for the first request); past it the connection is closed.
    pub header_read_timeout_ms: u64,
    /// How long a request body may take to arrive, from the request's head (408 past it).
    pub body_read_timeout_ms: u64,
    /// How long a kept-alive connection may wait for its next request before it is closed.
    pub idle_timeout_ms: u64,
    /// How long sending an answer may go without progress (a client that stops reading)
    /// before the connection is closed.
    pub write_timeout_ms: u64,
    /// Connections served at once; one more gets 503 and is closed. 0 derives it from the
    /// open-file limit (three quarters of it, at least 128 below it, at most 1024).
    pub max_connections: usize,
    /// Also accept HTTP/2 without TLS (h2c, prior knowledge). Off: HTTP/1.1 only.
    pub h2c: bool,
    /// `PICLOUD_HTTP__APP_BASE_DOMAIN`: with `apps.example.com`, a request to
    /// `shop.apps.example.com` is app `shop`'s, every path of it (`/hello` there is
    /// `/shop/hello`), so each app has its own browser origin. Unset by default.
    pub app_base_domain: Option<String>,
    /// `PICLOUD_HTTP__APP_PATHS`: whether `/{app}/...` on other hosts still reaches the
    /// app (default true; turn it off once apps are served on their own hosts).
    pub app_paths: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./picloud-data"),
            database_url: None,
            admin_token: None,
            log_format: "text".into(),
            node_id: None,
            secrets_key_file: None,
            executor: ExecutorSettings::default(),
            limits: LimitSettings::default(),
            http: HttpSettings::default(),
            events: EventSettings::default(),
            invocations: InvocationSettings::default(),
            blobs: BlobSettings::default(),
            smtp: SmtpSettings::default(),
            outbound: OutboundSettings::default(),
            realtime: RealtimeSettings::default(),
            cluster: ClusterSettings::default(),
            tracing: TracingSettings::default(),
        }
    }
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        ExecutorSettings {
            threads: 0,
            queue_capacity: 256,
            socket: None,
            binary: None,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        let l = executor_core::Limits::default();
        LimitSettings {
            max_operations: l.max_operations,
            timeout_ms: l.timeout.as_millis() as u64,
            max_call_depth: l.max_call_depth,
            max_expr_depth: l.max_expr_depth,
            max_string_bytes: l.max_string_bytes,
            max_array_len: l.max_array_len,
            max_map_len: l.max_map_len,
            max_output_bytes: l.max_output_bytes,
            max_log_bytes: l.max_log_bytes,
            max_kv_value_bytes: l.max_kv_value_bytes,
            max_blob_bytes: l.max_blob_bytes,
            max_payload_bytes: l.max_payload_bytes,
            max_invoke_depth: l.max_invoke_depth,
            max_effects_per_run: l.max_effects_per_run,
            max_effect_bytes_per_run: l.max_effect_bytes_per_run,
            max_concurrency: 0,
            max_requests_per_sec: 0,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            max_body_bytes: 1024 * 1024,
            max_script_bytes: 256 * 1024,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            recorded_successes_per_sec: 1_000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            write_timeout_ms: 30_000,
            max_connections: 0,
            h2c: false,
            app_base_domain: None,
            app_paths: true,
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (if it exists), then `PICLOUD_*` variables; nested keys
    /// use `__` (`PICLOUD_HTTP__MAX_BODY_BYTES`).
    ///
    /// # Errors
    /// When the file or a variable has a value of the wrong type.
    pub fn load(file: &Path) -> Result<Config, Box<figment::Error>> {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(file))
            .merge(Env::prefixed("PICLOUD_").split("__"))
            .extract()
            .map_err(Box::new)
    }

    /// The database to open: `database_url`, or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.trim().is_empty() => url.clone(),
            _ => format!("sqlite://{}", self.data_dir.join("picloud.db").display()),
        }
    }

    pub fn executor_limits(&self) -> executor_core::Limits {
        let l = &self.limits;
        executor_core::Limits {
            max_operations: l.max_operations,
            timeout: Duration::from_millis(l.timeout_ms),
            max_call_depth: l.max_call_depth,
            max_expr_depth: l.max_expr_depth,
            max_string_bytes: l.max_string_bytes,
            max_array_len: l.max_array_len,
            max_map_len: l.max_map_len,
            max_output_bytes: l.max_output_bytes,
            max_log_bytes: l.max_log_bytes,
            max_kv_value_bytes: l.max_kv_value_bytes,
            max_blob_bytes: l.max_blob_bytes,
            max_payload_bytes: l.max_payload_bytes,
            max_invoke_depth: l.max_invoke_depth,
            max_effects_per_run: l.max_effects_per_run,
            max_effect_bytes_per_run: l.max_effect_bytes_per_run,
        }
    }

    /// How long a claimed event stays this node's: `[events] lease_secs`, and at least
    /// twice the run timeout (the dispatcher gives up on a run at 3/4 of it).
    pub fn event_lease(&self) -> Duration {
        Duration::from_secs(self.events.lease_secs.max(1))
            .max(Duration::from_millis(self.limits.timeout_ms) * 2)
    }

    /// The defaults and ceilings of per-app and per-script limits: `[limits]`, and for
    /// `timeout_ms` half the event lease (an event's run must end well inside it).
    pub fn limit_policy(&self) -> shared::LimitPolicy {
        let l = &self.limits;
        let gate = |n: u32| (n > 0).then_some(u64::from(n));
        let lease_ms = u64::try_from(self.event_lease().as_millis()).unwrap_or(u64::MAX);
        shared::LimitPolicy {
            defaults: shared::LimitOverrides {
                max_operations: Some(l.max_operations),
                timeout_ms: Some(l.timeout_ms),
                max_call_depth: Some(l.max_call_depth as u64),
                max_string_bytes: Some(l.max_string_bytes as u64),
                max_array_len: Some(l.max_array_len as u64),
                max_map_len: Some(l.max_map_len as u64),
                max_output_bytes: Some(l.max_output_bytes as u64),
                max_log_bytes: Some(l.max_log_bytes as u64),
                max_concurrency: gate(l.max_concurrency),
                max_requests_per_sec: gate(l.max_requests_per_sec),
            },
            max_timeout_ms: (lease_ms / 2).max(l.timeout_ms),
        }
    }

    /// A config for tests: the given data directory and database, a fixed admin token,
    /// two script threads and short limits so a runaway script ends quickly.
    pub fn for_tests(data_dir: &Path, database_url: &str) -> Config {
        let mut config = Config {
            data_dir: data_dir.to_path_buf(),
            database_url: Some(database_url.to_owned()),
            admin_token: Some(TEST_ADMIN_TOKEN.to_owned()),
            ..Config::default()
        };
        config.executor.threads = 2;
        config.limits.timeout_ms = 2_000;
        config.limits.max_operations = 2_000_000;
        config.http.shutdown_grace_ms = 5_000;
        // Retries in tests come quickly; the jitter still applies.
        config.events.backoff_base_ms = 50;
        config.events.backoff_max_ms = 200;
        // Tests wait for failure records; the ones about the bound set it themselves.
        config.invocations.failures_per_sec = 0;
        // Outbound requests may reach test servers on 127.0.0.1 (and nothing else private).
        config.outbound.allow_cidrs = vec!["127.0.0.1/32".into()];
        config
    }
}

/// The admin token `Config::for_tests` sets.
pub const TEST_ADMIN_TOKEN: &str = "pct_test_admin_token_for_integration_tests_only";

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_override_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("picloud.toml");
        std::fs::write(
            &file,
            "bind = \"127.0.0.1:9999\"\n[http]\nmax_body_bytes = 10\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("PICLOUD_DATA_DIR", "/srv/pc");
            jail.set_env("PICLOUD_LIMITS__TIMEOUT_MS", "1234");
            let config = Config::load(&file).unwrap();
            assert_eq!(config.bind, "127.0.0.1:9999");
            assert_eq!(config.http.max_body_bytes, 10);
            assert_eq!(config.data_dir, PathBuf::from("/srv/pc"));
            assert_eq!(config.limits.timeout_ms, 1234);
            assert_eq!(config.database_url(), "sqlite:///srv/pc/picloud.db");
            Ok(())
        });
    }

    #[test]
    fn the_limit_policy_takes_limits_from_the_config_and_timeouts_from_the_lease() {
        let mut config = Config::default();
        config.limits.max_concurrency = 4;
        config.events.lease_secs = 120;
        let policy = config.limit_policy();
        assert_eq!(policy.defaults.max_concurrency, Some(4));
        assert_eq!(policy.defaults.max_requests_per_sec, None);
        assert_eq!(policy.defaults.timeout_ms, Some(5_000));
        assert_eq!(policy.max_timeout_ms, 60_000);
        config.limits.timeout_ms = 90_000;
        assert_eq!(
            config.limit_policy().max_timeout_ms,
            90_000,
            "the lease grows with the server's timeout"
        );
    }

    #[test]
    fn a_missing_file_leaves_the_defaults() {
        figment::Jail::expect_with(|_| {
            let config = Config::load(Path::new("/nonexistent/picloud.toml")).unwrap();
            assert_eq!(config.bind, "127.0.0.1:8080");
            assert!(config.database_url().ends_with("picloud-data/picloud.db"));
            Ok(())
        });
    }
}
