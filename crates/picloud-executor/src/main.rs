//! `picloud-executor`: cluster mode's executor, wiring only (the logic is in the `*-core` crates).
//! Usually started by `picloud-orchestrator`; see docs/cluster.md.

/// mimalloc, as in `picloud`: fewer cycles per allocation, freed memory returned.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    picloud::process::executor_main()
}
