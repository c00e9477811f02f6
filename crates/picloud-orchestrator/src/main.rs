//! `picloud-orchestrator`: cluster mode's orchestrator, wiring only (the logic is in the `*-core` crates).
fn main() {
    picloud::process::cluster_main(picloud::Role::Node)
}
