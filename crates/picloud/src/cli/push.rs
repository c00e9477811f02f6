//! `picloud push [DIR]` and `picloud pull APP [DIR]`: an app as a folder
//! (docs/apps-as-folders.md).
//!
//! `push` reads the folder, asks the server what the app is now, compiles every script
//! that changed (on the server, nothing stored), prints the plan and, once confirmed,
//! applies it. `--dry-run` stops after the plan and exits 2 when it has changes, so CI
//! can tell "in step" from "would change". `pull` writes an app into a folder that
//! `push` finds in step.
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;
use toml::Spanned;

use super::client::Api;
use super::folder::{
    self, CronEntry, DEFAULT_IDEMPOTENCY_TTL, DEFAULT_MAX_ATTEMPTS, DeadLetterEntry, ENV_FILE,
    HttpEntry, IdempotencyEntry, Limits, Manifest, QueueEntry, RealtimeEntry, Source, TopicEntry,
};
use super::output::out;
use super::plan::{self, Options, Plan};

/// The exit code of `push --dry-run` when the plan has changes.
pub const EXIT_CHANGES: u8 = 2;

/// Exit with this code, printing nothing more (the command printed what it had to).
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The app's folder (with its picloud.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Apply without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Only print the plan; exit 2 when it has changes, 0 when the app is in step.
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,
    /// Delete what the server has and the folder does not: scripts (with their
    /// triggers), triggers, config keys, secrets, exposed topics, limits.
    #[arg(long)]
    pub prune: bool,
    /// Send every secret's value again (by default only secrets the server lacks are sent).
    #[arg(long)]
    pub update_secrets: bool,
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// The app to write out.
    pub app: String,
    /// The folder to write (default: the app's name).
    pub dir: Option<PathBuf>,
    /// Overwrite the folder's picloud.toml and scripts when they exist.
    #[arg(long)]
    pub force: bool,
}

/// Read the folder, plan against the server and check every script to deploy.
///
/// # Errors
/// A folder error, or a failed call.
pub async fn plan_folder(api: &Api, dir: &Path, opts: Options) -> anyhow::Result<Plan> {
    let folder = folder::load(dir)?;
    let remote = plan::fetch(api, &folder.app).await?;
    let mut plan = plan::compute(&folder, &remote, opts);
    plan::check_scripts(api, &mut plan).await?;
    Ok(plan)
}

pub async fn run_push(api: &Api, args: PushArgs, json: bool) -> anyhow::Result<()> {
    let opts = Options {
        prune: args.prune,
        update_secrets: args.update_secrets,
    };
    if let Some(warning) = folder::env_file_warning(&args.dir) {
        eprintln!("{warning}");
    }
    let plan = plan_folder(api, &args.dir, opts).await?;
    if json {
        out!("{}", plan_json(&plan));
    } else {
        out!("{}", plan::render(&plan));
    }
    if !plan.problems.is_empty() {
        anyhow::bail!(
            "nothing was applied: {} problem{} in the plan",
            plan.problems.len(),
            if plan.problems.len() == 1 { "" } else { "s" }
        );
    }
    if plan.changes() == 0 {
        return Ok(());
    }
    if args.dry_run {
        return Err(Exit(EXIT_CHANGES).into());
    }
    if !args.yes && !confirm(plan.changes())? {
        anyhow::bail!("nothing was applied");
    }
    // With --json the plan above is the whole output.
    plan::apply(api, &plan, &mut |line| {
        if !json {
            out!("{line}");
        }
    })
    .await?;
    if !json {
        out!("applied {} to {}", count(plan.changes()), plan.app);
    }
    Ok(())
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 change".to_owned()
    } else {
        format!("{n} changes")
    }
}

/// Ask on the terminal; without one, `--yes` is needed.
fn confirm(changes: usize) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!("not a terminal, so nothing was applied: pass --yes to apply without asking");
    }
    print!("apply {}? [y/N] ", count(changes));
    std::io::stdout().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// The plan as JSON (`--json`): every change by kind, and the problems.
fn plan_json(plan: &Plan) -> Value {
    let triggers =
        |ts: &[folder::Trigger]| -> Vec<String> { ts.iter().map(ToString::to_string).collect() };
    serde_json::json!({
        "app": plan.app,
        "create_app": plan.create_app,
        "changes": plan.changes(),
        "deploy": plan.deploy.iter().map(|d| serde_json::json!({"script": d.name, "file": d.file, "new": d.previous.is_none()})).collect::<Vec<_>>(),
        "delete_scripts": plan.delete_scripts,
        "add_triggers": triggers(&plan.add_triggers),
        "delete_triggers": plan.delete_triggers.iter().map(|(_, t)| t.to_string()).collect::<Vec<_>>(),
        "set_config": plan.set_config.iter().map(|(k, _, _)| k).collect::<Vec<_>>(),
        "delete_config": plan.delete_config,
        "set_secrets": plan.set_secrets.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        "delete_secrets": plan.delete_secrets,
        "expose": plan.expose,
        "unexpose": plan.unexpose,
        "cors": plan.cors.as_ref().map(|(_, new)| new),
        "limits": plan.limits.as_ref().map(|(_, new)| new),
        "script_limits": plan.script_limits.iter().map(|(name, _, new)| (name.clone(), Value::Object(new.clone()))).collect::<serde_json::Map<_, _>>(),
        "problems": plan.problems,
    })
}

pub async fn run_pull(api: &Api, args: PullArgs) -> anyhow::Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.app));
    let remote = plan::fetch(api, &args.app).await?;
    if !remote.exists {
        anyhow::bail!("app '{}' does not exist", args.app);
    }
    if folder::manifest_path(&dir).is_some() && !args.force {
        anyhow::bail!(
            "{} already has a picloud.toml: pass --force to overwrite it and the scripts",
            dir.display()
        );
    }
    let (manifest, skipped) = manifest_of(&args.app, &remote);
    let text = toml::to_string(&manifest).context("cannot write picloud.toml")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let header = "# An app as a folder: `picloud push` applies it, `picloud dev` watches it\n# (docs/apps-as-folders.md).\n";
    std::fs::write(dir.join("picloud.toml"), format!("{header}{text}"))
        .with_context(|| format!("cannot write {}", dir.join("picloud.toml").display()))?;
    for (name, source) in &remote.scripts {
        let path = dir.join(format!("{name}.rhai"));
        std::fs::write(&path, source)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let gitignore = dir.join(".gitignore");
    let ignored = std::fs::read_to_string(&gitignore).unwrap_or_default();
    if !ignored.lines().any(|l| l.trim() == ENV_FILE) {
        let mut text = ignored;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(ENV_FILE);
        text.push('\n');
        std::fs::write(&gitignore, text)
            .with_context(|| format!("cannot write {}", gitignore.display()))?;
    }
    for key in &skipped {
        eprintln!("warning: config {key} holds a null, which TOML cannot write: left out");
    }
    out!(
        "wrote {} ({} scripts, {} triggers) to {}",
        args.app,
        remote.scripts.len(),
        remote.triggers.len(),
        dir.display()
    );
    if !remote.secrets.is_empty() {
        out!(
            "secrets are named only: put their values in {} (git-ignored) or the environment to push them again",
            dir.join(ENV_FILE).display()
        );
    }
    Ok(())
}

/// The manifest that describes `remote`, and the config keys TOML cannot hold.
pub fn manifest_of(app: &str, remote: &plan::RemoteApp) -> (Manifest, Vec<String>) {
    let s = |v: &str| Spanned::new(0..0, v.to_owned());
    let attempts = |n: u32| (n != DEFAULT_MAX_ATTEMPTS).then_some(n);
    let mut m = Manifest::new(app);
    for (_, t) in &remote.triggers {
        match &t.source {
            Source::Http { method, path } => m.http.push(HttpEntry {
                route: s(&format!("{method} {path}")),
                script: s(&t.script),
                idempotency: t.idempotency_ttl.map(|ttl| {
                    if ttl == DEFAULT_IDEMPOTENCY_TTL {
                        IdempotencyEntry::On(true)
                    } else {
                        IdempotencyEntry::TtlSecs(ttl)
                    }
                }),
            }),
            Source::Topic(topic) => m.topic.push(TopicEntry {
                topic: topic.clone(),
                script: s(&t.script),
                max_attempts: attempts(t.max_attempts),
            }),
            Source::Queue(queue) => m.queue.push(QueueEntry {
                queue: queue.clone(),
                script: s(&t.script),
                max_attempts: attempts(t.max_attempts),
            }),
            Source::Cron { schedule, timezone } => m.cron.push(CronEntry {
                schedule: schedule.clone(),
                timezone: (timezone != "UTC").then(|| timezone.clone()),
                script: s(&t.script),
                max_attempts: attempts(t.max_attempts),
            }),
            Source::DeadLetter => m.dead_letter.push(DeadLetterEntry {
                script: s(&t.script),
                max_attempts: attempts(t.max_attempts),
            }),
        }
    }
    let mut skipped = Vec::new();
    for (key, value) in &remote.config {
        match folder::json_to_toml(value) {
            Some(v) => {
                m.config.insert(key.clone(), v);
            }
            None => skipped.push(key.clone()),
        }
    }
    m.secrets = remote.secrets.iter().map(|n| s(n)).collect();
    if !remote.topics.is_empty() || !remote.cors.is_empty() {
        m.realtime = Some(RealtimeEntry {
            topics: remote.topics.iter().cloned().collect(),
            cors: (!remote.cors.is_empty()).then(|| remote.cors.clone()),
        });
    }
    if !remote.limits.is_empty() {
        m.limits = serde_json::from_value::<Limits>(Value::Object(remote.limits.clone())).ok();
    }
    for (name, fields) in &remote.script_limits {
        if let Ok(limits) = serde_json::from_value::<Limits>(Value::Object(fields.clone())) {
            m.script_limits.insert(name.clone(), limits);
        }
    }
    (m, skipped)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::folder::{Trigger, load_with_env, parse_manifest};
    use super::super::plan::{RemoteApp, compute};
    use super::*;
    use crate::cli::Command;
    use crate::cli::tests::parse;

    #[test]
    fn push_and_pull_parse() {
        let (_, cmd) = parse(&["push", "--dry-run", "--prune"]).expect("parses");
        let Command::Push(args) = cmd else {
            panic!("not push")
        };
        assert!(args.dry_run && args.prune && !args.yes);
        assert_eq!(args.dir, PathBuf::from("."));
        assert!(
            parse(&["push", "--dry-run", "--yes"]).is_err(),
            "conflicting flags"
        );
        let (_, cmd) = parse(&["pull", "shop", "out"]).expect("parses");
        let Command::Pull(args) = cmd else {
            panic!("not pull")
        };
        assert_eq!(
            (args.app.as_str(), args.dir),
            ("shop", Some(PathBuf::from("out")))
        );
    }

    #[test]
    fn a_pulled_manifest_plans_no_changes() {
        let trigger = |source, script: &str, max_attempts, idempotency_ttl| Trigger {
            source,
            script: script.into(),
            max_attempts,
            idempotency_ttl,
        };
        let remote = RemoteApp {
            exists: true,
            scripts: [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "2".to_owned()),
            ]
            .into(),
            triggers: vec![
                (
                    "1".into(),
                    trigger(
                        Source::Http {
                            method: "POST".into(),
                            path: "/a/:id".into(),
                        },
                        "a",
                        5,
                        Some(86400),
                    ),
                ),
                (
                    "2".into(),
                    trigger(
                        Source::Http {
                            method: "GET".into(),
                            path: "/b".into(),
                        },
                        "b",
                        5,
                        Some(60),
                    ),
                ),
                (
                    "3".into(),
                    trigger(Source::Topic("orders".into()), "b", 3, None),
                ),
                (
                    "4".into(),
                    trigger(Source::Queue("jobs".into()), "a", 5, None),
                ),
                (
                    "5".into(),
                    trigger(
                        Source::Cron {
                            schedule: "0 * * * *".into(),
                            timezone: "Europe/Berlin".into(),
                        },
                        "a",
                        5,
                        None,
                    ),
                ),
                (
                    "6".into(),
                    trigger(
                        Source::Cron {
                            schedule: "0 0 * * *".into(),
                            timezone: "UTC".into(),
                        },
                        "b",
                        5,
                        None,
                    ),
                ),
                ("7".into(), trigger(Source::DeadLetter, "b", 9, None)),
            ],
            config: json!({"n": 1, "s": "x", "o": {"deep": [1.5, true]}})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            secrets: ["KEY".to_owned()].into(),
            topics: ["orders".to_owned()].into(),
            cors: vec!["https://a.example".into()],
            limits: json!({"timeout_ms": 2000})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            script_limits: [(
                "a".to_owned(),
                json!({"max_operations": 5000})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            )]
            .into(),
        };
        let (manifest, skipped) = manifest_of("shop", &remote);
        assert!(skipped.is_empty());
        let text = toml::to_string(&manifest).expect("toml");
        parse_manifest("picloud.toml", &text).expect("it reads back");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("picloud.toml"), &text).expect("write");
        for (name, source) in &remote.scripts {
            std::fs::write(dir.path().join(format!("{name}.rhai")), source).expect("write");
        }
        let folder = load_with_env(dir.path(), |_| None).expect("loads");
        let plan = compute(&folder, &remote, Options::default());
        assert_eq!(plan.changes(), 0, "{}\n{text}", plan::render(&plan));
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    }
}
