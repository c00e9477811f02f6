//! Deploy to first response: while wrk loads the hello endpoint, redeploy the script
//! behind `GET /bench/ver` N times (each version answers its own number) and time, after
//! each deploy answered, the first call until it returns the new version (stale answers
//! would count against it). Interleaved with them, N warm calls in the same conditions:
//! each right after a deploy of another script (`other`, no route), a call of `/ver`'s
//! current version. So the first and the warm calls follow the same admin call under the
//! same load, and differ only in whether the script they run was just replaced; the
//! order of the pair alternates.
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
    /// A call of the current version right after a deploy of another script.
    pub warm_p50_ms: f64,
    pub warm_p99_ms: f64,
    /// Calls answered by an older version after its deploy returned (must be 0).
    pub stale: u64,
}

impl Redeploys {
    /// What a new version's first call costs over a warm call, tail against tail.
    pub fn p99_over_warm_ms(&self) -> f64 {
        self.first_p99_ms - self.warm_p99_ms
    }
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
        let scripts = format!("http://{addr}/api/v1/apps/bench/scripts");
        let put = async |script: &str, source: String| -> anyhow::Result<Instant> {
            let res = http
                .put(format!("{scripts}/{script}"))
                .bearer_auth(token)
                .json(&json!({"source": format!("\"{source}\"")}))
                .send()
                .await?;
            anyhow::ensure!(res.status().is_success(), "deploy: {}", res.status());
            // Read to the end, so the connection goes back to the pool and the call after
            // it does not pay for a new one.
            res.bytes().await?;
            Ok(Instant::now())
        };
        // The other script exists before the first measured deploy of it; then let the
        // load settle.
        put("other", "o0".into()).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut current = "v0".to_owned();
        for i in 1..=count {
            for replace in [i % 2 == 1, i % 2 == 0] {
                if replace {
                    let want = format!("v{i}");
                    let started = Instant::now();
                    let deployed = put("ver", want.clone()).await?;
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
                    current = want;
                } else {
                    let deployed = put("other", format!("o{i}")).await?;
                    let body = http.get(&url).send().await?.text().await?;
                    anyhow::ensure!(
                        body == current,
                        "a warm call answered {body}, want {current}"
                    );
                    warm.push(ms(deployed.elapsed()));
                }
            }
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
