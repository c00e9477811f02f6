//! An app as a folder: `picloud.toml` (or `app.toml`) and the app's `*.rhai` files.
//!
//! `Manifest` is the file's format (its JSON Schema is `schemas/picloud.schema.json`,
//! generated from these types); `load` reads a folder into a `Folder`: the manifest
//! checked, every script's source, the triggers in one normal form (`Trigger`, shared
//! with what the server answers, so the plan compares like with like) and the secret
//! values found in the environment or the folder's `.env`.
//!
//! Every error names the file and, for the manifest, the line and the key:
//! `picloud.toml:7:1: key 'colour': unknown field ...`.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::{AppName, ChannelName, RoutePath, ScriptName};
use toml::Spanned;

use super::triggers::parse_route;

/// The manifest's names, in the order they are looked for.
pub const MANIFEST_NAMES: [&str; 2] = ["picloud.toml", "app.toml"];
/// The local file of secret values (`NAME=value` lines); never committed.
pub const ENV_FILE: &str = ".env";
/// The server's `max_attempts` when a trigger names none.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The server's idempotency-key TTL when a route opts in without one.
pub const DEFAULT_IDEMPOTENCY_TTL: u32 = shared::store::DEFAULT_TTL_SECS;

/// `picloud.toml`: an app as a folder (docs/apps-as-folders.md).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "picloud.toml",
    description = "A PiCloud app as a folder: its scripts (*.rhai), triggers, config, secret names, realtime topics and limits. See docs/apps-as-folders.md."
)]
pub struct Manifest {
    /// The app's name (created by `picloud push` when it does not exist).
    #[schemars(
        with = "String",
        regex(pattern = r"^[a-z]([a-z0-9-]*[a-z0-9])?$"),
        length(min = 1, max = 63)
    )]
    pub app: Spanned<String>,
    /// Secret NAMES (`secrets::get`). Each value comes from the environment variable of
    /// the same name, or from the folder's `.env` file (never commit it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub secrets: Vec<Spanned<String>>,
    /// Scripts whose name is not their file's name. Every `*.rhai` file of the folder
    /// (subfolders included, hidden ones not) is a script named after the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub script: Vec<ScriptEntry>,
    /// HTTP routes: `route = "GET /users/:id"` runs `script`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpEntry>,
    /// Pub/sub subscriptions: each `pubsub::publish` to `topic` runs `script`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topic: Vec<TopicEntry>,
    /// Queue consumers (one per queue): each `queue::send` to `queue` runs `script`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue: Vec<QueueEntry>,
    /// Cron schedules (5 or 6 fields) in a time zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cron: Vec<CronEntry>,
    /// Scripts run for each new dead letter of the app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead_letter: Vec<DeadLetterEntry>,
    /// Config values (`config::get`): any TOML value, stored as JSON.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, Value>")]
    pub config: BTreeMap<String, toml::Value>,
    /// Topics browsers may subscribe to, and the origins whose pages may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime: Option<RealtimeEntry>,
    /// The app's limits over the server's (setting them needs an admin token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// One script's limits over its app's: `[script_limits.report]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub script_limits: BTreeMap<String, Limits>,
}

impl Manifest {
    /// The manifest of an app with nothing in it yet.
    pub fn new(app: &str) -> Manifest {
        Manifest {
            app: Spanned::new(0..0, app.to_owned()),
            script: Vec::new(),
            http: Vec::new(),
            topic: Vec::new(),
            queue: Vec::new(),
            cron: Vec::new(),
            dead_letter: Vec::new(),
            config: BTreeMap::new(),
            secrets: Vec::new(),
            realtime: None,
            limits: None,
            script_limits: BTreeMap::new(),
        }
    }
}

/// A script whose name is not its file's stem.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptEntry {
    /// The file, relative to the folder (`lib/helpers_v2.rhai`).
    #[schemars(with = "String")]
    pub file: Spanned<String>,
    /// The script's name (default: the file name without `.rhai`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Opting a route in to `Idempotency-Key` replays: `true` (24 hours) or the seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum IdempotencyEntry {
    On(bool),
    TtlSecs(u32),
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpEntry {
    /// `"METHOD /path"` (GET POST PUT PATCH DELETE HEAD OPTIONS ANY), e.g. `"GET /users/:id"`.
    #[schemars(
        with = "String",
        regex(
            pattern = r"^((GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|ANY|get|post|put|patch|delete|head|options|any) +)?/[^ ]*$"
        )
    )]
    pub route: Spanned<String>,
    /// The script the route runs.
    #[schemars(with = "String")]
    pub script: Spanned<String>,
    /// Replay the first answer to a repeated `Idempotency-Key`: `true` or a TTL in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<IdempotencyEntry>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicEntry {
    pub topic: String,
    #[schemars(with = "String")]
    pub script: Spanned<String>,
    /// Attempts before an event becomes a dead letter (1 to 100; default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueEntry {
    pub queue: String,
    #[schemars(with = "String")]
    pub script: Spanned<String>,
    /// Attempts before a message becomes a dead letter (1 to 100; default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CronEntry {
    /// 5 fields (minute first) or 6 (second first), e.g. `"0 9 * * MON-FRI"`.
    pub schedule: String,
    /// An IANA time zone (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[schemars(with = "String")]
    pub script: Spanned<String>,
    /// Attempts before a run becomes a dead letter (1 to 100; default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterEntry {
    #[schemars(with = "String")]
    pub script: Spanned<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RealtimeEntry {
    /// Topics browsers may subscribe to (docs/realtime.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// Origins whose pages may open streams (`"*"`: any). Absent: left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Vec<String>>,
}

/// Per-app limits (docs/script-api.md#limits); absent fields follow the server's.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Rhai operations per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_operations: Option<u64>,
    /// Wall-clock milliseconds per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Nested script function calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_call_depth: Option<u64>,
    /// Bytes in any one string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_string_bytes: Option<u64>,
    /// Elements in any one array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_array_len: Option<u64>,
    /// Entries in any one object map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_map_len: Option<u64>,
    /// Bytes in the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
    /// Bytes of captured log text per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_bytes: Option<u64>,
    /// Invocations running at once on a node (HTTP and events together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u64>,
    /// HTTP requests per second on a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_sec: Option<u64>,
}

impl Limits {
    /// The fields that are set, as the API's JSON object.
    pub fn to_map(&self) -> serde_json::Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }
    }
}

/// The JSON Schema of `picloud.toml`, as committed in `schemas/picloud.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Manifest);
    let mut value = serde_json::to_value(&schema).unwrap_or_default();
    drop_null(&mut value);
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// TOML has no null: an optional field is absent, never `null`, so the schema of an
/// `Option<T>` is T's (editors would otherwise offer `null`).
fn drop_null(v: &mut Value) {
    let is_null = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
    match v {
        Value::Object(obj) => {
            if let Some(Value::Array(types)) = obj.get_mut("type") {
                types.retain(|t| t.as_str() != Some("null"));
                if types.len() == 1 {
                    let only = types.remove(0);
                    obj.insert("type".into(), only);
                }
            }
            let single = match obj.get("anyOf") {
                Some(Value::Array(any)) if any.len() == 2 && any.iter().any(is_null) => {
                    any.iter().find(|s| !is_null(s)).cloned()
                }
                _ => None,
            };
            if let Some(Value::Object(inner)) = single {
                obj.remove("anyOf");
                for (k, val) in inner {
                    obj.entry(k).or_insert(val);
                }
            }
            obj.values_mut().for_each(drop_null);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}

/// What a trigger listens to, in one form for the folder and the server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Http { method: String, path: String },
    Topic(String),
    Queue(String),
    Cron { schedule: String, timezone: String },
    DeadLetter,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Http { method, path } => write!(f, "http {method} {path}"),
            Source::Topic(t) => write!(f, "topic {t}"),
            Source::Queue(q) => write!(f, "queue {q}"),
            Source::Cron { schedule, timezone } => write!(f, "cron \"{schedule}\" ({timezone})"),
            Source::DeadLetter => f.write_str("dead_letter"),
        }
    }
}

/// A trigger in normal form: defaults filled in, so equal means "nothing to do".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Trigger {
    pub source: Source,
    pub script: String,
    pub max_attempts: u32,
    /// Http only: the TTL of idempotency-key replays, when opted in.
    pub idempotency_ttl: Option<u32>,
}

impl Trigger {
    /// What identifies the trigger on the server: a route and a queue have one owner;
    /// the other kinds are one trigger per (source, script).
    pub fn key(&self) -> (Source, Option<String>) {
        match &self.source {
            Source::Http { .. } | Source::Queue(_) => (self.source.clone(), None),
            _ => (self.source.clone(), Some(self.script.clone())),
        }
    }

    /// The admin API's body that creates it.
    pub fn body(&self) -> Value {
        let mut body = match &self.source {
            Source::Http { method, path } => {
                serde_json::json!({"kind": "http", "method": method, "path": path})
            }
            Source::Topic(t) => serde_json::json!({"kind": "topic", "topic": t}),
            Source::Queue(q) => serde_json::json!({"kind": "queue", "queue": q}),
            Source::Cron { schedule, timezone } => {
                serde_json::json!({"kind": "cron", "schedule": schedule, "timezone": timezone})
            }
            Source::DeadLetter => serde_json::json!({"kind": "dead_letter"}),
        };
        if let Some(obj) = body.as_object_mut() {
            obj.insert("script".into(), Value::from(self.script.clone()));
            obj.insert("max_attempts".into(), Value::from(self.max_attempts));
            if let Some(ttl) = self.idempotency_ttl {
                obj.insert("idempotency".into(), serde_json::json!({"ttl_secs": ttl}));
            }
        }
        body
    }

    /// The same trigger as the server describes it (`GET .../triggers`).
    pub fn from_server(t: &Value) -> Option<Trigger> {
        let s = |k: &str| t.get(k).and_then(Value::as_str).map(str::to_owned);
        let source = match s("kind")?.as_str() {
            "http" => Source::Http {
                method: s("method")?,
                path: s("path")?,
            },
            "topic" => Source::Topic(s("topic")?),
            "queue" => Source::Queue(s("queue")?),
            "cron" => Source::Cron {
                schedule: s("schedule")?,
                timezone: s("timezone").unwrap_or_else(|| "UTC".into()),
            },
            "dead_letter" => Source::DeadLetter,
            _ => return None,
        };
        Some(Trigger {
            source,
            script: s("script")?,
            max_attempts: t
                .get("max_attempts")
                .and_then(Value::as_u64)
                .map_or(DEFAULT_MAX_ATTEMPTS, |n| n as u32),
            idempotency_ttl: t
                .pointer("/idempotency/ttl_secs")
                .and_then(Value::as_u64)
                .map(|n| n as u32),
        })
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.source, self.script)?;
        if self.max_attempts != DEFAULT_MAX_ATTEMPTS {
            write!(f, " (max_attempts {})", self.max_attempts)?;
        }
        if let Some(ttl) = self.idempotency_ttl {
            write!(f, " (idempotency keys {ttl}s)")?;
        }
        Ok(())
    }
}

/// One script of the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalScript {
    pub name: String,
    /// Relative to the folder, with `/` separators (for messages).
    pub file: String,
    pub source: String,
}

/// A folder, read and checked.
#[derive(Debug)]
pub struct Folder {
    pub dir: PathBuf,
    /// The manifest's file name (`picloud.toml`).
    pub manifest_name: String,
    pub app: String,
    pub scripts: Vec<LocalScript>,
    pub triggers: Vec<Trigger>,
    pub config: BTreeMap<String, Value>,
    /// Secret names, each with its value when the environment or `.env` has one.
    pub secrets: BTreeMap<String, Option<String>>,
    pub realtime_topics: BTreeSet<String>,
    pub cors: Option<Vec<String>>,
    pub limits: Option<Limits>,
    pub script_limits: BTreeMap<String, Limits>,
}

impl Folder {
    pub fn script(&self, name: &str) -> Option<&LocalScript> {
        self.scripts.iter().find(|s| s.name == name)
    }
}

/// The manifest file of `dir`, if it has one.
pub fn manifest_path(dir: &Path) -> Option<PathBuf> {
    MANIFEST_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// `line:column` (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The key written on the line of `offset` (`max_attempts` in `max_attempts = "x"`),
/// or the table header (`[limits]`) when the line is one.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[start..end].trim();
    if line.starts_with('[') {
        return Some(line.trim_matches(['[', ']']).trim().to_owned());
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty()).then(|| key.to_owned())
}

/// An error in the manifest at a byte range: `picloud.toml:7:11: key 'x': message`.
fn at(
    file: &str,
    text: &str,
    span: Option<std::ops::Range<usize>>,
    message: &str,
) -> anyhow::Error {
    match span {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            match key_at(text, span.start) {
                Some(key) => anyhow::anyhow!("{file}:{line}:{col}: key '{key}': {message}"),
                None => anyhow::anyhow!("{file}:{line}:{col}: {message}"),
            }
        }
        None => anyhow::anyhow!("{file}: {message}"),
    }
}

/// Parse a manifest's text; errors name `file`, the line and the key.
///
/// # Errors
/// TOML syntax, an unknown key, a value of the wrong type.
pub fn parse_manifest(file: &str, text: &str) -> anyhow::Result<Manifest> {
    toml::from_str::<Manifest>(text).map_err(|e| {
        // The message without toml's own rendering of the line (we name file:line:key).
        let message = e.message().trim().to_owned();
        at(file, text, e.span(), &message)
    })
}

/// Read and check the folder `dir`: the manifest, every script, the secret values.
///
/// # Errors
/// No manifest; a manifest error (file:line:key); a bad name, route or reference; two
/// scripts with one name; a file that cannot be read.
pub fn load(dir: &Path) -> anyhow::Result<Folder> {
    load_with_env(dir, |name| std::env::var(name).ok())
}

/// [`load`], with the environment given (tests).
pub fn load_with_env(dir: &Path, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Folder> {
    let path = manifest_path(dir).ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no picloud.toml (or app.toml): see docs/apps-as-folders.md, or `picloud pull APP {}` to start from an app",
            dir.display(),
            dir.display()
        )
    })?;
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("picloud.toml")
        .to_owned();
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let manifest = parse_manifest(&file, &text)?;
    let err = |span: std::ops::Range<usize>, msg: &str| at(&file, &text, Some(span), msg);

    let app = manifest.app.get_ref().clone();
    AppName::parse(&app).map_err(|e| err(manifest.app.span(), &e.to_string()))?;

    // Scripts: every *.rhai file, renamed by [[script]] entries.
    let mut renames: BTreeMap<String, String> = BTreeMap::new();
    for entry in &manifest.script {
        let rel = entry.file.get_ref().replace('\\', "/");
        let full = dir.join(&rel);
        if !full.is_file() {
            return Err(err(
                entry.file.span(),
                &format!("no file {rel} in the folder"),
            ));
        }
        let name = match &entry.name {
            Some(n) => n.clone(),
            None => stem(&full).ok_or_else(|| err(entry.file.span(), "not a .rhai file"))?,
        };
        renames.insert(normal_rel(&rel), name);
    }
    let mut files = Vec::new();
    rhai_files(dir, dir, &mut files)?;
    for rel in renames.keys() {
        if !files.contains(rel) {
            files.push(rel.clone());
        }
    }
    files.sort();
    let mut scripts: Vec<LocalScript> = Vec::new();
    for rel in files {
        let name = match renames.get(&rel) {
            Some(n) => n.clone(),
            None => stem(Path::new(&rel)).unwrap_or_default(),
        };
        ScriptName::parse(&name)
            .map_err(|e| anyhow::anyhow!("{rel}: script name '{name}': {e}"))?;
        if let Some(other) = scripts.iter().find(|s| s.name == name) {
            anyhow::bail!(
                "{rel} and {} are both script '{name}': rename one, or name it in a [[script]] entry of {file}",
                other.file
            );
        }
        let source = std::fs::read_to_string(dir.join(&rel))
            .with_context(|| format!("cannot read {rel}"))?;
        scripts.push(LocalScript {
            name,
            file: rel,
            source,
        });
    }
    let known = |s: &Spanned<String>| -> anyhow::Result<String> {
        let name = s.get_ref();
        if scripts.iter().any(|l| &l.name == name) {
            Ok(name.clone())
        } else {
            Err(err(
                s.span(),
                &format!("no script '{name}' in the folder (no {name}.rhai)"),
            ))
        }
    };
    let attempts = |n: Option<u32>, span: std::ops::Range<usize>| -> anyhow::Result<u32> {
        let n = n.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if (1..=100).contains(&n) {
            Ok(n)
        } else {
            Err(err(span, "max_attempts must be between 1 and 100"))
        }
    };
    let channel = |c: &str, span: std::ops::Range<usize>| -> anyhow::Result<String> {
        ChannelName::parse(c).map_err(|e| err(span, &e.to_string()))?;
        Ok(c.to_owned())
    };

    let mut triggers = Vec::new();
    let mut routes: BTreeMap<(String, String), String> = BTreeMap::new();
    for h in &manifest.http {
        let route = parse_route(h.route.get_ref()).map_err(|e| err(h.route.span(), &e))?;
        RoutePath::parse(&route.path).map_err(|e| err(h.route.span(), &e.to_string()))?;
        let script = known(&h.script)?;
        if let Some(owner) =
            routes.insert((route.method.clone(), route.path.clone()), script.clone())
        {
            return Err(err(
                h.route.span(),
                &format!("route {route} is bound twice (to '{owner}' and to '{script}')"),
            ));
        }
        let idempotency_ttl = match h.idempotency {
            None | Some(IdempotencyEntry::On(false)) => None,
            Some(IdempotencyEntry::On(true)) => Some(DEFAULT_IDEMPOTENCY_TTL),
            Some(IdempotencyEntry::TtlSecs(n)) if (1..=2_592_000).contains(&n) => Some(n),
            Some(IdempotencyEntry::TtlSecs(_)) => {
                return Err(err(
                    h.route.span(),
                    "idempotency must be true or 1 to 2592000 seconds",
                ));
            }
        };
        triggers.push(Trigger {
            source: Source::Http {
                method: route.method,
                path: route.path,
            },
            script,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            idempotency_ttl,
        });
    }
    for t in &manifest.topic {
        triggers.push(Trigger {
            source: Source::Topic(channel(&t.topic, t.script.span())?),
            script: known(&t.script)?,
            max_attempts: attempts(t.max_attempts, t.script.span())?,
            idempotency_ttl: None,
        });
    }
    let mut queues: BTreeMap<String, String> = BTreeMap::new();
    for q in &manifest.queue {
        let script = known(&q.script)?;
        if let Some(owner) = queues.insert(q.queue.clone(), script.clone()) {
            return Err(err(
                q.script.span(),
                &format!(
                    "queue {} has two consumers ('{owner}' and '{script}'): a queue has one",
                    q.queue
                ),
            ));
        }
        triggers.push(Trigger {
            source: Source::Queue(channel(&q.queue, q.script.span())?),
            script,
            max_attempts: attempts(q.max_attempts, q.script.span())?,
            idempotency_ttl: None,
        });
    }
    for c in &manifest.cron {
        triggers.push(Trigger {
            source: Source::Cron {
                schedule: c.schedule.clone(),
                timezone: c.timezone.clone().unwrap_or_else(|| "UTC".into()),
            },
            script: known(&c.script)?,
            max_attempts: attempts(c.max_attempts, c.script.span())?,
            idempotency_ttl: None,
        });
    }
    for d in &manifest.dead_letter {
        triggers.push(Trigger {
            source: Source::DeadLetter,
            script: known(&d.script)?,
            max_attempts: attempts(d.max_attempts, d.script.span())?,
            idempotency_ttl: None,
        });
    }
    let mut seen = BTreeSet::new();
    for t in &triggers {
        if !seen.insert(t.key()) {
            anyhow::bail!("{file}: the trigger {t} is listed twice");
        }
    }

    let config = manifest
        .config
        .iter()
        .map(|(k, v)| (k.clone(), toml_to_json(v)))
        .collect();

    let dotenv = read_env_file(dir)?;
    let mut secrets = BTreeMap::new();
    for name in &manifest.secrets {
        let n = name.get_ref();
        if n.is_empty() || n.len() > 255 {
            return Err(err(name.span(), "a secret name is 1 to 255 characters"));
        }
        let value = env(n).or_else(|| dotenv.get(n).cloned());
        secrets.insert(n.clone(), value);
    }

    for name in manifest.script_limits.keys() {
        if !scripts.iter().any(|l| &l.name == name) {
            anyhow::bail!("{file}: [script_limits.{name}]: no script '{name}' in the folder");
        }
    }

    let (realtime_topics, cors) = match &manifest.realtime {
        Some(r) => (r.topics.iter().cloned().collect(), r.cors.clone()),
        None => (BTreeSet::new(), None),
    };
    Ok(Folder {
        dir: dir.to_path_buf(),
        manifest_name: file,
        app,
        scripts,
        triggers,
        config,
        secrets,
        realtime_topics,
        cors,
        limits: manifest.limits.clone(),
        script_limits: manifest.script_limits.clone(),
    })
}

/// A warning when the folder has a `.env` that no `.gitignore` (of the folder or a parent,
/// up to the repository's root) lists: its secret values could be committed.
pub fn env_file_warning(dir: &Path) -> Option<String> {
    if !dir.join(ENV_FILE).is_file() {
        return None;
    }
    let lists_env = |text: &str| {
        text.lines()
            .map(str::trim)
            .any(|l| matches!(l, ".env" | "/.env" | ".env*" | "*.env" | "**/.env"))
    };
    let start = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    for d in start.ancestors() {
        if std::fs::read_to_string(d.join(".gitignore")).is_ok_and(|t| lists_env(&t)) {
            return None;
        }
        if d.join(".git").exists() {
            break;
        }
    }
    Some(format!(
        "warning: {} holds secret values and no .gitignore lists it: add `.env` to {} so it is never committed",
        dir.join(ENV_FILE).display(),
        dir.join(".gitignore").display()
    ))
}

/// `NAME=value` lines of the folder's `.env`, if it has one (the process environment is
/// left alone).
fn read_env_file(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let path = dir.join(ENV_FILE);
    if !path.is_file() {
        return Ok(BTreeMap::new());
    }
    let mut out = BTreeMap::new();
    let iter = dotenvy::from_path_iter(&path).map_err(|e| anyhow::anyhow!("{ENV_FILE}: {e}"))?;
    for item in iter {
        let (k, v) = item.map_err(|e| anyhow::anyhow!("{ENV_FILE}: {e}"))?;
        out.insert(k, v);
    }
    Ok(out)
}

/// The script name of a `.rhai` file: its stem.
fn stem(path: &Path) -> Option<String> {
    if path.extension().and_then(|e| e.to_str()) != Some("rhai") {
        return None;
    }
    path.file_stem().and_then(|s| s.to_str()).map(str::to_owned)
}

fn normal_rel(rel: &str) -> String {
    rel.trim_start_matches("./").to_owned()
}

/// Whether a file name is an editor's swap, backup or temporary file, or hidden.
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.') && name != ENV_FILE
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swo")
        || name.ends_with(".swx")
        || name.ends_with(".tmp")
        || name.starts_with('#') && name.ends_with('#')
        || name == "4913"
}

/// Every `*.rhai` under `dir` (relative to `root`, `/`-separated), hidden folders and
/// editor files skipped.
fn rhai_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_ignored_name(name) || name == "node_modules" || name == "target" {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            rhai_files(root, &path, out)?;
        } else if name.ends_with(".rhai")
            && let Ok(rel) = path.strip_prefix(root)
        {
            let rel: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
            out.push(rel.join("/"));
        }
    }
    Ok(())
}

/// A TOML value as JSON (a date-time becomes its text).
pub fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::from(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(b) => Value::from(*b),
        toml::Value::Datetime(d) => Value::from(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// A JSON value as TOML; `None` for a `null` (TOML has none), also inside arrays and
/// tables.
pub fn json_to_toml(v: &Value) -> Option<toml::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(a) => toml::Value::Array(a.iter().map(json_to_toml).collect::<Option<_>>()?),
        Value::Object(o) => toml::Value::Table(
            o.iter()
                .map(|(k, v)| Some((k.clone(), json_to_toml(v)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    const MANIFEST: &str = r#"app = "shop"

[[http]]
route = "GET /hello"
script = "hello"
idempotency = true

[[topic]]
topic = "orders"
script = "count"
max_attempts = 3

[[cron]]
schedule = "0 */5 * * * *"
timezone = "Europe/Berlin"
script = "count"

[config]
greeting = "hi"
limit = 5
"#;

    #[test]
    fn a_folder_loads_with_its_scripts_triggers_and_config() {
        let dir = folder(&[
            ("picloud.toml", MANIFEST),
            ("hello.rhai", "\"hi\""),
            ("lib/count.rhai", "1"),
            (".hidden/x.rhai", "1"),
            ("hello.rhai~", "old"),
        ]);
        let f = load_with_env(dir.path(), |_| None).expect("loads");
        assert_eq!(f.app, "shop");
        let names: Vec<&str> = f.scripts.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["hello", "count"]);
        assert_eq!(
            f.script("count").map(|s| s.file.as_str()),
            Some("lib/count.rhai")
        );
        assert_eq!(f.triggers.len(), 3);
        assert_eq!(
            f.triggers[0].body(),
            serde_json::json!({"kind": "http", "method": "GET", "path": "/hello", "script": "hello",
                "max_attempts": 5, "idempotency": {"ttl_secs": 86400}})
        );
        assert_eq!(f.triggers[1].max_attempts, 3);
        assert_eq!(f.config["limit"], serde_json::json!(5));
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let bad = "app = \"shop\"\n\n[[topic]]\ntopic = \"orders\"\nscript = \"count\"\ncolour = \"red\"\n";
        let err = parse_manifest("picloud.toml", bad).expect_err("unknown field");
        let text = err.to_string();
        assert!(
            text.starts_with("picloud.toml:6:1: key 'colour': unknown field `colour`"),
            "{text}"
        );
    }

    #[test]
    fn a_wrong_type_names_file_line_and_key() {
        let bad = "app = \"shop\"\n[limits]\ntimeout_ms = \"fast\"\n";
        let err = parse_manifest("picloud.toml", bad).expect_err("wrong type");
        let text = err.to_string();
        assert!(
            text.starts_with("picloud.toml:3:14: key 'timeout_ms': invalid type"),
            "{text}"
        );
    }

    #[test]
    fn bad_references_and_clashes_are_refused_with_their_line() {
        let dir = folder(&[
            (
                "picloud.toml",
                "app = \"shop\"\n[[http]]\nroute = \"GET /a\"\nscript = \"nope\"\n",
            ),
            ("hello.rhai", "1"),
        ]);
        let err = load_with_env(dir.path(), |_| None).expect_err("no script");
        assert!(
            err.to_string()
                .starts_with("picloud.toml:4:10: key 'script': no script 'nope'"),
            "{err}"
        );
        let dir = folder(&[
            (
                "picloud.toml",
                "app = \"shop\"\n[[http]]\nroute = \"GET /a\"\nscript = \"a\"\n[[http]]\nroute = \"get /a\"\nscript = \"b\"\n",
            ),
            ("a.rhai", "1"),
            ("b.rhai", "1"),
        ]);
        let err = load_with_env(dir.path(), |_| None).expect_err("clash");
        assert!(
            err.to_string().contains("route GET /a is bound twice"),
            "{err}"
        );
        let dir = folder(&[
            ("picloud.toml", "app = \"shop\"\n"),
            ("a.rhai", "1"),
            ("x/a.rhai", "1"),
        ]);
        let err = load_with_env(dir.path(), |_| None).expect_err("two a");
        assert!(err.to_string().contains("are both script 'a'"), "{err}");
    }

    #[test]
    fn secret_values_come_from_the_environment_then_the_env_file() {
        let dir = folder(&[
            (
                "picloud.toml",
                "app = \"shop\"\nsecrets = [\"A\", \"B\", \"C\"]\n",
            ),
            (".env", "B=from-file\nC=file\n"),
        ]);
        let f = load_with_env(dir.path(), |n| (n == "C").then(|| "env".to_owned())).expect("loads");
        assert_eq!(f.secrets["A"], None);
        assert_eq!(f.secrets["B"].as_deref(), Some("from-file"));
        assert_eq!(f.secrets["C"].as_deref(), Some("env"));
    }

    #[test]
    fn an_env_file_that_git_would_commit_is_warned_about() {
        let dir = folder(&[
            ("picloud.toml", "app = \"shop\"\n"),
            (".env", "A=1\n"),
            (".git/HEAD", "x"),
        ]);
        let warning = env_file_warning(dir.path()).expect("not ignored");
        assert!(warning.contains("no .gitignore lists it"), "{warning}");
        std::fs::write(dir.path().join(".gitignore"), "target\n.env\n").expect("write");
        assert_eq!(env_file_warning(dir.path()), None);
        let without = folder(&[("picloud.toml", "app = \"shop\"\n")]);
        assert_eq!(
            env_file_warning(without.path()),
            None,
            "no .env, nothing to warn about"
        );
    }

    #[test]
    fn editor_files_are_ignored() {
        for name in [
            ".hello.rhai.swp",
            "hello.rhai~",
            ".#hello.rhai",
            "4913",
            "#hello.rhai#",
            ".git",
        ] {
            assert!(is_ignored_name(name), "{name}");
        }
        for name in ["hello.rhai", "picloud.toml", ".env"] {
            assert!(!is_ignored_name(name), "{name}");
        }
    }

    #[test]
    fn config_values_survive_toml_and_back() {
        let v = serde_json::json!({"a": [1, 2.5, "x"], "b": {"c": true}});
        let t = json_to_toml(&v).expect("no null");
        assert_eq!(toml_to_json(&t), v);
        assert_eq!(json_to_toml(&serde_json::json!([1, null])), None);
    }

    #[test]
    fn the_committed_schema_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/picloud.schema.json");
        let generated = schema_json();
        // TOML has no null, and editors read ECMA-262 patterns (no inline flags).
        assert!(!generated.contains("\"null\""), "{generated}");
        assert!(!generated.contains("(?"), "{generated}");
        assert!(generated.contains("\"additionalProperties\": false"));
        if std::env::var_os("PICLOUD_BLESS").is_some() {
            std::fs::write(&path, &generated).expect("write the schema");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "schemas/picloud.schema.json is stale: rerun with PICLOUD_BLESS=1"
        );
    }
}
