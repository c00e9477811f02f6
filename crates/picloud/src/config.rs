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
    /// `PICLOUD_ADMIN_TOKEN`: accepted as an admin token (stored hashed) instead of a generated one.
    pub admin_token: Option<String>,
    /// `PICLOUD_LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: String,
    pub executor: ExecutorSettings,
    pub limits: LimitSettings,
    pub http: HttpSettings,
}

/// The script-thread pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecutorSettings {
    /// Script threads; 0 means one per core.
    pub threads: usize,
    /// Invocations that may wait for a thread; past that, callers get 503.
    pub queue_capacity: usize,
}

/// Per-invocation limits (`PICLOUD_LIMITS__TIMEOUT_MS=2000`, or `[limits]` in picloud.toml).
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./picloud-data"),
            database_url: None,
            admin_token: None,
            log_format: "text".into(),
            executor: ExecutorSettings::default(),
            limits: LimitSettings::default(),
            http: HttpSettings::default(),
        }
    }
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        ExecutorSettings {
            threads: 0,
            queue_capacity: 256,
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
    fn a_missing_file_leaves_the_defaults() {
        figment::Jail::expect_with(|_| {
            let config = Config::load(Path::new("/nonexistent/picloud.toml")).unwrap();
            assert_eq!(config.bind, "127.0.0.1:8080");
            assert!(config.database_url().ends_with("picloud-data/picloud.db"));
            Ok(())
        });
    }
}
