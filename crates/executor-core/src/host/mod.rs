//! The host API: one file per script module, each building a Rhai `Module` that is
//! registered as a static module (`log::info`, `json::parse`, ...).
//!
//! Rules every host function keeps: no filesystem, process or network access (except
//! through `http::*`); failures are plain script errors in our own words, never a
//! `Debug` dump or a host path. Calls that touch the app's data (kv, blob, messaging,
//! config, secrets, email) find their app in the run's context (`crate::context`), open
//! a `host.<module>.<fn>` span with the app only when they do I/O or wait (the calls that
//! only buffer an effect, `kv::set`/`delete`, `pubsub::publish`, `queue::send`, open none:
//! a span cost more than their whole call and timed nothing), and buffer their writes as
//! effects.
//! `sleep` is ours too, replacing Rhai's, so that it cannot outlast the run's deadline.
//!
//! Inline tries (an HTTP run tried on the runtime worker, see `executor`): `log`, `json`,
//! `time`, `uuid`, `base64` and `crypto` touch nothing outside the run and may run there;
//! so may `kv::set`, `kv::delete`, `pubsub::publish` and `queue::send`, which only buffer
//! an effect in the try's host context (`context::buffering_limits`). Every other call
//! reads the app's data, waits or runs another script, and stops the try before it does
//! anything (`run_state::with_host`, `sleep`). `may_run_inline` sends a script that names
//! one of them straight to a script thread, without a try.
use rhai::{Engine, Module, Shared};

mod base64;
mod blob;
mod crypto;
mod email;
pub(crate) mod http;
mod json;
mod kv;
mod log;
mod messaging;
mod page;
mod realtime;
mod settings;
mod sleep;
mod time;
mod uuid;
mod value;

pub(crate) use value::{from_json, printable};

/// What a source must not contain to be tried inline: the modules and functions that do
/// I/O, wait or run other scripts.
const NOT_INLINE: [&str; 9] = [
    "blob::",
    "http::",
    "email::",
    "config::",
    "secrets::",
    "realtime::",
    "invoke",
    "sleep",
    "import",
];

/// Modules of which only some functions may be called in a try: those that buffer an
/// effect and read nothing.
const BUFFERING: [(&str, &[&str]); 3] = [
    ("kv::", &["set", "delete"]),
    ("pubsub::", &["publish"]),
    ("queue::", &["send"]),
];

/// Whether a script with this source may call one of the functions that buffer an effect
/// (`BUFFERING`): only then does its inline try get a host context (none is built for the
/// others; a call written some other way finds none and stops the try).
pub(crate) fn may_buffer(source: &str) -> bool {
    BUFFERING.iter().any(|(module, _)| source.contains(module))
}

/// Whether a script with this source is worth an inline try: it names none of the calls
/// that would stop one. Only a shortcut (a call written some other way still stops the
/// try when it is made); conservative: the word in a comment or a string counts too.
pub(crate) fn may_run_inline(source: &str) -> bool {
    !NOT_INLINE.iter().any(|word| source.contains(word))
        && BUFFERING.iter().all(|(module, buffering)| {
            source.match_indices(module).all(|(at, _)| {
                let rest = &source[at + module.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                buffering.contains(&&rest[..end])
            })
        })
}

pub(crate) fn register_all(engine: &mut Engine) {
    let modules: [(&str, Module); _] = [
        ("log", log::module()),
        ("json", json::module()),
        ("time", time::module()),
        ("uuid", uuid::module()),
        ("base64", base64::module()),
        ("crypto", crypto::module()),
        ("http", http::module()),
        ("kv", kv::module()),
        ("blob", blob::module()),
        ("pubsub", messaging::pubsub_module()),
        ("queue", messaging::queue_module()),
        ("config", settings::config_module()),
        ("secrets", settings::secrets_module()),
        ("email", email::module()),
        ("realtime", realtime::module()),
    ];
    for (name, module) in modules {
        engine.register_static_module(name, Shared::new(module));
    }
    messaging::register(engine);
    sleep::register(engine);
}

#[cfg(test)]
mod tests {
    use super::{may_buffer, may_run_inline};

    #[test]
    fn only_a_script_naming_a_buffering_call_gets_a_host_context_in_its_try() {
        assert!(!may_buffer(r#""Hello, world!""#));
        assert!(!may_buffer(r#"log::info("x"); json::stringify(#{})"#));
        assert!(may_buffer("kv::set(\"last\", 1);\n\"ok\"\n"));
        assert!(may_buffer(r#"queue::send("q", 1)"#));
        assert!(may_buffer(r#"pubsub::publish("t", 1)"#));
    }

    #[test]
    fn only_calls_that_buffer_an_effect_are_let_through_the_source_check() {
        for source in [
            r#""Hello, world!""#,
            "kv::set(\"last\", 1);\n\"ok\"\n",
            r#"kv::set("a", 1, #{ ttl: 5 }); kv::delete("b"); pubsub::publish("t", 1); queue::send("q", 2); 1"#,
        ] {
            assert!(may_run_inline(source), "{source}");
        }
        for source in [
            r#"kv::set("a", 1); kv::get("a")"#,
            r#"kv::incr("n")"#,
            r#"kv::list("")"#,
            r#"kv::setx("a", 1)"#,
            r#"kv::set("a", 1); kv::"#,
            r#"queue::send("q", 1); blob::delete("a")"#,
            r#"pubsub::publish("t", 1); invoke_async("s", 1)"#,
            r#"http::get("https://example.com/")"#,
            r#"email::send(#{})"#,
            "sleep(1)",
        ] {
            assert!(!may_run_inline(source), "{source}");
        }
    }
}
