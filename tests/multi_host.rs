//! Multi-host proof without Docker (issue #8): network namespaces stand in for hosts. One
//! holds Redis and Mosquitto; three loadgens, one echo-ipaas and three collectors run in
//! seven others, each configured only by environment variables, all joined by veth pairs
//! to a bridge, with addresses in 10.201.0.0/24 that exist only inside the namespaces.
//! The test checks that every topic was claimed by exactly one collector, that each
//! collector's estimate of every loadgen's clock offset is 0 within its error bound (the
//! namespaces share one clock), and that the plotter merges the results of all six
//! instances. It removes its namespaces however it
//! ends. Needs root (CAP_NET_ADMIN); CI runs as root, elsewhere it is skipped.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use common::{Proc, Scratch, read_json, received_at_least, u};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const SERVER: &str = "10.201.0.1";

/// The namespaces of one test and the bridge joining them; removed on drop.
struct Hosts {
    prefix: String,
    names: Vec<String>,
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    /// `hosts` namespaces, host `i` at 10.201.0.`addresses[i]`, plus a hub with the bridge.
    fn create(hosts: &[(&str, u8)]) -> Self {
        let prefix = format!("il{}", std::process::id() % 100_000);
        let mut made = Hosts {
            prefix: prefix.clone(),
            names: Vec::new(),
        };
        let hub = format!("{prefix}hub");
        ip(&["netns", "add", &hub]);
        made.names.push(hub.clone());
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for (i, (name, last)) in hosts.iter().enumerate() {
            let ns = made.ns(name);
            ip(&["netns", "add", &ns]);
            made.names.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let port = format!("p{i}");
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.201.0.{last}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        made
    }

    fn ns(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    /// `program ARGS` inside `host`, with exactly the environment `env`.
    fn command(&self, host: &str, program: &str, args: &[&str], env: &[(&str, String)]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(host), program])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(common::work_dir())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// `iotload SUBCOMMAND` inside `host`, configured only by `env`.
    fn iotload(&self, host: &str, subcommand: &str, env: &[(&str, String)]) -> Proc {
        let mut child = self
            .command(host, env!("CARGO_BIN_EXE_iotload"), &[subcommand], env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        Proc::from_child(child, BufReader::new(stderr).lines())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

/// Whether this process may create network namespaces; with `CI=true` it must.
fn may_create_namespaces() -> bool {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    assert!(
        root || !common::in_ci(),
        "the multi-host test needs root (CAP_NET_ADMIN) in CI"
    );
    if !root {
        eprintln!("skipped: creating network namespaces needs root");
    }
    root
}

/// Polls `check` inside `host` until it succeeds (a server's port answering).
async fn wait_until_serving(hosts: &Hosts, host: &str, check: &[&str]) {
    for _ in 0..100 {
        let status = hosts
            .command(host, check[0], &check[1..], &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .unwrap();
        if status.success() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{check:?} never succeeded in {host}");
}

#[tokio::test]
async fn three_loadgens_and_three_collectors_on_separate_hosts_pair_through_redis() {
    if !may_create_namespaces() {
        return;
    }
    let hosts = Hosts::create(&[
        ("srv", 1),
        ("lg0", 11),
        ("lg1", 12),
        ("lg2", 13),
        ("echo", 20),
        ("col0", 31),
        ("col1", 32),
        ("col2", 33),
    ]);
    let scratch = Scratch::new();

    // The "server host": Redis and Mosquitto listening on its private address only.
    let mut redis = hosts
        .command(
            "srv",
            "redis-server",
            &[
                "--bind",
                SERVER,
                // Other hosts reach it with no password: only the test's namespaces can.
                "--protected-mode",
                "no",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            &[],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let conf = scratch.path("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener 1883 {SERVER}\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let mut mosquitto = hosts
        .command(
            "srv",
            "mosquitto",
            &["-c", &conf.display().to_string()],
            &[],
        )
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_serving(&hosts, "lg0", &["redis-cli", "-h", SERVER, "ping"]).await;
    wait_until_serving(
        &hosts,
        "lg0",
        &["bash", "-c", &format!("exec 3<>/dev/tcp/{SERVER}/1883")],
    )
    .await;

    let run_id = "multi-host".to_string();
    let common_env = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("IOTLOAD_BROKER", format!("mqtt://{SERVER}:1883")),
            ("IOTLOAD_STORE", format!("redis://{SERVER}:6379")),
            ("IOTLOAD_RUN_ID", run_id.clone()),
            ("IOTLOAD_QOS", "1".to_string()),
            ("IOTLOAD_LEASE", "3s".to_string()),
            ("IOTLOAD_PROGRESS", "always".to_string()),
        ];
        env.extend_from_slice(extra);
        env
    };

    let mut echo = hosts.iotload(
        "echo",
        "echo-ipaas",
        &common_env(&[
            ("IOTLOAD_FROM", "mh/+/t".into()),
            ("IOTLOAD_TO", "mh/{device}/a".into()),
        ]),
    );
    echo.wait_for("echo-ipaas:").await;

    let mut collectors = Vec::new();
    for i in 0..3 {
        collectors.push(hosts.iotload(
            &format!("col{i}"),
            "collector",
            &common_env(&[
                ("IOTLOAD_CLAIM", "4".into()),
                ("IOTLOAD_PER_DEVICE", "true".into()),
                ("IOTLOAD_INSTANCE", format!("col{i}")),
                ("IOTLOAD_CLAIM_TIMEOUT", "60s".into()),
                (
                    "IOTLOAD_JSON",
                    scratch.path(&format!("c{i}.json")).display().to_string(),
                ),
            ]),
        ));
    }
    let mut loadgens = Vec::new();
    for i in 0..3 {
        loadgens.push(hosts.iotload(
            &format!("lg{i}"),
            "loadgen",
            &common_env(&[
                ("IOTLOAD_DEVICES", "4".into()),
                ("IOTLOAD_FIRST_DEVICE", "auto".into()),
                ("IOTLOAD_INSTANCE", format!("lg{i}")),
                ("IOTLOAD_ADVERTISE", "true".into()),
                // Three loadgens and three subscribed collectors.
                ("IOTLOAD_WAIT_FOR", "6".into()),
                ("IOTLOAD_RATE", "20".into()),
                ("IOTLOAD_COUNT", "20".into()),
                ("IOTLOAD_TOPIC", "mh/{device}/t".into()),
                ("IOTLOAD_ACTION_TOPIC", "mh/{device}/a".into()),
                ("IOTLOAD_CLIENT_ID", format!("mh-{i}-{{device}}")),
            ]),
        ));
    }
    for (i, l) in loadgens.into_iter().enumerate() {
        let (code, stderr) = l.finish().await;
        assert_eq!(code, Some(0), "loadgen {i}: {stderr:#?}");
    }
    for c in &mut collectors {
        c.wait_until(|l| received_at_least(l, 80), "received 80")
            .await;
    }
    for c in &collectors {
        c.interrupt();
    }
    let mut claimed = BTreeSet::new();
    for (i, c) in collectors.into_iter().enumerate() {
        assert_eq!(c.exit_code().await, Some(130), "collector {i}");
        let s = read_json(&scratch.path(&format!("c{i}.json")));
        assert_eq!(u(&s, "/receive/unique"), 80, "collector {i}: {s:#}");
        assert_eq!(u(&s, "/receive/lost"), 0, "collector {i}: {s:#}");
        // One clock: every loadgen's offset to this collector is 0 within its bound.
        let offsets = s["receive"]["clock_offsets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let named: BTreeSet<&str> = offsets
            .iter()
            .filter_map(|o| o["instance"].as_str())
            .collect();
        assert_eq!(
            named,
            BTreeSet::from(["lg0", "lg1", "lg2"]),
            "collector {i}: {s:#}"
        );
        for o in &offsets {
            let (offset, bound) = (
                o["offset_us"].as_i64().unwrap(),
                o["bound_us"].as_u64().unwrap(),
            );
            assert!(
                offset.unsigned_abs() <= bound + 2 && bound < 50_000,
                "collector {i}: offset {offset} µs outside its bound {bound} µs"
            );
        }
        let devices: Vec<u64> = s["receive"]["per_device"]
            .as_array()
            .map(|d| d.iter().filter_map(|v| v["device"].as_u64()).collect())
            .unwrap_or_default();
        assert_eq!(devices.len(), 4, "collector {i} claimed 4 topics: {s:#}");
        for d in devices {
            let topic = format!("mh/{d}/a");
            assert!(claimed.insert(topic.clone()), "{topic} was claimed twice");
        }
    }
    let expected: BTreeSet<String> = (0..12).map(|d| format!("mh/{d}/a")).collect();
    assert_eq!(claimed, expected, "every device's topic claimed once");
    echo.interrupt();
    let _ = echo.exit_code().await;

    // The plotter, on yet another host, merges what all six instances stored.
    let jsonl = scratch.path("docs.jsonl");
    let status = hosts
        .command(
            "lg0",
            env!("CARGO_BIN_EXE_iotload"),
            &["plotter"],
            &[
                ("IOTLOAD_STORE", format!("redis://{SERVER}:6379")),
                ("IOTLOAD_RUN", run_id.clone()),
                ("IOTLOAD_JSONL", jsonl.display().to_string()),
            ],
        )
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let mut per_topic: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut instances = BTreeSet::new();
    for line in std::fs::read_to_string(&jsonl).unwrap().lines() {
        let doc: Value = serde_json::from_str(line).unwrap();
        let entry = per_topic
            .entry(doc["topic"].as_str().unwrap().to_string())
            .or_default();
        entry.0 += doc["sent"].as_u64().unwrap();
        entry.1 += doc["received"].as_u64().unwrap();
        for i in doc["instances"].as_array().unwrap() {
            instances.insert(i.as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        per_topic.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "the plotter sees every topic"
    );
    for (topic, (sent, received)) in &per_topic {
        assert_eq!((*sent, *received), (20, 20), "{topic}");
    }
    let all: BTreeSet<String> = ["col0", "col1", "col2", "lg0", "lg1", "lg2"]
        .map(String::from)
        .into();
    assert_eq!(instances, all, "three loadgens and three collectors merged");

    let _ = mosquitto.kill().await;
    let _ = redis.kill().await;
}
