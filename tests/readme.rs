//! README honesty: every example in the Examples section runs as written.

mod common;

fn examples() -> Vec<String> {
    let readme = include_str!("../README.md");
    let section = readme
        .split("## Examples")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has an Examples section");
    section
        .split("```sh\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn every_readme_example_runs_as_written() {
    let addr = "127.0.0.1:1883";
    if !iotload_testkit::require_server(
        "mosquitto",
        addr,
        "mosquitto -d -c /etc/mosquitto/mosquitto.conf",
    )
    .await
    {
        eprintln!("skipped: no mosquitto at {addr}");
        return;
    }
    let examples = examples();
    assert!(examples.len() >= 4, "{examples:#?}");
    let scratch = common::Scratch::new();
    for example in examples {
        let script = example.replace("target/release/iotload", env!("CARGO_BIN_EXE_iotload"));
        let out = common::finish(
            tokio::process::Command::new("sh")
                .args(["-ec", &script])
                .current_dir(scratch.dir.path())
                .env("IOTLOAD_PROGRESS", "never"),
        )
        .await;
        assert_eq!(
            out.code, 0,
            "README example failed:\n{example}\n{}\n{}",
            out.stdout, out.stderr
        );
    }
}
