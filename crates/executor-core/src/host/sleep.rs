//! `sleep(seconds)`: pause the run, never past its wall-clock deadline.
//!
//! What must stay true: Rhai's own `sleep` (core package) blocks the script thread for as
//! long as asked, out of reach of the progress callback, so one `sleep(1e9)` would hold a
//! script thread until a restart. Ours is registered on the engine, whose functions win
//! over packages: it sleeps at most until the run's deadline and then ends the run with
//! the wall-clock limit error (uncatchable, like every limit). Zero, negative and NaN
//! durations return at once; outside a run there is no deadline, so it does not sleep.
//! An inline try (on a runtime worker) never sleeps: `sleep` stops it, and the invocation
//! runs on a script thread.
use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, Position};

use crate::run_state::{self, Termination};

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("sleep", |seconds: i64| sleep(seconds as f64));
    engine.register_fn("sleep", sleep);
}

fn sleep(seconds: f64) -> Result<(), Box<EvalAltResult>> {
    if seconds.is_nan() || seconds <= 0.0 {
        return Ok(());
    }
    if run_state::refuse_inline() {
        let token = Dynamic::from(Termination::NotInline);
        return Err(EvalAltResult::ErrorTerminated(token, Position::NONE).into());
    }
    let Some(left) = run_state::remaining() else {
        return Ok(());
    };
    let asked = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX);
    if asked < left {
        std::thread::sleep(asked);
        return Ok(());
    }
    std::thread::sleep(left);
    Err(EvalAltResult::ErrorTerminated(Dynamic::from(Termination::Timeout), Position::NONE).into())
}
