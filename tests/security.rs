//! TLS, mutual TLS and credentials against a private Mosquitto with a throwaway PKI.

mod common;

use common::*;
use iotload_testkit::{MqttBroker, MqttBrokerOptions, TestPki};

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

async fn measures(args: &[&str]) -> serde_json::Value {
    let scratch = Scratch::new();
    let json = scratch.json();
    let mut all = vec![
        "run",
        "--devices",
        "2",
        "--rate",
        "20",
        "--count",
        "10",
        "--qos",
        "1",
        "--json",
        &json,
    ];
    all.extend(args);
    let out = run(&all).await;
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    let s = scratch.summary();
    assert_eq!(u(&s, "/receive/unique"), 20, "{s:#}");
    s
}

#[tokio::test]
async fn tls_with_the_right_ca_measures_and_a_wrong_ca_is_refused_clearly() {
    let pki = TestPki::generate().expect("pki");
    let broker = MqttBroker::start_with(MqttBrokerOptions {
        tls: Some(pki.clone()),
        ..Default::default()
    })
    .await
    .expect("mosquitto starts");
    let url = broker.tls_url().expect("tls listener");
    let ca = path(pki.ca_pem());
    measures(&["--broker", &url, "--ca-file", &ca]).await;

    let wrong = path(pki.other_ca_pem());
    let out = run(&[
        "run",
        "--broker",
        &url,
        "--ca-file",
        &wrong,
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&wrong),
        "names the CA file: {}",
        out.stderr
    );

    // --insecure skips verification on purpose.
    measures(&["--broker", &url, "--insecure"]).await;
}

#[tokio::test]
async fn tls_host_name_mismatch_is_refused() {
    let pki = TestPki::generate().expect("pki");
    let broker = MqttBroker::start_with(MqttBrokerOptions {
        tls: Some(pki.clone()),
        ..Default::default()
    })
    .await
    .expect("mosquitto starts");
    let port = broker.tls_port().expect("tls port");
    // The certificate names localhost and 127.0.0.1, not 127.0.0.2.
    let url = format!("mqtts://127.0.0.2:{port}");
    let out = run(&[
        "run",
        "--broker",
        &url,
        "--ca-file",
        &path(pki.ca_pem()),
        "--duration",
        "1s",
    ])
    .await;
    if out.stderr.contains("Connection refused") {
        eprintln!("skipped: 127.0.0.2 does not reach the broker here");
        return;
    }
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = TestPki::generate().expect("pki");
    let broker = MqttBroker::start_with(MqttBrokerOptions {
        tls: Some(pki.clone()),
        require_client_cert: true,
        ..Default::default()
    })
    .await
    .expect("mosquitto starts");
    let url = broker.tls_url().expect("tls listener");
    let ca = path(pki.ca_pem());
    measures(&[
        "--broker",
        &url,
        "--ca-file",
        &ca,
        "--cert-file",
        &path(pki.client_cert()),
        "--key-file",
        &path(pki.client_key()),
    ])
    .await;
    let out = run(&[
        "run",
        "--broker",
        &url,
        "--ca-file",
        &ca,
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(out.code, 2, "without a client certificate: {}", out.stderr);
}

#[tokio::test]
async fn passwords_from_env_file_and_csv_work_and_a_wrong_one_is_refused() {
    let mut users: Vec<(String, String)> = (0..2)
        .map(|d| (format!("dev{d}"), format!("pw-{d}")))
        .collect();
    users.push(("svc".into(), "svc-pw".into()));
    let broker = MqttBroker::start_with(MqttBrokerOptions {
        users: users.clone(),
        ..Default::default()
    })
    .await
    .expect("mosquitto starts");
    let url = broker.url();

    // Everyone as one user, password from the environment.
    let scratch = Scratch::new();
    let json = scratch.json();
    let out = finish(
        iotload()
            .args([
                "run",
                "--broker",
                &url,
                "--username",
                "svc",
                "--devices",
                "2",
                "--count",
                "10",
                "--rate",
                "20",
                "--qos",
                "1",
                "--json",
                &json,
            ])
            .env("IOTLOAD_PASSWORD", "svc-pw"),
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("svc-pw") && !out.stderr.contains("svc-pw"));
    assert!(!std::fs::read_to_string(&json).unwrap().contains("svc-pw"));

    // Password from a file, templated user and password per device.
    let pw = scratch.path("pw");
    std::fs::write(&pw, "pw-{device}\n").unwrap();
    let loadgen_json = scratch.path("l.json").display().to_string();
    let out = run(&[
        "loadgen",
        "--broker",
        &url,
        "--username",
        "dev{device}",
        "--password-file",
        &path(&pw),
        "--devices",
        "2",
        "--count",
        "5",
        "--rate",
        "50",
        "--json",
        &loadgen_json,
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(u(&read_json(&scratch.path("l.json")), "/load/sent"), 10);

    // Per-device credentials from CSV.
    let csv = scratch.path("creds.csv");
    std::fs::write(&csv, "username,password\ndev0,pw-0\ndev1,pw-1\n").unwrap();
    let out = run(&[
        "loadgen",
        "--broker",
        &url,
        "--credentials-file",
        &path(&csv),
        "--devices",
        "2",
        "--count",
        "5",
        "--rate",
        "50",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run(&[
        "loadgen",
        "--broker",
        &url,
        "--credentials-file",
        &path(&csv),
        "--devices",
        "3",
        "--count",
        "5",
    ])
    .await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("--credentials-file") && out.stderr.contains("rows"),
        "{}",
        out.stderr
    );

    // A wrong password is refused with a clear message.
    let out = finish(
        iotload()
            .args([
                "loadgen",
                "--broker",
                &url,
                "--username",
                "svc",
                "--devices",
                "1",
                "--count",
                "1",
            ])
            .env("IOTLOAD_PASSWORD", "wrong"),
    )
    .await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("refused the credentials"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("wrong"),
        "password printed: {}",
        out.stderr
    );
}

/// A password given in the broker URL, and one given through IOTLOAD_PASSWORD, appear
/// nowhere: not on stdout or stderr (with debug logs on), not in the JSON summary, not in
/// any byte of the results store, not in the plotter's report or documents.
#[tokio::test]
async fn passwords_never_reach_output_logs_summary_or_store() {
    let broker = MqttBroker::start_with(MqttBrokerOptions {
        users: vec![
            ("alice".into(), "Url-s3cret-pw".into()),
            ("bob".into(), "Env-s3cret-pw".into()),
        ],
        ..MqttBrokerOptions::default()
    })
    .await
    .expect("mosquitto starts");
    let port = broker.url().rsplit(':').next().unwrap().to_string();
    let scratch = Scratch::new();
    let store = format!("sqlite://{}", scratch.path("r.db").display());
    let json = scratch.json();
    let secrets = ["Url-s3cret-pw", "Env-s3cret-pw"];
    let mut outputs = Vec::new();
    for (run_id, url, env) in [
        (
            "url-pw",
            format!("mqtt://alice:Url-s3cret-pw@127.0.0.1:{port}"),
            None,
        ),
        (
            "env-pw",
            format!("mqtt://bob@127.0.0.1:{port}"),
            Some("Env-s3cret-pw"),
        ),
    ] {
        let mut cmd = iotload();
        cmd.args([
            "run",
            "--broker",
            &url,
            "--devices",
            "2",
            "--rate",
            "20",
            "--count",
            "10",
            "--store",
            &store,
            "--run-id",
            run_id,
            "--json",
            &json,
        ])
        .env("IOTLOAD_LOG", "debug");
        if let Some(pw) = env {
            cmd.env("IOTLOAD_PASSWORD", pw);
        }
        let out = finish(&mut cmd).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(u(&scratch.summary(), "/receive/unique"), 20);
        outputs.push(out.stdout);
        outputs.push(out.stderr);
        outputs.push(std::fs::read_to_string(&json).unwrap());
        let dry = finish(
            iotload()
                .args(["run", "--dry-run", "--broker", &url])
                .env("IOTLOAD_PASSWORD", env.unwrap_or("x")),
        )
        .await;
        outputs.push(dry.stdout + &dry.stderr);
    }
    let html = scratch.path("report.html");
    let docs = scratch.path("docs.jsonl");
    let out = run(&[
        "plotter",
        "--store",
        &store,
        "--run",
        "url-pw,env-pw",
        "--html",
        &path(&html),
        "--jsonl",
        &path(&docs),
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    outputs.push(std::fs::read_to_string(&html).unwrap());
    outputs.push(std::fs::read_to_string(&docs).unwrap());
    let listing = run(&["results", "list", "--store", &store]).await;
    outputs.push(listing.stdout);
    // The database and its write-ahead log, byte by byte.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(scratch.dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with("r.db") {
            stored.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    assert!(stored.len() > 4096, "the store was written");
    for secret in secrets {
        for (i, text) in outputs.iter().enumerate() {
            assert!(!text.contains(secret), "output {i} shows {secret}:\n{text}");
        }
        assert!(
            !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the SQLite store holds {secret}"
        );
    }
    assert!(
        outputs.iter().any(|t| t.contains("alice")),
        "user names are not secret and stay visible"
    );
}
