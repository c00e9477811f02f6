//! `picloud dev [DIR]`: push the folder on every save and tail the app's invocations.
//!
//! - The folder is watched (notify, debounced 100 ms: an editor's "save all" is one
//!   cycle); editors' swap, backup and temporary files and hidden folders are ignored.
//! - Each cycle is a `push --yes` without `--prune`: only what changed is deployed, and
//!   a compile error anywhere applies nothing, so the running version keeps serving while
//!   the error is printed as `file:line:column`. A deleted file is reported, not deleted.
//! - The app's invocations are printed as they are recorded (status, duration, logs,
//!   errors) from the moment `dev` started, from the server's live invocation stream, as
//!   `picloud logs --follow` does (nothing is asked while nothing runs).
//! - When the server is unreachable (restarting), the push and the tail are retried with
//!   a backoff (0.25 s doubling to 10 s), never in a busy loop; the pending push is made
//!   once the server answers again.
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use notify_debouncer_full::notify::event::{AccessKind, AccessMode, ModifyKind};
use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use reqwest::StatusCode;
use tokio::time::Instant;

use super::client::{Api, ApiFailure};
use super::folder::{self, ENV_FILE, MANIFEST_NAMES, is_ignored_name};
use super::logs::{self, Follow, Tail};
use super::output::out;
use super::plan::{self, Options};
use super::push::plan_folder;

/// The debounce window: saves closer than this are one cycle.
const DEBOUNCE: Duration = Duration::from_millis(100);
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// The app's folder (with its picloud.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Do not print the app's invocations.
    #[arg(long)]
    pub no_tail: bool,
}

/// A doubling delay between retries, reset by a success.
struct Backoff(Option<Duration>);

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self.0.map_or(BACKOFF_FIRST, |d| (d * 2).min(BACKOFF_MAX));
        self.0 = Some(d);
        d
    }

    fn reset(&mut self) -> bool {
        self.0.take().is_some()
    }
}

/// Whether an error means "the server is not there right now" (worth retrying).
fn unreachable(err: &anyhow::Error) -> bool {
    err.downcast_ref::<ApiFailure>().is_some_and(|f| {
        f.is_transport()
            || matches!(
                f.status(),
                Some(
                    StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::BAD_GATEWAY
                        | StatusCode::GATEWAY_TIMEOUT
                )
            )
    })
}

fn now() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// What one cycle did.
enum Synced {
    /// Pushed (or nothing to push): the app's name, to tail it.
    App(String),
    /// The folder or a script is wrong; wait for the next save.
    Refused,
}

pub async fn run(api: &Api, args: DevArgs) -> anyhow::Result<()> {
    let dir = std::fs::canonicalize(&args.dir)
        .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", args.dir.display()))?;
    if folder::manifest_path(&dir).is_none() {
        anyhow::bail!(
            "{} has no picloud.toml (or app.toml): see docs/apps-as-folders.md",
            dir.display()
        );
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| {
        let _ = tx.send(res);
    })?;
    debouncer.watch(&dir, RecursiveMode::Recursive)?;
    out!("watching {} (Ctrl-C stops)", dir.display());
    if let Some(warning) = folder::env_file_warning(&dir) {
        out!("{warning}");
    }

    let started = chrono::Utc::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut pending = true;
    let mut push_at = Instant::now();
    let mut push_backoff = Backoff(None);
    let mut tail = Tailing::Off;
    let mut tail_backoff = Backoff(None);
    loop {
        if pending && Instant::now() >= push_at {
            match cycle(api, &dir).await {
                Ok(Synced::App(app)) => {
                    pending = false;
                    if push_backoff.reset() {
                        out!("[{}] the server answers again", now());
                    }
                    if !args.no_tail && tail.app() != Some(app.as_str()) {
                        tail = Tailing::start(api, app, started, Tail::default());
                    }
                }
                Ok(Synced::Refused) => pending = false,
                Err(e) if unreachable(&e) => {
                    let wait = push_backoff.next();
                    out!(
                        "[{}] {e}: trying again in {:.1} s",
                        now(),
                        wait.as_secs_f64()
                    );
                    push_at = Instant::now() + wait;
                }
                Err(e) => {
                    out!("[{}] error: {e}", now());
                    pending = false;
                }
            }
        }
        let mut wake = Instant::now() + Duration::from_secs(3600);
        if pending {
            wake = wake.min(push_at);
        }
        if let Tailing::Resting { at, .. } = &tail {
            wake = wake.min(*at);
        }
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            got = rx.recv() => match got {
                Some(res) => {
                    if relevant(&dir, &res) {
                        pending = true;
                        push_at = Instant::now();
                    }
                }
                None => anyhow::bail!("the file watcher stopped"),
            },
            (printed, e) = tail.running(), if tail.is_running() => {
                let Tailing::Running { app, since, .. } = std::mem::replace(&mut tail, Tailing::Off) else {
                    unreachable!("guarded")
                };
                // A tail that ran a while before it broke starts its backoff afresh.
                if since.elapsed() > BACKOFF_MAX {
                    tail_backoff.reset();
                }
                let first = tail_backoff.0.is_none();
                let wait = tail_backoff.next();
                if first {
                    out!("[{}] cannot read the invocations: {e}", now());
                }
                tail = Tailing::Resting { app, printed, at: Instant::now() + wait };
            }
            () = tokio::time::sleep_until(wake) => {}
        }
        if let Tailing::Resting { at, .. } = &tail
            && Instant::now() >= *at
            && let Tailing::Resting { app, printed, .. } =
                std::mem::replace(&mut tail, Tailing::Off)
        {
            tail = Tailing::start(api, app, started, printed);
        }
    }
}

/// The tail of the app's invocations.
enum Tailing<'a> {
    Off,
    /// Following the app's live invocation stream since `since`.
    Running {
        app: String,
        since: Instant,
        follow: Pin<Box<dyn Future<Output = (Tail, anyhow::Error)> + 'a>>,
    },
    /// Broken (the server is away): started again at `at`, printing nothing twice.
    Resting {
        app: String,
        printed: Tail,
        at: Instant,
    },
}

impl<'a> Tailing<'a> {
    /// Follow `app`'s invocations that started at or after `started`.
    fn start(
        api: &'a Api,
        app: String,
        started: chrono::DateTime<chrono::Utc>,
        printed: Tail,
    ) -> Self {
        let name = app.clone();
        let follow = Box::pin(async move {
            let how = Follow {
                app: &name,
                filters: Vec::new(),
                first_limit: logs::MAX_LIMIT,
                since: Some(started.to_rfc3339()),
                after: Some(started),
                json: false,
            };
            logs::follow(api, &how, printed).await
        });
        Tailing::Running {
            app,
            since: Instant::now(),
            follow,
        }
    }

    fn app(&self) -> Option<&str> {
        match self {
            Tailing::Off => None,
            Tailing::Running { app, .. } | Tailing::Resting { app, .. } => Some(app),
        }
    }

    fn is_running(&self) -> bool {
        matches!(self, Tailing::Running { .. })
    }

    /// The running follow's end (pending forever when not running).
    async fn running(&mut self) -> (Tail, anyhow::Error) {
        match self {
            Tailing::Running { follow, .. } => follow.await,
            _ => std::future::pending().await,
        }
    }
}

/// One push of the folder: the plan, then (without problems) its changes.
async fn cycle(api: &Api, dir: &Path) -> anyhow::Result<Synced> {
    let plan = match plan_folder(api, dir, Options::default()).await {
        Ok(plan) => plan,
        Err(e) if unreachable(&e) => return Err(e),
        Err(e) => {
            out!("[{}] error: {e}", now());
            return Ok(Synced::Refused);
        }
    };
    if !plan.problems.is_empty() {
        for p in &plan.problems {
            out!("[{}] error: {p}", now());
        }
        out!(
            "[{}] nothing was pushed: the running version{} keep{} serving",
            now(),
            if plan.deploy.len() == 1 { "" } else { "s" },
            if plan.deploy.len() == 1 { "s" } else { "" }
        );
        return Ok(Synced::Refused);
    }
    for name in &plan.kept_scripts {
        out!(
            "[{}] note: script {name} is on the server but not in the folder (kept; `picloud push --prune` deletes it)",
            now()
        );
    }
    if plan.changes() == 0 {
        out!("[{}] {} is in step with the folder", now(), plan.app);
    } else {
        plan::apply(api, &plan, &mut |line| out!("[{}] {line}", now())).await?;
    }
    Ok(Synced::App(plan.app))
}

/// Whether a batch of file events touches the app: a `.rhai` file, the manifest or the
/// `.env`, outside hidden folders, and not an editor's swap or backup file. Reads (ours
/// included) and metadata changes are not changes.
fn relevant(dir: &Path, res: &DebounceEventResult) -> bool {
    let Ok(events) = res else {
        // The watcher lost track (overflow): push to be sure.
        return true;
    };
    events.iter().any(|e| {
        let kind_counts = match e.event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
            _ => true,
        };
        kind_counts && e.event.paths.iter().any(|p| relevant_path(dir, p))
    })
}

fn relevant_path(dir: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(dir) else {
        return false;
    };
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    let Some((name, parents)) = parts.split_last() else {
        return false;
    };
    if parents.iter().any(|p| is_ignored_name(p)) || is_ignored_name(name) {
        return false;
    }
    name.ends_with(".rhai")
        || (parents.is_empty() && (MANIFEST_NAMES.contains(name) || *name == ENV_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scripts_the_manifest_and_env_count() {
        let dir = Path::new("/app");
        for p in [
            "/app/hello.rhai",
            "/app/lib/x.rhai",
            "/app/picloud.toml",
            "/app/.env",
            "/app/app.toml",
        ] {
            assert!(relevant_path(dir, Path::new(p)), "{p}");
        }
        for p in [
            "/app/.hello.rhai.swp",
            "/app/hello.rhai~",
            "/app/.#hello.rhai",
            "/app/4913",
            "/app/.git/x.rhai",
            "/app/notes.md",
            "/app/lib/picloud.toml",
            "/other/hello.rhai",
        ] {
            assert!(!relevant_path(dir, Path::new(p)), "{p}");
        }
    }

    #[test]
    fn the_backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff(None);
        assert_eq!(b.next(), BACKOFF_FIRST);
        assert_eq!(b.next(), BACKOFF_FIRST * 2);
        for _ in 0..20 {
            b.next();
        }
        assert_eq!(b.next(), BACKOFF_MAX);
        assert!(b.reset());
        assert!(!b.reset());
        assert_eq!(b.next(), BACKOFF_FIRST);
    }

    #[test]
    fn a_transport_failure_is_worth_retrying_and_a_refusal_is_not() {
        assert!(unreachable(&ApiFailure::Transport("down".into()).into()));
        assert!(!unreachable(
            &ApiFailure::Api {
                status: StatusCode::FORBIDDEN,
                code: "forbidden".into(),
                message: "no".into(),
                position: None,
            }
            .into()
        ));
        assert!(!unreachable(&anyhow::anyhow!("picloud.toml:1:1: bad")));
    }
}
