//! The `picloud` client commands: thin wrappers over the admin API (`/api/v1`) and the
//! public endpoints, so they work the same against a local or a remote server.
//!
//! - `client`: one `Api` value per run; it owns the base URL and the token and turns the
//!   server's `{"error": {...}}` bodies into errors that print as the server's message.
//! - one module per command family, each with the same steps: parse arguments, call the
//!   API, format the answer (human-readable text, or the raw JSON with `--json`).
//! - `output`: the table and time helpers the formatters share.
//!
//! Nothing here prints an error itself: `run` returns it and `main` prints
//! `error: {err}` and exits 1.
mod apps; // apps list|create|get|delete
mod client; // the admin API over HTTP, error bodies -> ApiFailure
mod data; // kv list|get|delete, blobs list|get|delete
mod dead_letters; // dead-letters list|show|replay|delete|purge
mod deploy; // deploy a file as a new script version, then bind routes
mod dev; // watch a folder, push on save, tail the invocations
pub mod folder; // an app as a folder: picloud.toml, its format and JSON Schema
mod invoke; // call a public endpoint
mod limits; // limits show|set|reset, per app or per script
mod logs; // invocation history, optionally followed
mod mailbox; // the development mailbox
mod nodes; // the cluster's nodes, up or down
mod output; // tables, times, JSON printing
mod plan; // what push changes: fetch, compare, render, apply
mod push; // push a folder (plan, confirm, apply), pull an app into one
mod realtime; // realtime expose|unexpose|list|publish|rotate-key|cors
mod scripts; // scripts list|versions|show|rollback|delete
mod settings; // config set|get|list|delete, secrets set|list|delete
mod tokens; // tokens list|whoami|create|delete
mod triggers; // triggers list|add|delete

pub use client::ApiFailure;
pub use push::Exit;

/// Where the server is and how to authenticate; shared by every client command.
#[derive(clap::Args, Debug, Clone)]
pub struct Remote {
    /// Base URL of the PiCloud server.
    #[arg(
        long,
        env = "PICLOUD_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Admin API token (sent as `Authorization: Bearer`).
    #[arg(long, env = "PICLOUD_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's raw JSON instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Every client command (`serve` is the server itself and lives in `main`).
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Create, list, inspect and delete apps.
    #[command(subcommand)]
    Apps(apps::AppsCommand),
    /// Deploy a script file as a new version and optionally bind HTTP routes to it.
    Deploy(deploy::DeployArgs),
    /// Apply an app's folder (picloud.toml and *.rhai): show the plan, confirm, apply.
    Push(push::PushArgs),
    /// Write an app's scripts, triggers, config, secret names, topics and limits into a folder.
    Pull(push::PullArgs),
    /// Watch an app's folder: push on every save and print the app's invocations.
    Dev(dev::DevArgs),
    /// Inspect scripts and their versions, roll back or delete them.
    #[command(subcommand)]
    Scripts(scripts::ScriptsCommand),
    /// List, add and delete triggers.
    #[command(subcommand)]
    Triggers(triggers::TriggersCommand),
    /// Call an app's public endpoint and print the status and body.
    Invoke(invoke::InvokeArgs),
    /// Show an app's invocation history, with log lines and errors.
    Logs(logs::LogsArgs),
    /// List, create and delete admin API tokens.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// List, inspect, replay, delete and purge dead letters.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(dead_letters::DeadLettersCommand),
    /// List, read and delete an app's KV entries.
    #[command(subcommand)]
    Kv(data::KvCommand),
    /// List, download and delete an app's blobs.
    #[command(subcommand)]
    Blobs(data::BlobsCommand),
    /// Set, read, list and delete an app's config values.
    #[command(subcommand)]
    Config(settings::ConfigCommand),
    /// Set, list and delete an app's secrets (values are never shown).
    #[command(subcommand)]
    Secrets(settings::SecretsCommand),
    /// Show the development mailbox (emails sent without SMTP).
    Mailbox(mailbox::MailboxArgs),
    /// Show, set and reset an app's or a script's limits.
    #[command(subcommand)]
    Limits(limits::LimitsCommand),
    /// Expose topics to browsers, publish, rotate the signing key, set CORS origins.
    #[command(subcommand)]
    Realtime(realtime::RealtimeCommand),
    /// List the cluster's nodes: role, address, heartbeat, load, up or down.
    Nodes,
}

/// Run one client command against `remote` and print its result to stdout.
///
/// # Errors
/// The server's error message (`app 'x' does not exist`), a transport failure, a missing
/// token (naming `PICLOUD_TOKEN`), or for `invoke` a non-2xx answer.
pub async fn run(remote: Remote, command: Command) -> anyhow::Result<()> {
    let json = remote.json;
    if let Command::Invoke(args) = command {
        // The public endpoint needs no admin token.
        return invoke::run(&remote, args).await;
    }
    let api = client::Api::new(&remote)?;
    match command {
        Command::Apps(cmd) => apps::run(&api, cmd, json).await,
        Command::Deploy(args) => deploy::run(&api, args, json).await,
        Command::Push(args) => push::run_push(&api, args, json).await,
        Command::Pull(args) => push::run_pull(&api, args).await,
        Command::Dev(args) => dev::run(&api, args).await,
        Command::Scripts(cmd) => scripts::run(&api, cmd, json).await,
        Command::Triggers(cmd) => triggers::run(&api, cmd, json).await,
        Command::Logs(args) => logs::run(&api, args, json).await,
        Command::Tokens(cmd) => tokens::run(&api, cmd, json).await,
        Command::DeadLetters(cmd) => dead_letters::run(&api, cmd, json).await,
        Command::Kv(cmd) => data::run_kv(&api, cmd, json).await,
        Command::Blobs(cmd) => data::run_blobs(&api, &remote, cmd, json).await,
        Command::Config(cmd) => settings::run_config(&api, cmd, json).await,
        Command::Secrets(cmd) => settings::run_secrets(&api, cmd, json).await,
        Command::Mailbox(args) => mailbox::run(&api, args, json).await,
        Command::Limits(cmd) => limits::run(&api, cmd, json).await,
        Command::Realtime(cmd) => realtime::run(&api, cmd, json).await,
        Command::Nodes => nodes::run(&api, json).await,
        Command::Invoke(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The shape `main` gives the CLI: the remote flags flattened, the commands below.
    #[derive(clap::Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: Command,
    }

    pub(crate) fn parse(args: &[&str]) -> Result<(Remote, Command), clap::Error> {
        let cli = TestCli::try_parse_from(std::iter::once("picloud").chain(args.iter().copied()))?;
        Ok((cli.remote, cli.command))
    }

    #[test]
    fn the_command_tree_is_consistent() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
    }

    #[test]
    fn global_flags_are_accepted_after_the_subcommand() {
        let (remote, command) = parse(&[
            "apps",
            "list",
            "--json",
            "--url",
            "http://127.0.0.1:9999",
            "--token",
            "secret",
        ])
        .expect("parses");
        assert!(remote.json);
        assert_eq!(remote.url, "http://127.0.0.1:9999");
        assert_eq!(remote.token.as_deref(), Some("secret"));
        assert!(matches!(command, Command::Apps(apps::AppsCommand::List)));
    }

    #[test]
    fn an_unknown_subcommand_is_refused() {
        assert!(parse(&["apps", "explode"]).is_err());
        assert!(parse(&["serve"]).is_err());
    }

    #[tokio::test]
    async fn a_missing_token_names_picloud_token() {
        let remote = Remote {
            url: "http://127.0.0.1:9".into(),
            token: None,
            json: false,
        };
        let err = run(remote, Command::Apps(apps::AppsCommand::List))
            .await
            .expect_err("no token must fail");
        assert!(err.to_string().contains("PICLOUD_TOKEN"), "{err}");
    }
}
