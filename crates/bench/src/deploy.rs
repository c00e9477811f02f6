//! Deploy to first response: while wrk loads the hello endpoint, redeploy the script
//! behind `GET /bench/ver` N times (each version answers its own number) and time, after
//! each deploy answered, the first call until it returns the new version (stale answers
//! would count against it), then one more call of the same version: a warm call in the
//! same conditions.
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::picloud::{PATH, VER_PATH, client, runtime};
use crate::report::quantile;

/// Milliseconds: deploy call, first call of the new version, warm call.
#[derive(Debug, Clone, PartialEq)]
pub struct Redeploys {
    pub count: usize,
    pub deploy_p50_ms: f64,
    pub deploy_p99_ms: f64,
    pub first_p50_ms: f64,
    pub first_p99_ms: f64,
    pub warm_p50_ms: f64,
    /// The warm call's p99: what the load alone does to a call's tail.
    pub warm_p99_ms: f64,
    /// Calls answered by an older version after its deploy returned (must be 0).
    pub stale: u64,
}

/// # Errors
/// When a deploy or a call fails.
pub fn run(
    addr: SocketAddr,
    token: &str,
    count: usize,
    connections: u32,
) -> anyhow::Result<Redeploys> {
    anyhow::ensure!(addr.ip().is_loopback(), "not on loopback: {addr}");
    // The background load, stopped when the redeploys are done.
    let mut wrk = Command::new("wrk")
        .arg("-t1")
        .arg(format!("-c{}", connections.max(1)))
        .arg("-d600s")
        .arg(format!("http://{addr}{PATH}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = runtime()?.block_on(async {
        let http = client()?;
        let (mut deploy, mut first, mut warm) = (Vec::new(), Vec::new(), Vec::new());
        let mut stale = 0;
        let url = format!("http://{addr}{VER_PATH}");
        let script = format!("http://{addr}/api/v1/apps/bench/scripts/ver");
        // Let the load settle.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for i in 1..=count {
            let want = format!("v{i}");
            let started = Instant::now();
            let res = http
                .put(&script)
                .bearer_auth(token)
                .json(&json!({"source": format!("\"{want}\"")}))
                .send()
                .await?;
            anyhow::ensure!(res.status().is_success(), "deploy: {}", res.status());
            // Read to the end, so the connection goes back to the pool and the first call
            // does not pay for a new one (the warm call reuses the first call's).
            res.bytes().await?;
            let deployed = Instant::now();
            deploy.push(ms(deployed - started));
            loop {
                let body = http.get(&url).send().await?.text().await?;
                if body == want {
                    break;
                }
                stale += 1;
                anyhow::ensure!(
                    deployed.elapsed() < Duration::from_secs(10),
                    "version {want} never answered (last: {body})"
                );
            }
            first.push(ms(deployed.elapsed()));
            let t = Instant::now();
            let body = http.get(&url).send().await?.text().await?;
            anyhow::ensure!(body == want, "a warm call answered {body}, want {want}");
            warm.push(ms(t.elapsed()));
        }
        Ok(Redeploys {
            count,
            deploy_p50_ms: quantile(&deploy, 0.5),
            deploy_p99_ms: quantile(&deploy, 0.99),
            first_p50_ms: quantile(&first, 0.5),
            first_p99_ms: quantile(&first, 0.99),
            warm_p50_ms: quantile(&warm, 0.5),
            warm_p99_ms: quantile(&warm, 0.99),
            stale,
        })
    });
    let _ = wrk.kill();
    let _ = wrk.wait();
    result
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
