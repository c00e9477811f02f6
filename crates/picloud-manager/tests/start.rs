//! `picloud-manager` is a cluster process: without PostgreSQL it refuses to start, with an
//! error that says what to set, before it opens or creates anything.

#[test]
fn without_a_postgres_database_url_it_refuses_to_start_and_says_what_to_set() {
    testkit::process::assert_refuses_without_postgres(
        env!("CARGO_BIN_EXE_picloud-manager"),
        "picloud-manager",
    );
}
