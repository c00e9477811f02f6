//! What `push` (and `dev`) would change on the server to make an app what its folder
//! says, and applying it.
//!
//! `fetch` reads the app as the server has it; `compute` compares it with a `Folder`
//! (no request: pure, unit-tested); `check_scripts` compiles every script to deploy on
//! the server (the check route, nothing stored); `render` prints the plan; `apply`
//! makes the changes in an order that never leaves a trigger without its script.
//!
//! Nothing is deleted unless `prune`: what the server has and the folder lacks is shown
//! as kept. A plan with problems (a compile error, a secret without a value, a route
//! bound to another script) is not applied at all.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use reqwest::StatusCode;
use serde_json::{Map, Value, json};

use super::client::{Api, ApiFailure};
use super::folder::{Folder, Source, Trigger};
use super::output::{items, text};

/// The app as the server has it.
#[derive(Debug, Default, Clone)]
pub struct RemoteApp {
    pub exists: bool,
    /// Script name -> the active version's source.
    pub scripts: BTreeMap<String, String>,
    /// Trigger id -> the trigger.
    pub triggers: Vec<(String, Trigger)>,
    pub config: Map<String, Value>,
    pub secrets: BTreeSet<String>,
    pub topics: BTreeSet<String>,
    pub cors: Vec<String>,
    /// The app's limit overrides (only the fields set).
    pub limits: Map<String, Value>,
    /// Each script's limit overrides, for the scripts that have some.
    pub script_limits: BTreeMap<String, Map<String, Value>>,
}

/// The fields of an overrides object that are set.
fn set_fields(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Read everything `compute` compares.
///
/// # Errors
/// Any failed call but the app's own 404 (then the app is `!exists` and empty).
pub async fn fetch(api: &Api, app: &str) -> Result<RemoteApp, ApiFailure> {
    match api.get(&["apps", app], &[]).await {
        Ok(_) => {}
        Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => return Ok(RemoteApp::default()),
        Err(e) => return Err(e),
    }
    let mut remote = RemoteApp {
        exists: true,
        ..RemoteApp::default()
    };
    let list = api.get(&["apps", app, "scripts"], &[]).await?;
    for s in items(&list, "scripts") {
        let name = text(s.get("name").unwrap_or(&Value::Null));
        let detail = api.get(&["apps", app, "scripts", &name], &[]).await?;
        let source = detail
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        remote.scripts.insert(name, source);
    }
    let triggers = api.get(&["apps", app, "triggers"], &[]).await?;
    for t in items(&triggers, "triggers") {
        if let (Some(id), Some(trigger)) =
            (t.get("id").and_then(Value::as_str), Trigger::from_server(t))
        {
            remote.triggers.push((id.to_owned(), trigger));
        }
    }
    let config = api.get(&["apps", app, "config"], &[]).await?;
    remote.config = config
        .get("config")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let secrets = api.get(&["apps", app, "secrets"], &[]).await?;
    remote.secrets = items(&secrets, "secrets").iter().map(text).collect();
    let topics = api.get(&["apps", app, "realtime", "topics"], &[]).await?;
    remote.topics = items(&topics, "topics")
        .iter()
        .map(|t| text(t.get("topic").unwrap_or(&Value::Null)))
        .collect();
    let cors = api.get(&["apps", app, "realtime", "cors"], &[]).await?;
    remote.cors = items(&cors, "origins").iter().map(text).collect();
    let limits = api.get(&["apps", app, "limits"], &[]).await?;
    remote.limits = set_fields(limits.get("overrides"));
    if let Some(scripts) = limits.get("scripts").and_then(Value::as_object) {
        for (name, overrides) in scripts {
            let fields = set_fields(Some(overrides));
            if !fields.is_empty() {
                remote.script_limits.insert(name.clone(), fields);
            }
        }
    }
    Ok(remote)
}

/// How `compute` treats what only the server has, and secrets.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Delete what the folder no longer has.
    pub prune: bool,
    /// Send every secret's value again, also those the server has.
    pub update_secrets: bool,
}

/// A script to deploy.
#[derive(Debug, Clone)]
pub struct Deploy {
    pub name: String,
    pub file: String,
    pub source: String,
    /// `None`: a new script; otherwise the active source it replaces.
    pub previous: Option<String>,
}

/// Limit fields that are set, as the API names them.
pub type Overrides = Map<String, Value>;

/// Every change, and what stops the plan from being applied.
#[derive(Debug, Default)]
pub struct Plan {
    pub app: String,
    pub create_app: bool,
    pub deploy: Vec<Deploy>,
    pub unchanged_scripts: Vec<String>,
    pub delete_scripts: Vec<String>,
    pub kept_scripts: Vec<String>,
    pub add_triggers: Vec<Trigger>,
    /// Deleted before the adds: pruned, or replaced by an add (a changed attribute).
    pub delete_triggers: Vec<(String, Trigger)>,
    pub kept_triggers: Vec<Trigger>,
    /// Key, the server's value (if any), the folder's.
    pub set_config: Vec<(String, Option<Value>, Value)>,
    pub delete_config: Vec<String>,
    pub kept_config: Vec<String>,
    /// Name and value (the value is never printed).
    pub set_secrets: Vec<(String, String)>,
    pub delete_secrets: Vec<String>,
    pub kept_secrets: Vec<String>,
    pub expose: Vec<String>,
    pub unexpose: Vec<String>,
    pub kept_topics: Vec<String>,
    /// The server's origins and the folder's, when they differ.
    pub cors: Option<(Vec<String>, Vec<String>)>,
    /// The server's overrides and the ones to set (empty: reset).
    pub limits: Option<(Overrides, Overrides)>,
    /// The same per script: name, the server's, the ones to set.
    pub script_limits: Vec<(String, Overrides, Overrides)>,
    /// Why the plan cannot be applied; nothing is applied while there is one.
    pub problems: Vec<String>,
}

impl Plan {
    /// How many changes the plan makes.
    pub fn changes(&self) -> usize {
        usize::from(self.create_app)
            + self.deploy.len()
            + self.delete_scripts.len()
            + self.add_triggers.len()
            + self.delete_triggers.len()
            + self.set_config.len()
            + self.delete_config.len()
            + self.set_secrets.len()
            + self.delete_secrets.len()
            + self.expose.len()
            + self.unexpose.len()
            + usize::from(self.cors.is_some())
            + usize::from(self.limits.is_some())
            + self.script_limits.len()
    }
}

/// The plan that makes the server's `remote` app what `folder` says (no compile checks
/// yet: see `check_scripts`).
pub fn compute(folder: &Folder, remote: &RemoteApp, opts: Options) -> Plan {
    let mut plan = Plan {
        app: folder.app.clone(),
        create_app: !remote.exists,
        ..Plan::default()
    };

    for s in &folder.scripts {
        match remote.scripts.get(&s.name) {
            Some(active) if *active == s.source => plan.unchanged_scripts.push(s.name.clone()),
            previous => plan.deploy.push(Deploy {
                name: s.name.clone(),
                file: s.file.clone(),
                source: s.source.clone(),
                previous: previous.cloned(),
            }),
        }
    }
    for name in remote.scripts.keys() {
        if folder.script(name).is_none() {
            if opts.prune {
                plan.delete_scripts.push(name.clone());
            } else {
                plan.kept_scripts.push(name.clone());
            }
        }
    }

    let mut matched: BTreeSet<&str> = BTreeSet::new();
    for want in &folder.triggers {
        let found = remote.triggers.iter().find(|(_, t)| t.key() == want.key());
        match found {
            Some((id, have)) if have == want => {
                matched.insert(id.as_str());
            }
            Some((id, have)) => {
                matched.insert(id.as_str());
                let rebinding = have.script != want.script;
                if rebinding && !opts.prune {
                    let what = match &want.source {
                        Source::Queue(q) => format!("queue {q} is consumed"),
                        other => format!(
                            "route {} is bound",
                            other.to_string().trim_start_matches("http ")
                        ),
                    };
                    plan.problems.push(format!(
                        "{what} by script '{}' on the server; the folder binds it to '{}' (--prune rebinds it)",
                        have.script, want.script
                    ));
                } else {
                    plan.delete_triggers.push((id.clone(), have.clone()));
                    plan.add_triggers.push(want.clone());
                }
            }
            None => plan.add_triggers.push(want.clone()),
        }
    }
    for (id, have) in &remote.triggers {
        if matched.contains(id.as_str()) {
            continue;
        }
        if opts.prune {
            plan.delete_triggers.push((id.clone(), have.clone()));
        } else {
            plan.kept_triggers.push(have.clone());
        }
    }

    for (key, value) in &folder.config {
        match remote.config.get(key) {
            Some(v) if v == value => {}
            old => plan
                .set_config
                .push((key.clone(), old.cloned(), value.clone())),
        }
    }
    for key in remote.config.keys() {
        if !folder.config.contains_key(key) {
            if opts.prune {
                plan.delete_config.push(key.clone());
            } else {
                plan.kept_config.push(key.clone());
            }
        }
    }

    let mut missing = Vec::new();
    for (name, value) in &folder.secrets {
        if remote.secrets.contains(name) && !opts.update_secrets {
            continue;
        }
        match value {
            Some(v) => plan.set_secrets.push((name.clone(), v.clone())),
            None => missing.push(name.clone()),
        }
    }
    if !missing.is_empty() {
        plan.problems.push(format!(
            "no value for secret{} {}: set {} in the environment or in the folder's .env",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" },
        ));
    }
    for name in &remote.secrets {
        if !folder.secrets.contains_key(name) {
            if opts.prune {
                plan.delete_secrets.push(name.clone());
            } else {
                plan.kept_secrets.push(name.clone());
            }
        }
    }

    for topic in &folder.realtime_topics {
        if !remote.topics.contains(topic) {
            plan.expose.push(topic.clone());
        }
    }
    for topic in &remote.topics {
        if !folder.realtime_topics.contains(topic) {
            if opts.prune {
                plan.unexpose.push(topic.clone());
            } else {
                plan.kept_topics.push(topic.clone());
            }
        }
    }
    if let Some(cors) = &folder.cors {
        let sorted = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
        if sorted(cors) != sorted(&remote.cors) {
            plan.cors = Some((remote.cors.clone(), cors.clone()));
        }
    }

    let wanted = match (&folder.limits, opts.prune) {
        (Some(l), true) => Some(l.to_map()),
        (Some(l), false) => {
            let mut merged = remote.limits.clone();
            merged.extend(l.to_map());
            Some(merged)
        }
        (None, true) => Some(Map::new()),
        (None, false) => None,
    };
    if let Some(wanted) = wanted
        && wanted != remote.limits
    {
        plan.limits = Some((remote.limits.clone(), wanted));
    }

    let none = Map::new();
    let names: BTreeSet<&String> = folder
        .script_limits
        .keys()
        .chain(remote.script_limits.keys())
        .collect();
    for name in names {
        if plan.delete_scripts.contains(name) {
            continue; // its limits go with it
        }
        let have = remote.script_limits.get(name).unwrap_or(&none);
        let wanted = match (folder.script_limits.get(name), opts.prune) {
            (Some(l), true) => l.to_map(),
            (Some(l), false) => {
                let mut merged = have.clone();
                merged.extend(l.to_map());
                merged
            }
            (None, true) => Map::new(),
            (None, false) => continue,
        };
        if wanted != *have {
            plan.script_limits
                .push((name.clone(), have.clone(), wanted));
        }
    }
    plan
}

/// `~ timeout_ms: 100 -> 2000` for each field that differs.
fn limit_lines(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<String> {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter(|n| old.get(*n) != new.get(*n))
        .map(|n| {
            let v = |m: &Map<String, Value>| m.get(n).map_or("-".to_owned(), Value::to_string);
            format!("~ {n}: {} -> {}", v(old), v(new))
        })
        .collect()
}

/// Compile every script the plan deploys on the server (nothing is stored); each error
/// becomes a problem naming `file:line:column`.
///
/// # Errors
/// A failure other than a compile error (the server unreachable, a 403...).
pub async fn check_scripts(api: &Api, plan: &mut Plan) -> Result<(), ApiFailure> {
    for d in &plan.deploy {
        let answer = api
            .post(
                &["apps", &plan.app, "scripts", &d.name, "check"],
                &json!({ "source": d.source }),
            )
            .await;
        match answer {
            Ok(_) => {}
            Err(ApiFailure::Api {
                code,
                message,
                position,
                ..
            }) if code == "compile_error" => {
                let (line, col) = position.unwrap_or((1, 1));
                let message = message
                    .strip_prefix(&format!("line {line}, column {col}: "))
                    .unwrap_or(&message)
                    .to_owned();
                plan.problems
                    .push(format!("{}:{line}:{col}: {message}", d.file));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Lines added and removed between two sources (as multisets of lines).
fn line_changes(old: &str, new: &str) -> (usize, usize) {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for l in old.lines() {
        *counts.entry(l).or_default() -= 1;
    }
    for l in new.lines() {
        *counts.entry(l).or_default() += 1;
    }
    let added = counts
        .values()
        .filter(|n| **n > 0)
        .map(|n| *n as usize)
        .sum();
    let removed = counts
        .values()
        .filter(|n| **n < 0)
        .map(|n| n.unsigned_abs() as usize)
        .sum();
    (added, removed)
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

/// The plan as a readable diff: `+` added, `~` changed, `-` deleted, `=` kept as is.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let w = &mut out;
    if plan.create_app {
        let _ = writeln!(w, "app {} (new: it will be created)", plan.app);
    } else {
        let _ = writeln!(w, "app {}", plan.app);
    }
    let section = |w: &mut String, title: &str, lines: Vec<String>| {
        if !lines.is_empty() {
            let _ = writeln!(w, "{title}:");
            for l in lines {
                let _ = writeln!(w, "  {l}");
            }
        }
    };
    let mut lines = Vec::new();
    for d in &plan.deploy {
        match &d.previous {
            None => lines.push(format!("+ {} ({}, new)", d.name, d.file)),
            Some(old) => {
                let (a, r) = line_changes(old, &d.source);
                lines.push(format!("~ {} ({}: +{a} -{r} lines)", d.name, d.file));
            }
        }
    }
    for name in &plan.delete_scripts {
        lines.push(format!(
            "- {name} (not in the folder: deleted, with its triggers)"
        ));
    }
    for name in &plan.kept_scripts {
        lines.push(format!(
            "= {name} (not in the folder: kept; --prune deletes it)"
        ));
    }
    if !plan.unchanged_scripts.is_empty() {
        lines.push(format!("= {} unchanged", plan.unchanged_scripts.len()));
    }
    section(w, "scripts", lines);

    let mut lines = Vec::new();
    let replaced: Vec<&Trigger> = plan
        .add_triggers
        .iter()
        .filter(|t| plan.delete_triggers.iter().any(|(_, d)| d.key() == t.key()))
        .collect();
    for (_, t) in &plan.delete_triggers {
        if let Some(new) = replaced.iter().find(|n| n.key() == t.key()) {
            lines.push(format!("~ {t}  =>  {new}"));
        } else {
            lines.push(format!("- {t}"));
        }
    }
    for t in &plan.add_triggers {
        if !replaced.contains(&t) {
            lines.push(format!("+ {t}"));
        }
    }
    for t in &plan.kept_triggers {
        lines.push(format!(
            "= {t} (not in the folder: kept; --prune deletes it)"
        ));
    }
    section(w, "triggers", lines);

    let mut lines = Vec::new();
    for (key, old, new) in &plan.set_config {
        match old {
            None => lines.push(format!("+ {key} = {}", short(new))),
            Some(old) => lines.push(format!("~ {key}: {} -> {}", short(old), short(new))),
        }
    }
    for key in &plan.delete_config {
        lines.push(format!("- {key}"));
    }
    for key in &plan.kept_config {
        lines.push(format!(
            "= {key} (not in the folder: kept; --prune deletes it)"
        ));
    }
    section(w, "config", lines);

    let mut lines = Vec::new();
    for (name, _) in &plan.set_secrets {
        lines.push(format!("+ {name} (value from the environment or .env)"));
    }
    for name in &plan.delete_secrets {
        lines.push(format!("- {name}"));
    }
    for name in &plan.kept_secrets {
        lines.push(format!(
            "= {name} (not in the folder: kept; --prune deletes it)"
        ));
    }
    section(w, "secrets", lines);

    let mut lines = Vec::new();
    for t in &plan.expose {
        lines.push(format!("+ expose {t}"));
    }
    for t in &plan.unexpose {
        lines.push(format!("- expose {t}"));
    }
    for t in &plan.kept_topics {
        lines.push(format!(
            "= expose {t} (not in the folder: kept; --prune makes it private)"
        ));
    }
    if let Some((old, new)) = &plan.cors {
        lines.push(format!("~ cors {old:?} -> {new:?}"));
    }
    section(w, "realtime", lines);

    if let Some((old, new)) = &plan.limits {
        section(w, "limits", limit_lines(old, new));
    }
    for (name, old, new) in &plan.script_limits {
        section(
            w,
            &format!("limits of script {name}"),
            limit_lines(old, new),
        );
    }

    if !plan.problems.is_empty() {
        let _ = writeln!(w, "problems (nothing will be applied):");
        for p in &plan.problems {
            let _ = writeln!(w, "  ! {p}");
        }
    }
    match plan.changes() {
        0 => {
            let _ = write!(w, "no changes");
        }
        1 => {
            let _ = write!(w, "1 change");
        }
        n => {
            let _ = write!(w, "{n} changes");
        }
    }
    out
}

/// Make the plan's changes, printing one line per change through `say`.
///
/// The order keeps the app serving: the app, its limits, config and secrets first, then
/// the scripts (so new triggers find them), the triggers (deletes before adds, so a route
/// that moves is free), the realtime settings, and last what `--prune` deletes.
///
/// # Errors
/// The first failed call (what was applied before it stays applied; the next push plans
/// the rest).
pub async fn apply(api: &Api, plan: &Plan, say: &mut dyn FnMut(String)) -> Result<(), ApiFailure> {
    let app = plan.app.as_str();
    if plan.create_app {
        api.post(&["apps"], &json!({ "name": app })).await?;
        say(format!("created app {app}"));
    }
    if let Some((_, wanted)) = &plan.limits {
        if wanted.is_empty() {
            api.delete(&["apps", app, "limits"]).await?;
            say("reset the app's limits".to_owned());
        } else {
            api.put(&["apps", app, "limits"], &Value::Object(wanted.clone()))
                .await?;
            say("set the app's limits".to_owned());
        }
    }
    for (key, _, value) in &plan.set_config {
        api.put(&["apps", app, "config", key], &json!({ "value": value }))
            .await?;
        say(format!("set config {key}"));
    }
    for (name, value) in &plan.set_secrets {
        api.put(&["apps", app, "secrets", name], &json!({ "value": value }))
            .await?;
        say(format!("set secret {name}"));
    }
    for d in &plan.deploy {
        let answer = api
            .put(
                &["apps", app, "scripts", &d.name],
                &json!({ "source": d.source }),
            )
            .await?;
        say(format!(
            "deployed {} version {} ({})",
            d.name,
            text(answer.get("version").unwrap_or(&Value::Null)),
            d.file
        ));
    }
    for (name, _, wanted) in &plan.script_limits {
        if wanted.is_empty() {
            api.delete(&["apps", app, "scripts", name, "limits"])
                .await?;
            say(format!("reset the limits of script {name}"));
        } else {
            api.put(
                &["apps", app, "scripts", name, "limits"],
                &Value::Object(wanted.clone()),
            )
            .await?;
            say(format!("set the limits of script {name}"));
        }
    }
    for (id, t) in &plan.delete_triggers {
        match api.delete(&["apps", app, "triggers", id]).await {
            Ok(_) => {}
            // Gone already (its script was deleted by hand since the plan): fine.
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {}
            Err(e) => return Err(e),
        }
        say(format!("deleted trigger {t}"));
    }
    for t in &plan.add_triggers {
        api.post(&["apps", app, "triggers"], &t.body()).await?;
        say(format!("added trigger {t}"));
    }
    for topic in &plan.expose {
        api.put(&["apps", app, "realtime", "topics", topic], &json!({}))
            .await?;
        say(format!("exposed {topic}"));
    }
    if let Some((_, origins)) = &plan.cors {
        api.put(
            &["apps", app, "realtime", "cors"],
            &json!({ "origins": origins }),
        )
        .await?;
        say("set the realtime CORS origins".to_owned());
    }
    for topic in &plan.unexpose {
        api.delete(&["apps", app, "realtime", "topics", topic])
            .await?;
        say(format!("made {topic} private"));
    }
    for name in &plan.delete_scripts {
        api.delete(&["apps", app, "scripts", name]).await?;
        say(format!("deleted script {name}"));
    }
    for key in &plan.delete_config {
        api.delete(&["apps", app, "config", key]).await?;
        say(format!("deleted config {key}"));
    }
    for name in &plan.delete_secrets {
        api.delete(&["apps", app, "secrets", name]).await?;
        say(format!("deleted secret {name}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::folder::{LocalScript, Source};
    use super::*;

    fn folder() -> Folder {
        Folder {
            dir: ".".into(),
            manifest_name: "picloud.toml".into(),
            app: "shop".into(),
            scripts: vec![LocalScript {
                name: "hello".into(),
                file: "hello.rhai".into(),
                source: "\"hi\"".into(),
            }],
            triggers: vec![route("GET", "/hello", "hello")],
            config: BTreeMap::from([("a".to_owned(), json!(1))]),
            secrets: BTreeMap::new(),
            realtime_topics: BTreeSet::new(),
            cors: None,
            limits: None,
            script_limits: BTreeMap::new(),
        }
    }

    fn route(method: &str, path: &str, script: &str) -> Trigger {
        Trigger {
            source: Source::Http {
                method: method.into(),
                path: path.into(),
            },
            script: script.into(),
            max_attempts: 5,
            idempotency_ttl: None,
        }
    }

    fn same_as(f: &Folder) -> RemoteApp {
        RemoteApp {
            exists: true,
            scripts: f
                .scripts
                .iter()
                .map(|s| (s.name.clone(), s.source.clone()))
                .collect(),
            triggers: f
                .triggers
                .iter()
                .enumerate()
                .map(|(i, t)| (i.to_string(), t.clone()))
                .collect(),
            config: f.config.clone().into_iter().collect(),
            ..RemoteApp::default()
        }
    }

    #[test]
    fn an_empty_server_gets_everything_and_the_same_state_gets_nothing() {
        let f = folder();
        let plan = compute(&f, &RemoteApp::default(), Options::default());
        assert!(plan.create_app);
        assert_eq!(plan.deploy.len(), 1);
        assert_eq!(plan.add_triggers.len(), 1);
        assert_eq!(plan.changes(), 4);
        let again = compute(&f, &same_as(&f), Options::default());
        assert_eq!(again.changes(), 0, "{}", render(&again));
        assert!(render(&again).ends_with("no changes"));
    }

    #[test]
    fn what_only_the_server_has_is_kept_unless_pruned() {
        let f = folder();
        let mut remote = same_as(&f);
        remote.scripts.insert("old".into(), "1".into());
        remote
            .triggers
            .push(("9".into(), route("GET", "/old", "old")));
        remote.config.insert("b".into(), json!(2));
        remote.topics.insert("news".into());
        let kept = compute(&f, &remote, Options::default());
        assert_eq!(kept.changes(), 0);
        assert_eq!(kept.kept_scripts, ["old"]);
        assert_eq!(kept.kept_triggers.len(), 1);
        let pruned = compute(
            &f,
            &remote,
            Options {
                prune: true,
                update_secrets: false,
            },
        );
        assert_eq!(pruned.delete_scripts, ["old"]);
        assert_eq!(pruned.delete_triggers.len(), 1);
        assert_eq!(pruned.delete_config, ["b"]);
        assert_eq!(pruned.unexpose, ["news"]);
        assert_eq!(pruned.changes(), 4);
    }

    #[test]
    fn a_route_bound_to_another_script_is_a_problem_without_prune() {
        let f = folder();
        let mut remote = same_as(&f);
        remote.triggers = vec![("1".into(), route("GET", "/hello", "other"))];
        let plan = compute(&f, &remote, Options::default());
        assert_eq!(plan.problems.len(), 1, "{:?}", plan.problems);
        assert!(
            plan.problems[0].contains("route GET /hello is bound by script 'other'"),
            "{}",
            plan.problems[0]
        );
        let mut changed = route("GET", "/hello", "hello");
        changed.max_attempts = 3;
        remote.triggers = vec![("1".into(), changed)];
        let plan = compute(&f, &remote, Options::default());
        assert!(plan.problems.is_empty());
        assert_eq!(
            (plan.delete_triggers.len(), plan.add_triggers.len()),
            (1, 1)
        );
        assert!(
            render(&plan).contains(
                "~ http GET /hello -> hello (max_attempts 3)  =>  http GET /hello -> hello"
            )
        );
    }

    #[test]
    fn a_missing_secret_is_a_problem_only_when_it_must_be_sent() {
        let mut f = folder();
        f.secrets.insert("KEY".into(), None);
        f.secrets.insert("SET".into(), Some("v".into()));
        let plan = compute(&f, &same_as(&f), Options::default());
        assert_eq!(
            plan.problems,
            ["no value for secret KEY: set it in the environment or in the folder's .env"]
        );
        assert_eq!(plan.set_secrets, [("SET".to_owned(), "v".to_owned())]);
        let mut remote = same_as(&f);
        remote.secrets = ["KEY".to_owned(), "SET".to_owned()].into();
        let plan = compute(&f, &remote, Options::default());
        assert!(plan.problems.is_empty());
        assert_eq!(plan.changes(), 0);
        let plan = compute(
            &f,
            &remote,
            Options {
                prune: false,
                update_secrets: true,
            },
        );
        assert_eq!(plan.problems.len(), 1);
    }

    #[test]
    fn limits_merge_without_prune_and_replace_with_it() {
        let mut f = folder();
        f.limits = Some(super::super::folder::Limits {
            timeout_ms: Some(2000),
            ..Default::default()
        });
        let mut remote = same_as(&f);
        remote.limits.insert("max_concurrency".into(), json!(4));
        let plan = compute(&f, &remote, Options::default());
        let (_, wanted) = plan.limits.expect("a change");
        assert_eq!(
            Value::Object(wanted),
            json!({"max_concurrency": 4, "timeout_ms": 2000})
        );
        let plan = compute(
            &f,
            &remote,
            Options {
                prune: true,
                update_secrets: false,
            },
        );
        let (_, wanted) = plan.limits.expect("a change");
        assert_eq!(Value::Object(wanted), json!({"timeout_ms": 2000}));
    }

    #[test]
    fn script_limits_are_set_merged_and_pruned() {
        let mut f = folder();
        f.script_limits.insert(
            "hello".into(),
            super::super::folder::Limits {
                timeout_ms: Some(1500),
                ..Default::default()
            },
        );
        let mut remote = same_as(&f);
        let plan = compute(&f, &remote, Options::default());
        assert_eq!(plan.script_limits.len(), 1);
        assert!(
            render(&plan).contains("limits of script hello:\n  ~ timeout_ms: - -> 1500"),
            "{}",
            render(&plan)
        );
        remote.script_limits.insert(
            "hello".into(),
            json!({"timeout_ms": 1500})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        remote.script_limits.insert(
            "old".into(),
            json!({"max_operations": 10})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        remote.scripts.insert("old".into(), "1".into());
        let plan = compute(&f, &remote, Options::default());
        assert!(plan.script_limits.is_empty(), "in step; old's kept");
        let plan = compute(
            &f,
            &remote,
            Options {
                prune: true,
                update_secrets: false,
            },
        );
        assert!(
            plan.script_limits.is_empty(),
            "old is deleted with its limits"
        );
        assert_eq!(plan.delete_scripts, ["old"]);
    }

    #[test]
    fn a_changed_script_shows_its_line_counts() {
        let f = folder();
        let mut remote = same_as(&f);
        remote
            .scripts
            .insert("hello".into(), "\"hello\"\nlet x = 1;".into());
        let plan = compute(&f, &remote, Options::default());
        assert!(
            render(&plan).contains("~ hello (hello.rhai: +1 -2 lines)"),
            "{}",
            render(&plan)
        );
    }
}
