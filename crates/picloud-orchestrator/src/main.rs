//! `picloud-orchestrator`: cluster mode's orchestrator, wiring only (the logic is in the `*-core` crates).
//! It starts its `picloud-executor` next to it (or connects to `PICLOUD_EXECUTOR__SOCKET`).

/// mimalloc, as in `picloud`: fewer cycles per allocation, freed memory returned.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    picloud::process::cluster_main(picloud::Role::Orchestrator)
}
