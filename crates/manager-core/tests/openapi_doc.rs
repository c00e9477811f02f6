//! `docs/openapi.json` is the generated document, committed: this test fails when it
//! differs from what the server serves (`manager_core::openapi_document`), and writes it
//! afresh with `PICLOUD_BLESS=1 cargo test -p manager-core --test openapi_doc`.
use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let generated = manager_core::openapi_document();
    let path = committed_path();
    if std::env::var_os("PICLOUD_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, generated).expect("write docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale: regenerate it with \
         `PICLOUD_BLESS=1 cargo test -p manager-core --test openapi_doc` and commit it"
    );
}

#[test]
fn the_document_has_every_route_and_no_rust_type_name() {
    let doc: serde_json::Value =
        serde_json::from_str(manager_core::openapi_document()).expect("json");
    for route in manager_core::ROUTES {
        let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is not documented",
            route.method,
            route.path
        );
    }
    let text = doc.to_string();
    for rust in [
        "Option<",
        "Vec<",
        "shared::",
        "manager_core::",
        "serde_json::",
        "Map<String",
    ] {
        assert!(
            !text.contains(rust),
            "the document names a Rust type: {rust}"
        );
    }
}
