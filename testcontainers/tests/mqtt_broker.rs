//! Integration tests of [`MqttBroker`] against real mosquitto processes. They
//! speak raw MQTT 3.1.1 (hand-written CONNECT packets, CONNACK checks) over
//! TCP, and TLS through `openssl s_client`, so that they prove the broker
//! really works without depending on an MQTT client crate.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use iotload_testkit::{MqttBroker, MqttBrokerOptions, TestPki, require_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// CONNACK with return code 0 (accepted).
const CONNACK_ACCEPTED: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
/// CONNACK with return code 5 (not authorized).
const CONNACK_NOT_AUTHORIZED: [u8; 4] = [0x20, 0x02, 0x00, 0x05];

/// An MQTT 3.1.1 CONNECT packet: clean session, keep-alive 60 s.
fn connect_packet(client_id: &str, credentials: Option<(&str, &str)>) -> Vec<u8> {
    fn push_str(buf: &mut Vec<u8>, s: &str) {
        let len = u16::try_from(s.len()).expect("MQTT strings are shorter than 64 KiB");
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    let mut flags = 0x02;
    if credentials.is_some() {
        flags |= 0x80 | 0x40;
    }
    let mut body = Vec::new();
    push_str(&mut body, "MQTT");
    body.push(4);
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    push_str(&mut body, client_id);
    if let Some((user, password)) = credentials {
        push_str(&mut body, user);
        push_str(&mut body, password);
    }
    let mut packet = vec![0x10];
    let mut remaining = body.len();
    loop {
        let mut byte = u8::try_from(remaining % 128).expect("a value below 128 fits a byte");
        remaining /= 128;
        if remaining > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if remaining == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// Reads exactly four bytes (a CONNACK) or fails after `wait`.
async fn read_connack(
    stream: &mut (impl AsyncReadExt + Unpin),
    wait: Duration,
) -> Result<[u8; 4], String> {
    let mut buf = [0u8; 4];
    match tokio::time::timeout(wait, stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Ok(buf),
        Ok(Err(err)) => Err(format!("read failed: {err}")),
        Err(_) => Err(format!("no reply within {wait:?}")),
    }
}

/// Connects over plain TCP, sends CONNECT and returns the CONNACK.
async fn mqtt_connect(
    port: u16,
    client_id: &str,
    credentials: Option<(&str, &str)>,
) -> Result<[u8; 4], String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|err| format!("connect failed: {err}"))?;
    stream
        .write_all(&connect_packet(client_id, credentials))
        .await
        .map_err(|err| format!("write failed: {err}"))?;
    read_connack(&mut stream, Duration::from_secs(5)).await
}

#[test]
fn connect_packet_matches_the_spec_example() {
    let packet = connect_packet("ab", None);
    assert_eq!(
        packet,
        [
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'a', b'b'
        ]
    );
}

#[tokio::test]
async fn two_brokers_run_side_by_side() {
    let a = MqttBroker::start().await.unwrap();
    let b = MqttBroker::start().await.unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.pid(), b.pid());
    assert_eq!(a.url(), format!("mqtt://127.0.0.1:{}", a.port()));
    assert_eq!(a.tls_url(), None);
    for broker in [&a, &b] {
        let reply = mqtt_connect(broker.port(), "side-by-side", None).await;
        assert_eq!(reply, Ok(CONNACK_ACCEPTED), "log:\n{}", broker.log());
    }
    assert!(require_server("test broker", &a.url(), "MqttBroker::start()").await);
}

#[tokio::test]
async fn stop_then_restart_on_the_same_port() {
    let mut broker = MqttBroker::start().await.unwrap();
    let port = broker.port();
    let first_pid = broker.pid().unwrap();

    broker.stop().await.unwrap();
    assert_eq!(broker.pid(), None);
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    broker.stop().await.unwrap(); // idempotent

    broker.restart().await.unwrap();
    assert_eq!(broker.port(), port);
    assert_ne!(broker.pid(), Some(first_pid));
    let reply = mqtt_connect(port, "after-restart", None).await;
    assert_eq!(reply, Ok(CONNACK_ACCEPTED), "log:\n{}", broker.log());

    // Restarting a running broker works too.
    broker.restart().await.unwrap();
    let reply = mqtt_connect(port, "after-second-restart", None).await;
    assert_eq!(reply, Ok(CONNACK_ACCEPTED), "log:\n{}", broker.log());
    assert!(broker.log().contains("restarting mosquitto"));
}

#[tokio::test]
async fn pause_withholds_connack_until_resume() {
    let broker = MqttBroker::start().await.unwrap();
    broker.pause().unwrap();

    // The kernel still completes the TCP handshake, but nobody answers.
    let mut stream = TcpStream::connect(("127.0.0.1", broker.port()))
        .await
        .unwrap();
    stream
        .write_all(&connect_packet("paused", None))
        .await
        .unwrap();
    let reply = read_connack(&mut stream, Duration::from_millis(300)).await;
    assert!(reply.is_err(), "paused broker answered: {reply:?}");

    broker.resume().unwrap();
    let reply = read_connack(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(reply, Ok(CONNACK_ACCEPTED), "log:\n{}", broker.log());
}

#[tokio::test]
async fn dropping_a_paused_broker_kills_it() {
    let broker = MqttBroker::start().await.unwrap();
    let port = broker.port();
    let pid = broker.pid().unwrap();
    broker.pause().unwrap();
    drop(broker);
    let proc_dir = format!("/proc/{pid}");
    for _ in 0..100 {
        let gone = match std::fs::read_to_string(format!("{proc_dir}/stat")) {
            Err(_) => true,
            // A zombie ("Z") awaiting the runtime's reaper is dead too.
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .unwrap()
                .trim_start()
                .starts_with('Z'),
        };
        if gone {
            assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("mosquitto (pid {pid}) still alive after the broker was dropped");
}

#[tokio::test]
async fn users_option_checks_passwords() {
    let broker = MqttBroker::start_with(MqttBrokerOptions {
        users: vec![
            ("alice".into(), "s3cret".into()),
            ("bob".into(), "hunter2".into()),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let port = broker.port();
    let log = broker.log();
    assert_eq!(
        mqtt_connect(port, "wrong", Some(("alice", "nope"))).await,
        Ok(CONNACK_NOT_AUTHORIZED),
        "log:\n{log}"
    );
    assert_eq!(
        mqtt_connect(port, "anon", None).await,
        Ok(CONNACK_NOT_AUTHORIZED)
    );
    assert_eq!(
        mqtt_connect(port, "alice", Some(("alice", "s3cret"))).await,
        Ok(CONNACK_ACCEPTED),
        "log:\n{}",
        broker.log()
    );
    assert_eq!(
        mqtt_connect(port, "bob", Some(("bob", "hunter2"))).await,
        Ok(CONNACK_ACCEPTED)
    );
}

#[tokio::test]
async fn max_connections_refuses_extra_clients() {
    let broker = MqttBroker::start_with(MqttBrokerOptions {
        max_connections: Some(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut first = TcpStream::connect(("127.0.0.1", broker.port()))
        .await
        .unwrap();
    first
        .write_all(&connect_packet("first", None))
        .await
        .unwrap();
    let reply = read_connack(&mut first, Duration::from_secs(5)).await;
    assert_eq!(reply, Ok(CONNACK_ACCEPTED), "log:\n{}", broker.log());
    let second = mqtt_connect(broker.port(), "second", None).await;
    assert!(second.is_err(), "second client accepted: {second:?}");
}

/// Whether `openssl` can be run; prints a skip notice when not.
fn have_openssl() -> bool {
    let ok = std::process::Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !ok {
        eprintln!("skipped: `openssl` is not installed (apt-get install openssl)");
    }
    ok
}

/// Runs an MQTT CONNECT through `openssl s_client` (verifying the server
/// against `ca` for `host`) and returns the CONNACK, or why there was none.
async fn tls_connect(
    port: u16,
    host: &str,
    ca: &Path,
    client: Option<&TestPki>,
) -> Result<[u8; 4], String> {
    let mut command = tokio::process::Command::new("openssl");
    command
        .arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-servername")
        .arg(host)
        .arg("-CAfile")
        .arg(ca)
        .arg("-verify_return_error")
        .arg("-quiet");
    if host.parse::<std::net::IpAddr>().is_ok() {
        command.arg("-verify_ip").arg(host);
    } else {
        command.arg("-verify_hostname").arg(host);
    }
    if let Some(pki) = client {
        command
            .arg("-cert")
            .arg(pki.client_cert())
            .arg("-key")
            .arg(pki.client_key());
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot run openssl: {err}"))?;
    let mut stdin = child.stdin.take().ok_or("openssl has no stdin")?;
    let mut stdout = child.stdout.take().ok_or("openssl has no stdout")?;
    // A failed handshake may close stdin before we write; that shows up as
    // a missing CONNACK below.
    let _ = stdin.write_all(&connect_packet("tls-client", None)).await;
    let _ = stdin.flush().await;
    let reply = read_connack(&mut stdout, Duration::from_secs(5)).await;
    let _ = child.start_kill();
    let output = child
        .wait_with_output()
        .await
        .map_err(|err| format!("waiting for openssl failed: {err}"))?;
    reply.map_err(|err| {
        format!(
            "{err}; openssl said: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test]
async fn tls_listener_serves_the_pki_certificate() {
    if !have_openssl() {
        return;
    }
    let pki = TestPki::generate().unwrap();
    let broker = MqttBroker::start_with(MqttBrokerOptions {
        tls: Some(pki.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let tls_port = broker.tls_port().unwrap();
    assert_eq!(
        broker.tls_url(),
        Some(format!("mqtts://127.0.0.1:{tls_port}"))
    );
    assert_ne!(tls_port, broker.port());
    for host in ["127.0.0.1", "localhost"] {
        let reply = tls_connect(tls_port, host, pki.ca_pem(), None).await;
        assert_eq!(
            reply,
            Ok(CONNACK_ACCEPTED),
            "host {host}; log:\n{}",
            broker.log()
        );
    }
    let wrong_ca = tls_connect(tls_port, "localhost", pki.other_ca_pem(), None).await;
    let err = wrong_ca.expect_err("wrong CA accepted");
    assert!(err.contains("certificate verify failed"), "{err}");
    let wrong_name = tls_connect(tls_port, "example.com", pki.ca_pem(), None).await;
    assert!(
        wrong_name.is_err(),
        "wrong host name accepted: {wrong_name:?}"
    );
    // The plain listener keeps working next to the TLS one.
    let plain = mqtt_connect(broker.port(), "plain", None).await;
    assert_eq!(plain, Ok(CONNACK_ACCEPTED));
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    if !have_openssl() {
        return;
    }
    let pki = TestPki::generate().unwrap();
    let mut broker = MqttBroker::start_with(MqttBrokerOptions {
        tls: Some(pki.clone()),
        require_client_cert: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let tls_port = broker.tls_port().unwrap();
    let with_cert = tls_connect(tls_port, "localhost", pki.ca_pem(), Some(&pki)).await;
    assert_eq!(with_cert, Ok(CONNACK_ACCEPTED), "log:\n{}", broker.log());
    let without = tls_connect(tls_port, "localhost", pki.ca_pem(), None).await;
    let err = without.expect_err("client without certificate accepted");
    assert!(err.contains("certificate required"), "{err}");

    // The TLS listener comes back on the same port after a restart.
    broker.restart().await.unwrap();
    assert_eq!(broker.tls_port(), Some(tls_port));
    let again = tls_connect(tls_port, "localhost", pki.ca_pem(), Some(&pki)).await;
    assert_eq!(again, Ok(CONNACK_ACCEPTED), "log:\n{}", broker.log());
}
