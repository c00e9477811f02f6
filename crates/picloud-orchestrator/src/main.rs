//! `picloud-orchestrator`: cluster mode's orchestrator, wiring only (the logic is in the `*-core` crates).
//! It starts its `picloud-executor` next to it (or connects to `PICLOUD_EXECUTOR__SOCKET`).
fn main() {
    picloud::process::cluster_main(picloud::Role::Orchestrator)
}
