//! Pulsar end to end and its connection errors: the real binary against a private Apache
//! Pulsar standalone per test (one JVM from the test kit), checked through the JSON
//! summary; and, on loopback sockets, a port where nothing listens, a server that closes
//! at once, one that answers something that is not Pulsar, and one that never answers,
//! each through the transport and (for the first) through the real binary. Those servers
//! are fault injectors, not Pulsar fakes.

#![cfg(feature = "pulsar")]
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use iotload_core::plan::BrokerUrl;
use iotload_core::transport::pulsar::{PulsarSettings, PulsarTransport};
use iotload_core::transport::{ClientIdentity, Transport, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn transport(port: u16, connect_timeout: Duration) -> PulsarTransport {
    let settings = PulsarSettings {
        connect_timeout,
        ..PulsarSettings::default()
    };
    let url = BrokerUrl::parse(&format!("pulsar://127.0.0.1:{port}")).unwrap();
    PulsarTransport::new(url, settings).unwrap()
}

fn identity() -> ClientIdentity {
    ClientIdentity {
        client_id: format!("pulsar-test-{}", std::process::id()),
        ..ClientIdentity::default()
    }
}

/// Opens a publisher and a subscriber on `t`; both must fail. Returns the publisher's
/// error and how long it took.
async fn both_fail(t: &PulsarTransport) -> (TransportError, Duration) {
    let started = Instant::now();
    let publisher = t.publisher(&identity()).await;
    let elapsed = started.elapsed();
    let Err(e) = publisher else {
        panic!("a publisher connected to a server that is not Pulsar");
    };
    let filters = ["iot/+/action".to_string()];
    assert!(
        t.subscriber(&identity(), &filters).await.is_err(),
        "a subscriber connected to a server that is not Pulsar"
    );
    (e, elapsed)
}

/// A loopback server that runs `answer` on every connection it accepts.
async fn fault_server<F, Fut>(answer: F) -> u16
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(answer(socket));
        }
    });
    port
}

#[tokio::test]
async fn run_on_a_private_pulsar_receives_every_message() {
    let Some(broker) = iotload_testkit::PulsarBroker::require().await else {
        return;
    };
    // Fresh topics: each producer is created on its device's first message and the
    // collector's pattern subscription finds each action topic at its next refresh (1 s),
    // so the first messages arrive seconds late on a busy machine; the drain waits.
    let s = exact_counts(
        &broker.url(),
        &prefix("pulsar"),
        &["--drain-timeout", "15s"],
    )
    .await;
    assert_eq!(
        s.pointer("/broker").and_then(|b| b.as_str()),
        Some(broker.url().as_str()),
        "{s:#}"
    );
}

#[tokio::test]
async fn header_stamp_rides_in_pulsar_properties_with_a_shared_subscription() {
    let Some(broker) = iotload_testkit::PulsarBroker::require().await else {
        return;
    };
    let s = exact_counts(
        &broker.url(),
        &prefix("pulsarhdr"),
        &[
            "--stamp",
            "header",
            "--payload",
            "opaque body",
            "--pulsar-subscription",
            "iotload-e2e",
            "--drain-timeout",
            "15s",
        ],
    )
    .await;
    assert_eq!(u(&s, "/receive/unique"), 1000);
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error_within_seconds_naming_the_address() {
    let port = iotload_testkit::free_port();
    let (e, elapsed) = both_fail(&transport(port, Duration::from_secs(10))).await;
    assert!(
        matches!(e, TransportError::Connect { .. }),
        "refused is a connect error, not {e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains(&format!("pulsar://127.0.0.1:{port}")),
        "{text}"
    );
    assert!(
        format!("{:?}", std::error::Error::source(&e)).contains("refused"),
        "{e:?}"
    );
    // Refusals are retried a few times within about a second, well inside the 10 s
    // connect timeout.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test]
async fn a_server_that_closes_at_once_is_a_connect_error_naming_the_address() {
    let port = fault_server(|socket| async move { drop(socket) }).await;
    let (e, elapsed) = both_fail(&transport(port, Duration::from_secs(10))).await;
    assert!(matches!(e, TransportError::Connect { .. }), "{e:?}");
    assert!(e.is_unreachable());
    assert!(e.to_string().contains(&port.to_string()), "{e}");
    let source = std::error::Error::source(&e).unwrap().to_string();
    assert!(source.contains("handshake failed"), "{source}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test]
async fn a_server_that_speaks_another_protocol_is_a_connect_error() {
    // What the client meets on a Pulsar broker's HTTP port: it reads the client's first
    // frame, answers with HTTP and closes.
    let port = fault_server(|mut socket| async move {
        let mut buf = [0u8; 512];
        let _ = socket.read(&mut buf).await;
        let _ = socket
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        let _ = socket.shutdown().await;
    })
    .await;
    let (e, elapsed) = both_fail(&transport(port, Duration::from_secs(10))).await;
    assert!(matches!(e, TransportError::Connect { .. }), "{e:?}");
    let source = std::error::Error::source(&e).unwrap().to_string();
    assert!(
        source.contains("handshake failed") && source.contains("HTTP port"),
        "{source}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout_after_the_connect_timeout() {
    // Accepts, reads whatever comes, says nothing; each connection lives until the test ends.
    let port = fault_server(|mut socket| async move {
        let mut buf = [0u8; 512];
        while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    let timeout = Duration::from_millis(500);
    let (e, elapsed) = both_fail(&transport(port, timeout)).await;
    assert!(
        matches!(e, TransportError::Timeout { waited_ms: 500, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains(&port.to_string()), "{e}");
    assert!(
        elapsed >= timeout && elapsed < Duration::from_secs(3),
        "took {elapsed:?}"
    );
}

#[tokio::test]
async fn run_against_a_port_with_no_pulsar_broker_exits_2_and_names_the_url() {
    let port = iotload_testkit::free_port();
    let url = format!("pulsar://127.0.0.1:{port}");
    let started = Instant::now();
    let out = run(&[
        "run",
        "--broker",
        &url,
        "--duration",
        "1s",
        "--connect-timeout",
        "2s",
        "--store",
        "none",
    ])
    .await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!("cannot connect to {url}")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn pulsar_options_the_client_cannot_honour_exit_2_before_connecting() {
    let port = iotload_testkit::free_port();
    let url = format!("pulsar+ssl://127.0.0.1:{port}");
    let out = run(&[
        "loadgen",
        "--broker",
        &url,
        "--insecure",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--insecure"), "{}", out.stderr);
    let out = run(&[
        "collector",
        "--broker",
        &format!("pulsar://127.0.0.1:{port}"),
        "--pulsar-batching",
        "--pulsar-batch-size",
        "1",
        "--duration",
        "1s",
        "--store",
        "none",
    ])
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--pulsar-batch-size"), "{}", out.stderr);
}

#[tokio::test]
async fn dry_run_hides_the_pulsar_token() {
    let out = finish(
        iotload()
            .args(["run", "--dry-run", "--broker", "pulsar://127.0.0.1:6650"])
            .env("IOTLOAD_PULSAR_TOKEN", "eyJsecret.jwt"),
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("eyJsecret"), "{}", out.stdout);
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("--pulsar-token "))
        .unwrap_or_else(|| panic!("--pulsar-token missing:\n{}", out.stdout));
    assert!(line.contains("***"), "{line}");
}
