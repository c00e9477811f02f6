//! How a host call fails, as the script sees it.
//!
//! What must stay true: the `Display` text is the whole script-visible message and is in
//! our own words; a backend error stays in `#[source]`, goes to the log (inside the
//! call's `host.*` span, so with the app) and never into the message. Secret values,
//! keys and KV values never appear in either.
use rhai::{EvalAltResult, Position};
use shared::StoreError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum HostError {
    /// Bad input or a refused call: the message says what is wrong, safe to show.
    #[error("{0}")]
    Refused(String),
    /// The store failed; the script only learns which call failed.
    #[error("{call} failed")]
    Backend {
        call: &'static str,
        #[source]
        source: StoreError,
    },
    /// A data call outside a run of the executor (e.g. a bare sandbox).
    #[error("{call} is not available here")]
    OutsideRun { call: &'static str },
}

impl HostError {
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        HostError::Refused(message.into())
    }

    pub(crate) fn backend(call: &'static str, source: StoreError) -> Self {
        HostError::Backend { call, source }
    }

    /// The script error for this failure, at `pos` (`Position::NONE` lets Rhai fill in
    /// the position of the call).
    pub(crate) fn into_script_error(self, pos: Position) -> Box<EvalAltResult> {
        if let HostError::Backend { call, source } = &self {
            tracing::error!(call, error = ?source, "host call failed");
        }
        EvalAltResult::ErrorRuntime(self.to_string().into(), pos).into()
    }
}

impl From<HostError> for Box<EvalAltResult> {
    fn from(e: HostError) -> Self {
        e.into_script_error(Position::NONE)
    }
}
