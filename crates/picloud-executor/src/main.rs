//! `picloud-executor`: cluster mode's executor, wiring only (the logic is in the `*-core` crates).
//! Usually started by `picloud-orchestrator`; see docs/cluster.md.
fn main() {
    picloud::process::executor_main()
}
