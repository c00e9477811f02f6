//! The conformance suite on SQLite, one temporary database file per test.
picloud_storage::conformance_tests!(picloud_storage::testing::sqlite_store);
