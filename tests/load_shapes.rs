//! Load shapes and a system with a known limit: `--stage` ramps and an echo with
//! `--capacity`, through `iotload run` on the embedded broker.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test]
async fn an_echo_with_a_capacity_queues_what_exceeds_it() {
    // 10 devices × 100/s = 1,000 msg/s for 2 s into an iPaaS that serves 500/s: the last
    // answer leaves about 4 s after the first request, about 2 s after it was sent.
    let scratch = Scratch::new();
    let json = scratch.json();
    let p = prefix("capacity");
    let topic = format!("{p}/{{device}}/req");
    let action = format!("{p}/{{device}}/act");
    let out = run(&[
        "run",
        "--devices",
        "10",
        "--rate",
        "100",
        "--duration",
        "2s",
        "--capacity",
        "500/s",
        "--drain-timeout",
        "20s",
        "--topic",
        &topic,
        "--action-topic",
        &action,
        "--json",
        &json,
    ])
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = scratch.summary();
    assert_valid_summary(&s);
    assert_eq!(u(&s, "/receive/unique"), 2_000, "{s:#}");
    assert_eq!(f(&s, "/echo/capacity_per_s"), 500.0);
    let rate = f(&s, "/receive/received_per_s");
    assert!(
        (400.0..=560.0).contains(&rate),
        "actions at {rate}/s, not 500/s: {s:#}"
    );
    let max = f(&s, "/receive/latency_ms/max");
    assert!(
        (1_500.0..=3_000.0).contains(&max),
        "max latency {max} ms, not ~2,000: {s:#}"
    );
}

#[tokio::test]
async fn stages_ramp_the_rate_and_send_what_the_ramp_integrates_to() {
    // 5 devices: 2 s flat at 20/s, then up to 100/s over 2 s = (40 + 120) × 5 messages.
    let scratch = Scratch::new();
    let json = scratch.json();
    let p = prefix("stages");
    let topic = format!("{p}/{{device}}/req");
    let action = format!("{p}/{{device}}/act");
    let out = run(&[
        "run",
        "--devices",
        "5",
        "--stage",
        "2s:20/s",
        "--stage",
        "2s:100/s",
        "--topic",
        &topic,
        "--action-topic",
        &action,
        "--json",
        &json,
    ])
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = scratch.summary();
    assert_valid_summary(&s);
    assert_eq!(u(&s, "/load/planned"), 800, "{s:#}");
    assert_eq!(u(&s, "/load/sent"), 800, "{s:#}");
    assert_eq!(u(&s, "/receive/unique"), 800, "{s:#}");
    assert_eq!(u(&s, "/receive/lost"), 0, "{s:#}");
    let bad = run(&["run", "--stage", "2s", "--broker", "mqtt://127.0.0.1:9"]).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("e.g. 30s:100/s"), "{}", bad.stderr);
}

#[tokio::test]
async fn find_max_finds_the_capacity_of_an_echo_within_one_step() {
    // An iPaaS that serves 1,000 msg/s; steps of +200 msg/s from 200: the 1,200 step
    // queues 200 msg/s more than it serves, whose p99 passes 300 ms within its 3 s.
    let scratch = Scratch::new();
    let json = scratch.json();
    let p = prefix("findmax");
    let topic = format!("{p}/{{device}}/req");
    let action = format!("{p}/{{device}}/act");
    let out = run(&[
        "run",
        "--devices",
        "10",
        "--rate",
        "20",
        "--step",
        "20",
        "--hold",
        "3s",
        "--capacity",
        "1000/s",
        "--find-max",
        "p99<300ms",
        "--drain-timeout",
        "10s",
        "--topic",
        &topic,
        "--action-topic",
        &action,
        "--json",
        &json,
    ])
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("highest rate that held"),
        "{}",
        out.stdout
    );
    let report = read_json(std::path::Path::new(&json));
    eprintln!("{report:#}");
    let max = f(&report, "/max/rate_total");
    assert!(
        (800.0..=1_000.0).contains(&max),
        "found {max} msg/s, capacity 1,000: {report:#}"
    );
    let steps = report["steps"].as_array().unwrap();
    let last = steps.last().unwrap();
    assert_eq!(
        last["passed"], false,
        "the search stops at the first failing step"
    );
    assert!(f(last, "/rate_total") <= 1_200.0, "{report:#}");
    // Whether iotload itself fell behind is judged, not assumed (a loaded CI machine may).
    assert!(report["loadgen_limited"].is_boolean(), "{report:#}");
}

#[tokio::test]
async fn a_send_slack_batches_sends_and_counts_the_wait_as_send_lag() {
    // 20 devices × 200/s on one shard per core: a send falls due every 0.25–0.5 ms per
    // shard, so with a 5 ms slack most sends wait for the next wake-up (send lag well
    // above the microseconds of a precise wake-up), none is lost, and none waits much
    // longer than the slack.
    let scratch = Scratch::new();
    let json = scratch.json();
    let p = prefix("slack");
    let topic = format!("{p}/{{device}}/req");
    let action = format!("{p}/{{device}}/act");
    let out = run(&[
        "run",
        "--devices",
        "20",
        "--rate",
        "200",
        "--duration",
        "2s",
        "--send-slack",
        "5ms",
        "--topic",
        &topic,
        "--action-topic",
        &action,
        "--store",
        "none",
        "--json",
        &json,
        EXACT_DRAIN[0],
        EXACT_DRAIN[1],
    ])
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = scratch.summary();
    assert_eq!(u(&s, "/receive/unique"), 8_000, "{s:#}");
    let p50 = f(&s, "/load/send_lag_ms/p50");
    assert!(
        p50 >= 1.0,
        "send lag p50 {p50} ms: the slack did not hold sends back"
    );
    let corrected_p50 = f(&s, "/receive/latency_corrected_ms/p50");
    let raw_p50 = f(&s, "/receive/latency_ms/p50");
    assert!(
        corrected_p50 > raw_p50,
        "the corrected latency ({corrected_p50} ms) must include the wait, raw {raw_p50} ms"
    );

    let refused = run(&["run", "--send-slack", "1s", "--store", "none"]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--send-slack"),
        "{}",
        refused.stderr
    );
}
