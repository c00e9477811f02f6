use std::error::Error;

/// A storage failure, without the backend's text: the source is kept for the log only.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing (`"app"`, `"script"`, `"version"`, `"trigger"`, `"token"`) does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule refused the write; names what already exists.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// SQLite was locked past its busy timeout; the caller may retry.
    #[error("storage is busy")]
    Busy,
    #[error("storage error")]
    Backend(#[source] Box<dyn Error + Send + Sync>),
}

impl StoreError {
    pub fn backend(e: impl Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }
}
