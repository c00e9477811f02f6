//! The executor runs app scripts: a Rhai sandbox, a bounded pool of script threads and
//! the host API scripts call.
//!
//! - `Executor::execute` puts an invocation on the pool's bounded queue (full: refused at
//!   once) and awaits the reply; a script thread loads the compiled script from the
//!   `cache` (compiling the active version on a miss), runs it in the `sandbox` and
//!   shapes the result as an HTTP response (`output`).
//! - Deploys invalidate the cache through `CatalogListener`; compile checks at deploy go
//!   through `ScriptChecker`.
mod buffer; // the run's buffered effects under their caps
mod cache; // (app, script) -> compiled active version (and its module once imported)
mod context; // the host side of a run: app, limits, buffered effects, invoke depth, imports
mod error; // HostError: what a failing host call tells the script
mod executor; // the pool + cache + sandbox behind ExecutorClient
mod host; // the script modules: log, json, time, uuid, base64, crypto, kv, blob, ...
mod input; // `request` for HTTP invocations, `event` for events
pub mod limits; // per-invocation limits and their defaults
mod modules; // `import "x"` resolves the app's own script x
pub mod nesting; // how deep values may nest; checked printing and comparison
mod output; // return value -> ScriptOutput, `response(...)`
mod pool; // named script threads fed by a bounded channel
pub mod remote; // the executor in its own process: the socket's client and server
mod run_state; // the run in progress: one thread-local struct, one guard (RunScope)
mod running; // capped invocations held per app and script
pub mod sandbox; // the engine, compile and run, failure classification
pub mod ssrf; // outbound HTTP: the SSRF policy and the client that enforces it

pub use executor::{Executor, ExecutorConfig};
pub use limits::Limits;
pub use output::ScriptResponse;
pub use sandbox::{RunOutput, Sandbox};
pub use ssrf::{
    HttpError, IpNet, OutboundClient, OutboundConfig, OutboundRequest, OutboundResponse, Resolve,
};
