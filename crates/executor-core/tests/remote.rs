//! `RemoteExecutor` against the socket server in this process (a real Unix socket, a real
//! store): runs multiplexed on one connection, effects returned uncommitted, a closed
//! connection, no executor, and a reconnection.
use std::sync::Arc;
use std::time::Duration;

use executor_core::remote::{Endpoint, RemoteConfig, RemoteExecutor, serve};
use executor_core::{Executor, ExecutorConfig};
use shared::{
    AppName, ExecError, ExecutorClient, HttpRequest, Invocation, InvocationId, InvocationInput,
    KvWrite, ScriptName,
};
use storage::testing::{TestDb, postgres_store, sqlite_store};
use tokio::net::UnixListener;
use tokio::sync::oneshot;

/// A socket server for `executor` on `socket`; send on the returned sender to stop it.
fn listen(socket: &std::path::Path, executor: Arc<Executor>) -> oneshot::Sender<()> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, executor, async {
        let _ = stopped.await;
    }));
    stop
}

fn invocation(script: &str, n: u32) -> Invocation {
    Invocation {
        id: InvocationId::new(),
        app: AppName::parse("shop").unwrap(),
        script: ScriptName::parse(script).unwrap(),
        input: InvocationInput::Http(HttpRequest {
            method: "GET".into(),
            path: "/".into(),
            query: [("n".to_owned(), n.to_string())].into(),
            ..HttpRequest::default()
        }),
        request_id: None,
        limits: Default::default(),
    }
}

async fn remote_runs(db: TestDb) {
    let store = db.store.clone();
    let app = AppName::parse("shop").unwrap();
    store.apps.create(&app).await.unwrap();
    // A run is stuck in `slow` once it has connected to the trap.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = format!(
        r#"http::get("http://{}/"); "late""#,
        trap.local_addr().unwrap()
    );
    for (name, source) in [
        ("echo", r#"kv::incr("calls", 1); request.query.n"#),
        ("slow", slow.as_str()),
    ] {
        let name = ScriptName::parse(name).unwrap();
        store.scripts.deploy(&app, &name, source).await.unwrap();
    }
    let executor = Executor::start(
        ExecutorConfig {
            threads: 2,
            outbound: executor_core::OutboundConfig {
                allow_cidrs: executor_core::ssrf::parse_cidrs(&["127.0.0.1/32".to_owned()])
                    .unwrap(),
                ..executor_core::OutboundConfig::default()
            },
            ..ExecutorConfig::default()
        },
        store.clone(),
        tokio::runtime::Handle::current(),
    );
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("x.sock");
    let stop = listen(&socket, Arc::clone(&executor));
    let remote = RemoteExecutor::start(
        Endpoint::Connect {
            socket: socket.clone(),
        },
        store.objects.clone(),
        RemoteConfig {
            unavailable_wait: Duration::from_millis(200),
            ..RemoteConfig::default()
        },
    )
    .await
    .unwrap();

    // Many runs at once on one connection: each caller gets its own answer, with its
    // effects uncommitted (the store has no `calls` key: the executor commits nothing).
    let mut runs = tokio::task::JoinSet::new();
    for n in 0..40u32 {
        let remote = Arc::clone(&remote);
        runs.spawn(async move { (n, remote.execute(invocation("echo", n)).await) });
    }
    while let Some(done) = runs.join_next().await {
        let (n, execution) = done.unwrap();
        let execution = execution.unwrap();
        let out = execution.result.unwrap();
        assert_eq!(String::from_utf8(out.body.to_vec()).unwrap(), n.to_string());
        assert_eq!(
            execution.effects.kv,
            [KvWrite::Incr {
                key: "calls".into(),
                by: 1
            }]
        );
    }
    assert!(store.kv.get(&app, "calls").await.unwrap().is_none());
    assert!(remote.connected());

    // The connection closes during a run: its caller hears `ExecutorLost`.
    let slow = {
        let remote = Arc::clone(&remote);
        tokio::spawn(async move { remote.execute(invocation("slow", 0)).await })
    };
    let (stuck, _) = tokio::time::timeout(Duration::from_secs(20), trap.accept())
        .await
        .expect("the slow run started")
        .unwrap();
    stop.send(()).unwrap();
    assert!(matches!(slow.await.unwrap(), Err(ExecError::ExecutorLost)));
    drop(stuck);
    // With no executor listening, a run is refused without being sent: `Overloaded`.
    testkit::eventually("the link is down", Duration::from_secs(20), async || {
        (!remote.connected()).then_some(())
    })
    .await;
    assert!(matches!(
        remote.execute(invocation("echo", 1)).await,
        Err(ExecError::Overloaded)
    ));
    // An executor listens again: the client reconnects on its own.
    let _stop = listen(&socket, Arc::clone(&executor));
    let back = testkit::eventually("reconnected", Duration::from_secs(20), async || {
        remote.execute(invocation("echo", 7)).await.ok()
    })
    .await;
    assert_eq!(back.result.unwrap().body.as_ref(), b"7");
    remote.shutdown().await;
    executor.shutdown();
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_runs_multiplex_return_effects_and_survive_a_lost_connection_on_sqlite() {
    remote_runs(sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_runs_multiplex_return_effects_and_survive_a_lost_connection_on_postgres() {
    remote_runs(postgres_store().await).await;
}
