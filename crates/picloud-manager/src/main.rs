//! `picloud-manager`: cluster mode's manager, wiring only (the logic is in the `*-core` crates).
fn main() {
    picloud::process::cluster_main(picloud::Role::Manager)
}
