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

/// The summary README.md shows under "Set-up: two commands".
fn sample_output() -> String {
    let readme = include_str!("../README.md");
    readme
        .split("then prints a summary like this:\n\n```\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("README shows the first run's summary")
        .to_string()
}

/// A line with every word that holds a digit (counts, times, rates, ports, run ids)
/// replaced by `#`: what stays is the wording and the order of the fields.
fn shape(line: &str) -> String {
    line.split_whitespace()
        .map(|word| {
            if word.chars().any(|c| c.is_ascii_digit()) {
                "#"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The shapes of a summary's lines, leaving out what only a loaded machine prints
/// (warnings, a schedule that fell behind).
fn shapes(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("warning:"))
        .map(|l| shape(&l.replace("(BEHIND SCHEDULE)", "")))
        .collect()
}

#[tokio::test]
async fn the_readme_sample_output_is_what_the_first_run_prints() {
    let scratch = common::Scratch::new();
    let out = common::finish(
        common::iotload()
            .args(["run", "--devices", "10", "--duration", "2s"])
            .current_dir(scratch.dir.path()),
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        shapes(&sample_output()),
        shapes(&out.stdout),
        "README.md's sample output no longer matches; paste a fresh `iotload run` summary:\n{}",
        out.stdout
    );
}
