//! Configuration: flags > environment > config file > defaults, one test per rule, and
//! clear errors for bad input.

mod common;

use common::*;

fn dry_run_line<'a>(out: &'a str, option: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(&format!("--{option} ")))
        .unwrap_or_else(|| panic!("--{option} missing from dry run:\n{out}"))
}

fn config_file(scratch: &Scratch, yaml: &str) -> String {
    let path = scratch.path("iotload.yaml");
    std::fs::write(&path, yaml).expect("config written");
    path.display().to_string()
}

#[tokio::test]
async fn defaults_apply_when_nothing_is_given() {
    let out = run(&["run", "--dry-run"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = dry_run_line(&out.stdout, "rate");
    assert!(
        line.contains(" 10 ") && line.contains("(default)"),
        "{line}"
    );
    assert!(
        out.stdout
            .contains("plan: 100 devices × 10 msg/s, 10000 messages"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn config_file_overrides_defaults() {
    let scratch = Scratch::new();
    let cfg = config_file(&scratch, "rate: 5\nqos: 1\nloadgen:\n  devices: 3\n");
    let out = run(&["run", "--dry-run", "--config", &cfg]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = dry_run_line(&out.stdout, "rate");
    assert!(
        line.contains(" 5 ") && line.contains("(config file)"),
        "{line}"
    );
    // A section applies to its subcommand only.
    assert!(dry_run_line(&out.stdout, "devices").contains("(default)"));
    let out = run(&[
        "loadgen",
        "--dry-run",
        "--config",
        &cfg,
        "--broker",
        "mqtt://h:1",
    ])
    .await;
    assert!(
        dry_run_line(&out.stdout, "devices").contains("(config file)"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn environment_overrides_the_config_file() {
    let scratch = Scratch::new();
    let cfg = config_file(&scratch, "rate: 5\n");
    let out = finish(
        iotload()
            .args(["run", "--dry-run", "--config", &cfg])
            .env("IOTLOAD_RATE", "7"),
    )
    .await;
    let line = dry_run_line(&out.stdout, "rate");
    assert!(
        line.contains(" 7 ") && line.contains("(env IOTLOAD_RATE)"),
        "{line}"
    );
}

#[tokio::test]
async fn flags_override_the_environment() {
    let out = finish(
        iotload()
            .args(["run", "--dry-run", "--rate", "9"])
            .env("IOTLOAD_RATE", "7"),
    )
    .await;
    let line = dry_run_line(&out.stdout, "rate");
    assert!(line.contains(" 9 ") && line.contains("(flag)"), "{line}");
}

#[tokio::test]
async fn config_file_found_through_the_environment() {
    let scratch = Scratch::new();
    let cfg = config_file(&scratch, "devices: 4\n");
    let out = finish(
        iotload()
            .args(["run", "--dry-run"])
            .env("IOTLOAD_CONFIG", &cfg),
    )
    .await;
    assert!(
        dry_run_line(&out.stdout, "devices").contains("(config file)"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn dry_run_redacts_passwords() {
    let out = finish(
        iotload()
            .args(["run", "--dry-run", "--broker", "mqtt://u:topsecret@h:1883"])
            .env("IOTLOAD_PASSWORD", "alsosecret"),
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stdout.contains("topsecret") && !out.stdout.contains("alsosecret"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn unknown_config_key_is_named() {
    let scratch = Scratch::new();
    let cfg = config_file(&scratch, "rat: 5\n");
    let out = run(&["run", "--dry-run", "--config", &cfg]).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unknown option `rat`"),
        "{}",
        out.stderr
    );
}

async fn fails_with(args: &[&str], expected: &[&str]) {
    let out = run(args).await;
    assert_eq!(
        out.code, 2,
        "{args:?} should fail: {}\n{}",
        out.stdout, out.stderr
    );
    for e in expected {
        assert!(
            out.stderr.contains(e),
            "{args:?}: `{e}` not in:\n{}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn unreachable_broker_error_names_it_and_hints_at_the_embedded_one() {
    let port = iotload_testkit::free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    fails_with(
        &["run", "--broker", &url, "--duration", "1s"],
        &[
            &format!("cannot connect to {url}"),
            "hint:",
            "without --broker",
        ],
    )
    .await;
}

#[tokio::test]
async fn bad_values_get_errors_that_name_the_value_and_the_fix() {
    fails_with(
        &["run", "--broker", "mqtt:/nope"],
        &["bad broker URL `mqtt:/nope`", "scheme://"],
    )
    .await;
    fails_with(
        &["run", "--broker", "http://h:1"],
        &["unknown scheme `http`"],
    )
    .await;
    fails_with(&["run", "--rate", "0"], &["--rate", "not a positive rate"]).await;
    fails_with(&["run", "--duration=-5s"], &["negative"]).await;
    fails_with(&["run", "--devices", "0"], &["--devices"]).await;
    fails_with(
        &["run", "--topic", "x/{id}"],
        &["unknown placeholder `{id}`"],
    )
    .await;
    fails_with(
        &["run", "--payload-file", "/nonexistent/payload.json"],
        &["cannot read --payload-file file /nonexistent/payload.json"],
    )
    .await;
    fails_with(&["loadgen"], &["--broker is required"]).await;
}

#[tokio::test]
async fn too_many_devices_for_the_open_file_limit_is_explained() {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args([
        "-c",
        &format!(
            "ulimit -n 128 && ulimit -Hn 128 && exec {} run --devices 1000 --duration 1s",
            env!("CARGO_BIN_EXE_iotload")
        ),
    ]);
    let out = finish(&mut cmd).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("open files are needed") && out.stderr.contains("ulimit -n"),
        "{}",
        out.stderr
    );
}
