//! The baseline: a bare axum handler answering the same path and body as the PiCloud
//! script, run by `picloud-bench --serve-baseline` in its own process with the same
//! runtime setup as `picloud serve` (a multi-thread tokio runtime, one worker per core).
use axum::Router;
use axum::routing::get;

/// The path both servers answer, so the URL and routing depth are the same.
pub const PATH: &str = "/bench/hello";
pub const BODY: &str = "Hello, world!";

/// Bind `127.0.0.1:0`, print `listening on http://ADDR`, serve until killed.
///
/// # Errors
/// When the port cannot be bound or serving fails.
pub fn serve() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        let app = Router::new().route(PATH, get(|| async { BODY }));
        axum::serve(listener, app).await?;
        Ok(())
    })
}
