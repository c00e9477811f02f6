//! `picloud-executor`: cluster mode's executor, wiring only (the logic is in the `*-core` crates).
fn main() {
    picloud::process::cluster_main(picloud::Role::Node)
}
