//! Bad input at start: a node given another secrets key than the running cluster is
//! refused before it records or seals anything; and two managers on one database both
//! serve the admin API (the manager keeps no state of its own).
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::node::{BOUND, Cluster, write_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secrets_key_is_refused_at_start_and_told_what_to_do() {
    let cluster = Cluster::new().await;
    let a = cluster.start("node-a", &[]).await;
    let other = cluster.dir.path().join("other.key");
    write_key(&other);
    let (code, stderr) = cluster
        .refused(
            "node-b",
            &[("PICLOUD_SECRETS_KEY_FILE", other.to_str().unwrap())],
        )
        .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("is not the key of the running cluster")
            && stderr.contains(&a.url)
            && stderr.contains("PICLOUD_SECRETS_KEY_FILE"),
        "{stderr}"
    );
    assert!(!stderr.contains("SELECT"), "no SQL in the error: {stderr}");

    // The refused node recorded nothing: a secret sealed by a is read by a new node with
    // the cluster's key.
    a.create_app("shop").await;
    let res = a
        .admin(Method::PUT, "/apps/shop/secrets/stripe")
        .json(&json!({"value": "sk_live_42"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    a.deploy("shop", "peek", r#"secrets::get("stripe")"#).await;
    a.trigger(
        "shop",
        json!({"kind": "http", "method": "GET", "path": "/peek", "script": "peek"}),
    )
    .await;
    let c = cluster.start("node-c", &[]).await;
    testkit::eventually("node c reads the secret", BOUND, async || {
        (c.get("/shop/peek").await == (StatusCode::OK, "sk_live_42".to_owned())).then_some(())
    })
    .await;
}

/// A manager process (`picloud-manager`'s role) on the cluster's database, in this process.
async fn manager(cluster: &Cluster, name: &str) -> (String, CancellationToken, picloud::Server) {
    let dir = cluster.dir.path().join(name);
    let mut config = picloud::Config::for_tests(&dir, &cluster.db.url);
    config.secrets_key_file = Some(cluster.key_file.clone());
    config.node_id = Some(name.to_owned());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = picloud::start_role(listener, config, shutdown.clone(), picloud::Role::Manager)
        .await
        .unwrap();
    (url, shutdown, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_on_one_database_both_serve_the_admin_api() {
    let cluster = Cluster::new().await;
    let (one, stop_one, server_one) = manager(&cluster, "manager-1").await;
    let (two, stop_two, server_two) = manager(&cluster, "manager-2").await;
    let http = reqwest::Client::new();
    let admin = |url: &str, method: Method, path: &str| {
        http.request(method, format!("{url}/api/v1{path}"))
            .bearer_auth(picloud::config::TEST_ADMIN_TOKEN)
    };

    let res = admin(&one, Method::POST, "/apps")
        .json(&json!({"name": "shop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = admin(&two, Method::PUT, "/apps/shop/scripts/hello")
        .json(&json!({"source": "\"hi\""}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    // A token made through one manager works on the other.
    let res = admin(&two, Method::POST, "/tokens")
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let token: serde_json::Value = res.json().await.unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    for url in [&one, &two] {
        let scripts: serde_json::Value = http
            .get(format!("{url}/api/v1/apps/shop/scripts"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(scripts["scripts"][0]["name"], "hello", "{scripts}");
        let nodes: serde_json::Value = admin(url, Method::GET, "/nodes")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let roles: Vec<_> = nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["id"].as_str().unwrap(),
                    n["role"].as_str().unwrap(),
                    n["status"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            roles,
            [
                ("manager-1", "manager", "up"),
                ("manager-2", "manager", "up")
            ]
        );
    }
    stop_one.cancel();
    stop_two.cancel();
    server_one.wait().await.unwrap();
    server_two.wait().await.unwrap();
}
