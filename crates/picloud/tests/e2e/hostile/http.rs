//! Hostile HTTP clients: half a head, half a body, idle kept-alive connections, more
//! connections than the limit, an HTTP/2 preface. Each is cut off or refused cleanly and
//! other clients are still served.
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{TestApp, spawn_app_with};
use testkit::Backend;

/// Long enough for any test machine; the server's own timeouts in these tests are short.
const BOUND: Duration = Duration::from_secs(20);

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Everything the server sends until it closes the connection (a reset counts as closed).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection");
    String::from_utf8_lossy(&seen).into_owned()
}

/// One full response on a kept-alive connection (`content-length` bodies only).
async fn read_response(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(BOUND, async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed mid-response: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return text;
                }
            }
        }
    })
    .await
    .expect("a whole response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off_while_others_are_served() {
    let mut app = spawn_app_with(Backend::Sqlite, |c| {
        c.http.header_read_timeout_ms = 300;
        c.http.body_read_timeout_ms = 300;
        c.http.idle_timeout_ms = 300;
    })
    .await;
    // A new connection per request: a pooled one may be closed by the idle timeout just
    // as it is reused.
    app.client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    app.endpoint("shop", "echo", "POST /echo", "request.body")
        .await;
    app.endpoint("blog", "hello", "GET /hello", "\"hi\"").await;

    // Half a head, then nothing.
    let mut half_head = connect(&app).await;
    half_head
        .write_all(b"GET /blog/hello HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    // A head that trickles in, one byte at a time, never finishing in time.
    let mut trickle = connect(&app).await;
    let trickling = tokio::spawn(async move {
        for byte in b"GET /blog/hello HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
            .cycle()
        {
            if trickle.write_all(&[*byte]).await.is_err() {
                return read_until_closed(&mut trickle).await;
            }
            // A slow client is the point: one byte every 50 ms.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        unreachable!()
    });
    // A whole head announcing 1000 body bytes, then only 10 of them.
    let mut half_body = connect(&app).await;
    half_body
        .write_all(b"POST /shop/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    // One request answered, then the connection kept open and idle.
    let mut idle = connect(&app).await;
    idle.write_all(b"GET /blog/hello HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut idle).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    // While they hang on, everyone else is served.
    let res = app.get("/blog/hello").await;
    assert_eq!(res.status(), 200);

    // Then each is cut off.
    let said = read_until_closed(&mut half_head).await;
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 408"),
        "{said}"
    );
    let said = tokio::time::timeout(BOUND, trickling)
        .await
        .expect("the trickling head was cut off")
        .unwrap();
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 408"),
        "{said}"
    );
    let said = read_until_closed(&mut half_body).await;
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(said.contains(r#""code":"request_timeout""#), "{said}");
    assert!(
        said.to_ascii_lowercase().contains("connection: close"),
        "{said}"
    );
    assert_eq!(read_until_closed(&mut idle).await, "");

    // And the server still answers, the admin API too.
    assert_eq!(app.get("/blog/hello").await.status(), 200);
    let apps = app
        .admin(reqwest::Method::GET, "/apps")
        .send()
        .await
        .unwrap();
    assert_eq!(apps.status(), 200);
}

/// The answer's size in the write-timeout test: larger than what the kernel buffers on
/// loopback between a server that writes and a client that reads nothing.
const BIG_ANSWER: usize = 12 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_answer_is_cut_off_while_others_are_served() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.http.write_timeout_ms = 300;
        c.limits.max_string_bytes = 2 * BIG_ANSWER;
        c.limits.max_output_bytes = 2 * BIG_ANSWER;
    })
    .await;
    app.endpoint(
        "shop",
        "big",
        "GET /big",
        &format!("let s = \"\"; s.pad({BIG_ANSWER}, 'x'); s"),
    )
    .await;
    app.endpoint("blog", "hello", "GET /hello", "\"hi\"").await;

    // A client with a small receive window asks for the big answer and reads nothing.
    let mut recorded = app.recorded();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = app.url.trim_start_matches("http://").parse().unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /shop/big HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // Once its script has run (its answer is being written to a client that reads
    // nothing), others are served meanwhile.
    tokio::time::timeout(BOUND, async {
        while recorded.recv().await.expect("records").script.as_str() != "big" {}
    })
    .await
    .expect("the big answer's run was recorded");
    assert_eq!(app.get("/blog/hello").await.status(), 200);
    // Well past the write timeout (real time is the point: the server gives up on the
    // clock), the client starts reading: it gets what was buffered,
    // then the end of a connection the server gave up on, never the whole answer.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let said = read_until_closed(&mut stalled).await;
    assert!(
        said.starts_with("HTTP/1.1 200"),
        "{}",
        &said[..said.len().min(200)]
    );
    assert!(
        said.len() < BIG_ANSWER,
        "the whole answer ({} bytes) was still sent after the client stalled",
        said.len()
    );
    assert_eq!(app.get("/blog/hello").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_cleanly_until_one_closes() {
    const LIMIT: usize = 3;
    let app = spawn_app_with(Backend::Sqlite, |c| c.http.max_connections = LIMIT).await;

    // Fill every slot with a kept-alive connection that has been answered once. (A slot a
    // previous connection held may take a moment to be released: ask again then.)
    let mut held = Vec::new();
    let deadline = tokio::time::Instant::now() + BOUND;
    while held.len() < LIMIT {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut stream).await;
        if answer.starts_with("HTTP/1.1 200") {
            held.push(stream);
        } else {
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            assert!(tokio::time::Instant::now() < deadline, "no free slot");
        }
    }

    // One more: a short 503 with a JSON body, then the connection is closed.
    let mut extra = connect(&app).await;
    let refused = read_until_closed(&mut extra).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains(r#""code":"unavailable""#), "{refused}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let res = client
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "unavailable"
    );

    // The held connections are still served.
    let mut first = held.remove(0);
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut first).await.starts_with("HTTP/1.1 200"));

    // One closes: its slot is free again for a new client.
    drop(first);
    testkit::eventually("the slot's release", BOUND, async || {
        let res = client
            .get(format!("{}/healthz", app.url))
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            return Some(());
        }
        assert_eq!(res.status(), 503);
        None
    })
    .await;
}

/// The HTTP/2 connection preface (prior knowledge, no TLS).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cleartext_is_refused_unless_configured() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let mut stream = connect(&app).await;
    stream.write_all(H2_PREFACE).await.unwrap();
    let said = read_until_closed(&mut stream).await;
    // HTTP/1.1 only: the connection is closed (perhaps after an error answer), never
    // answered with an HTTP/2 SETTINGS frame.
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 4") || said.starts_with("HTTP/1.1 5"),
        "{said:?}"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);

    let app = spawn_app_with(Backend::Sqlite, |c| c.http.h2c = true).await;
    let mut stream = connect(&app).await;
    stream.write_all(H2_PREFACE).await.unwrap();
    // Empty SETTINGS from the client; the server answers with its own SETTINGS frame.
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut frame = [0u8; 9];
    tokio::time::timeout(BOUND, stream.read_exact(&mut frame))
        .await
        .expect("an HTTP/2 frame")
        .unwrap();
    assert_eq!(frame[3], 4, "a SETTINGS frame: {frame:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_open_file_limit_excess_connections_are_refused_before_files_run_out() {
    // 256 files: the derived connection limit is 128, which leaves room for the rest.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let running = tokio::task::spawn_blocking(move || {
        crate::binary::start_with_file_limit(
            &data_dir,
            &[("PICLOUD_HTTP__HEADER_READ_TIMEOUT_MS", "60000")],
            256,
        )
    })
    .await
    .unwrap();
    let address = running.url.trim_start_matches("http://").to_owned();

    // More idle connections than the process has files.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }
    // One more is refused cleanly rather than left waiting in the backlog.
    let mut probe = TcpStream::connect(&address).await.unwrap();
    let said = read_until_closed(&mut probe).await;
    assert!(said.starts_with("HTTP/1.1 503"), "{said:?}");

    // Once they are gone, the server answers again.
    drop(idle);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    testkit::eventually("served again", BOUND, async || {
        let res = client.get(format!("{}/readyz", running.url)).send().await;
        res.is_ok_and(|res| res.status() == 200).then_some(())
    })
    .await;
    drop(running);
}
