//! The deployment files, checked statically (issue #8): no Docker engine or cluster runs
//! where iotload is tested. The Compose demo must render with `docker-compose config`, the
//! Kustomize overlays with `kubectl kustomize` and then validate against the Kubernetes
//! schemas (`kubernetes-validate`), and no file may name an `IOTLOAD_*` variable that no
//! option reads. With `CI=true` a missing tool fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn output(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every `IOTLOAD_*` variable an option of any subcommand reads, from `--help`.
fn variables_read() -> BTreeSet<String> {
    let mut read = BTreeSet::new();
    for command in [
        "run",
        "loadgen",
        "echo-ipaas",
        "collector",
        "plotter",
        "results",
        "zmq-proxy",
    ] {
        let help = output(
            std::process::Command::new(env!("CARGO_BIN_EXE_iotload"))
                .args([command, "--help"])
                .env_clear(),
        );
        read.extend(variables_named(&help));
    }
    assert!(
        read.len() > 50,
        "the help texts name the variables: {read:?}"
    );
    read
}

/// The `IOTLOAD_*` names in a text.
fn variables_named(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("IOTLOAD_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        // `IOTLOAD_*` in prose names the family, not a variable.
        if name.len() > "IOTLOAD_".len() {
            names.insert(name);
        }
    }
    names
}

/// Every YAML file under `dir`.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn deployment_files_name_only_variables_an_option_reads() {
    let read = variables_read();
    let mut files = yaml_files(&repo().join("compose"));
    files.extend(yaml_files(&repo().join("deploy")));
    assert!(
        files.len() >= 8,
        "compose and deploy files found: {files:?}"
    );
    let mut unknown = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for name in variables_named(&text) {
            if !read.contains(&name) {
                unknown.push(format!("{}: {name}", file.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "variables no option reads (a typo, or an option that was renamed): {unknown:#?}"
    );
    // The check can fail: a misspelt name is caught.
    let misspelt = variables_named("env:\n  IOTLOAD_DEVICE: 10\n  IOTLOAD_RATE: 1\n");
    assert_eq!(
        misspelt
            .iter()
            .filter(|n| !read.contains(*n))
            .collect::<Vec<_>>(),
        ["IOTLOAD_DEVICE"]
    );
}

#[test]
fn the_compose_demo_renders_and_scales_loadgens_and_collectors_together() {
    let Some(compose) = common::tool(&["docker-compose"], "apt-get install docker-compose") else {
        return;
    };
    let file = repo().join("compose/docker-compose.yml");
    output(
        std::process::Command::new(&compose)
            .arg("-f")
            .arg(&file)
            .args(["config", "-q"]),
    );
    // Each addition (another broker, Elasticsearch and Kibana) renders with the demo.
    for addition in ["nats.yml", "rabbitmq.yml", "kafka.yml", "report.yml"] {
        output(
            std::process::Command::new(&compose)
                .arg("-f")
                .arg(&file)
                .arg("-f")
                .arg(repo().join("compose").join(addition))
                .args(["config", "-q"]),
        );
    }
    let rendered = output(
        std::process::Command::new(&compose)
            .arg("-f")
            .arg(&file)
            .arg("config")
            .env("LOADGENS", "7")
            .env("WAIT_FOR", "14")
            .env("DEVICES", "250"),
    );
    let config: Value = serde_saphyr::from_str(&rendered).unwrap();
    let service = |name: &str| config["services"][name].clone();
    let (loadgen, collector) = (service("loadgen"), service("collector"));
    assert_eq!(loadgen["deploy"]["replicas"], 7, "{loadgen:#}");
    assert_eq!(collector["deploy"]["replicas"], 7, "{collector:#}");
    let env = |s: &Value, key: &str| {
        s["environment"][key]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(env(&loadgen, "IOTLOAD_WAIT_FOR"), "14");
    assert_eq!(env(&loadgen, "IOTLOAD_FIRST_DEVICE"), "auto");
    assert_eq!(env(&loadgen, "IOTLOAD_DEVICES"), "250");
    assert_eq!(
        env(&collector, "IOTLOAD_CLAIM"),
        "250",
        "a collector claims one loadgen's topics"
    );
    for name in ["loadgen", "collector", "echo-ipaas", "plotter"] {
        let s = service(name);
        assert_eq!(s["image"], "iotload:latest", "{name}: {s:#}");
        assert_eq!(
            env(&s, "IOTLOAD_STORE"),
            "redis://redis:6379",
            "{name} pairs through Redis"
        );
    }
}

/// Renders an overlay with `kubectl kustomize`.
fn kustomize(kubectl: &Path, overlay: &Path) -> String {
    output(
        std::process::Command::new(kubectl)
            .arg("kustomize")
            .arg(overlay),
    )
}

#[test]
fn every_kustomize_overlay_renders_and_validates_against_the_kubernetes_schemas() {
    let Some(kubectl) = common::tool(&["kubectl"], "apt-get install kubectl") else {
        return;
    };
    let Some(validate) = common::tool(
        &["kubernetes-validate"],
        "pip install kubernetes-validate, in a venv",
    ) else {
        return;
    };
    let scratch = common::Scratch::new();
    let overlays: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(overlays.len() >= 2, "{overlays:?}");
    for overlay in &overlays {
        let name = overlay.file_name().unwrap().to_string_lossy().into_owned();
        let rendered = kustomize(&kubectl, overlay);
        let file = scratch.path(&format!("{name}.yaml"));
        std::fs::write(&file, &rendered).unwrap();
        output(
            std::process::Command::new(&validate)
                .args(["--strict", "--quiet"])
                .arg(&file),
        );
        check_fleet(&name, &serde_saphyr::from_multiple(&rendered).unwrap());
    }
}

/// The fleet in one rendered overlay pairs up: as many collectors as loadgens, loadgens
/// waiting for all their replicas, collectors claiming one loadgen's devices, and every
/// iotload Deployment configured from the shared settings and told its pod name.
fn check_fleet(overlay: &str, docs: &[Value]) {
    let deployment = |name: &str| {
        docs.iter()
            .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{overlay}: no Deployment {name}"))
            .clone()
    };
    let env = |d: &Value, key: &str| -> String {
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == key)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (loadgen, collector) = (deployment("loadgen"), deployment("collector"));
    let replicas = &loadgen["spec"]["replicas"];
    assert_eq!(&collector["spec"]["replicas"], replicas, "{overlay}");
    let instances = replicas.as_u64().unwrap() + collector["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(
        env(&loadgen, "IOTLOAD_WAIT_FOR"),
        instances.to_string(),
        "{overlay}: the loadgens wait for every loadgen and collector"
    );
    assert_eq!(
        env(&collector, "IOTLOAD_CLAIM"),
        env(&loadgen, "IOTLOAD_DEVICES"),
        "{overlay}: a collector claims one loadgen's topics"
    );
    assert_eq!(env(&loadgen, "IOTLOAD_FIRST_DEVICE"), "auto", "{overlay}");
    for name in ["loadgen", "collector", "echo-ipaas"] {
        let d = deployment(name);
        let pod = &d["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(container["args"][0], name, "{overlay}/{name}");
        assert!(
            container["envFrom"]
                .to_string()
                .contains("iotload-settings"),
            "{overlay}/{name}: {container:#}"
        );
        assert!(
            container["env"].to_string().contains("POD_NAME"),
            "{overlay}/{name}: stored results carry the pod name"
        );
        assert!(container["readinessProbe"].is_object(), "{overlay}/{name}");
        assert!(container["livenessProbe"].is_object(), "{overlay}/{name}");
        assert!(
            pod["terminationGracePeriodSeconds"].as_u64() >= Some(30),
            "{overlay}/{name}: time to drain on SIGTERM"
        );
    }
    let plotter = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "plotter")
        .unwrap_or_else(|| panic!("{overlay}: no plotter Service"));
    assert_eq!(
        plotter["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
}

#[test]
fn the_dockerfile_builds_one_binary_into_a_small_non_root_image_on_base_images_given_as_arguments()
{
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let stage_at = |name: &str| {
        text.lines()
            .position(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {name}")))
            .unwrap_or_else(|| panic!("no stage {name}"))
    };
    let (base, prebuilt, build, runtime) = (
        stage_at("runtime-base"),
        stage_at("prebuilt"),
        stage_at("build"),
        stage_at("runtime"),
    );
    // The classic builder (no BuildKit here) builds every stage up to its target, so the
    // prebuilt target must come before the compile stage, and the default target last.
    assert!(base < prebuilt && prebuilt < build && build < runtime);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[base].contains("${RUNTIME_IMAGE}"));
    assert!(lines[build].contains("${BUILD_IMAGE}"));
    assert!(
        text.contains("ARG RUNTIME_IMAGE=debian:bookworm-slim"),
        "a small final image"
    );
    assert!(text.contains("ARG BUILD_IMAGE=rust:1-bookworm"));
    assert!(text.contains("--locked") && text.contains("--bin iotload"));
    let stage = |from: usize, to: usize| lines[from..to].join("\n");
    for (name, body) in [
        ("prebuilt", stage(prebuilt, build)),
        ("runtime", stage(runtime, lines.len())),
    ] {
        let user = body
            .lines()
            .find_map(|l| l.strip_prefix("USER "))
            .unwrap_or_else(|| panic!("stage {name} sets a USER"));
        assert!(
            !user.starts_with("root") && !user.starts_with('0'),
            "{name} runs as non-root: {user}"
        );
    }
    assert!(stage(base, prebuilt).contains(r#"ENTRYPOINT ["/usr/local/bin/iotload"]"#));
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    for line in ["target/", ".git/", "!target/release/iotload"] {
        assert!(
            ignore.lines().any(|l| l == line),
            ".dockerignore has {line}"
        );
    }
}
