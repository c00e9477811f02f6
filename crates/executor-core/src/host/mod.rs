//! The host API: one file per script module, each building a Rhai `Module` that is
//! registered as a static module (`log::info`, `json::parse`, ...).
//!
//! Rules every host function keeps: no filesystem, process or network access (except
//! through `http::*`); failures are plain script errors in our own words, never a
//! `Debug` dump or a host path. Calls that touch the app's data (kv, blob, messaging,
//! config, secrets, email) find their app in the run's context (`crate::context`), open
//! a `host.<module>.<fn>` span with the app only, and buffer their writes as effects.
//! `sleep` is ours too, replacing Rhai's, so that it cannot outlast the run's deadline.
//!
//! Inline tries (an HTTP run tried on the runtime worker, see `executor`): `log`, `json`,
//! `time`, `uuid`, `base64` and `crypto` touch nothing outside the run and may run there;
//! every other call needs the run's host context or waits, and stops the try before it
//! does anything (`run_state::with_host`, `sleep`). `may_run_inline` sends a script that
//! names one of them straight to a script thread, without a try.
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
const NOT_INLINE: [&str; 12] = [
    "kv::",
    "blob::",
    "http::",
    "email::",
    "pubsub::",
    "queue::",
    "config::",
    "secrets::",
    "realtime::",
    "invoke",
    "sleep",
    "import",
];

/// Whether a script with this source is worth an inline try: it names none of the calls
/// that would stop one. Only a shortcut (a call written some other way still stops the
/// try when it is made); conservative: the word in a comment or a string counts too.
pub(crate) fn may_run_inline(source: &str) -> bool {
    !NOT_INLINE.iter().any(|word| source.contains(word))
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
