//! The end-of-run summary: one struct, printed as a table or written as JSON.
//!
//! The JSON form is documented by `docs/summary.schema.json`; its `schema` field names the
//! version so scripts can check what they read.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use iotload_core::recorder::LatencyStats;

/// The `schema` value of this summary format.
pub(crate) const SCHEMA: &str = "iotload-summary/1";

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunSummary {
    /// Always [`SCHEMA`].
    pub(crate) schema: &'static str,
    /// iotload's version.
    pub(crate) tool_version: &'static str,
    /// Which component ran: `run`, `loadgen`, `echo-ipaas` or `collector`.
    pub(crate) component: String,
    /// The broker (credentials redacted).
    pub(crate) broker: String,
    /// Start time, RFC 3339 UTC.
    pub(crate) started_at: String,
    /// Wall-clock seconds from start to the end of the drain.
    pub(crate) elapsed_s: f64,
    /// Whether a signal stopped the run early.
    pub(crate) interrupted: bool,
    /// What the devices sent (loadgen, run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) load: Option<LoadSection>,
    /// What the reference iPaaS did (echo-ipaas, run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) echo: Option<EchoSection>,
    /// What was received and how late (collector, run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) receive: Option<ReceiveSection>,
    /// With `--fleet`: the results of each device group, in the file's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) groups: Vec<GroupSection>,
    /// Where the results were stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) store: Option<StoreSection>,
    /// What the iotload process itself used.
    pub(crate) process: ProcessSection,
    /// Things that make the numbers less trustworthy, in plain words.
    pub(crate) warnings: Vec<String>,
    /// The `--threshold` verdicts, in the order given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) thresholds: Vec<crate::threshold::ThresholdResult>,
}

/// One device group of a `--fleet` file: what it sent and, where the collector ran in the
/// same process, what came back.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GroupSection {
    /// The group's name.
    pub(crate) name: String,
    /// Number of its first device.
    pub(crate) first_device: u32,
    /// Devices in the group.
    pub(crate) devices: u32,
    /// Peak messages per second per device.
    pub(crate) rate_per_device: f64,
    /// Messages its schedule planned.
    pub(crate) planned: u64,
    /// Messages handed to the broker client.
    pub(crate) sent: u64,
    /// Failed publishes.
    pub(crate) publish_errors: u64,
    /// Actual minus intended send time.
    pub(crate) send_lag_ms: LatencyStats,
    /// Messages received with a readable stamp, duplicates included (`run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) received: Option<u64>,
    /// Sent minus received once (`run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) lost: Option<u64>,
    /// Receive minus send time (`run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) latency_ms: Option<LatencyStats>,
    /// Receive minus intended send time (`run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) latency_corrected_ms: Option<LatencyStats>,
}

/// Where results went and whether all of them got there.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StoreSection {
    /// The store (password redacted).
    pub(crate) url: String,
    /// The run id the results are stored under.
    pub(crate) run_id: String,
    /// This instance's name in the store.
    pub(crate) instance: String,
    /// Per-topic per-second aggregates written.
    pub(crate) seconds_written: u64,
    /// Raw message records written.
    pub(crate) raw_written: u64,
    /// Records dropped because the buffer was full while the store was slow or down.
    pub(crate) dropped: u64,
    /// Records still unwritten when the final flush gave up.
    pub(crate) unflushed: u64,
    /// Failed store calls (each was retried).
    pub(crate) failures: u64,
}

/// The cost of the iotload process itself (all its components, and the embedded broker
/// when one runs).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct ProcessSection {
    /// User-mode CPU seconds.
    pub(crate) cpu_user_s: f64,
    /// Kernel-mode CPU seconds.
    pub(crate) cpu_system_s: f64,
    /// Peak resident set size, MiB.
    pub(crate) peak_rss_mib: f64,
    /// CPU µs per message this process handled (sent by loadgen, else echoed, else
    /// received).
    pub(crate) cpu_us_per_message: f64,
    /// `iotload run`: the CPU time split by component (absent for the single components,
    /// whose process is the component).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parts: Option<CpuParts>,
}

/// What each part of `iotload run` cost, CPU seconds (the text summary shows each per
/// message sent).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct CpuParts {
    /// The devices' tasks: connecting, encoding, sending, closing.
    pub(crate) loadgen_s: f64,
    /// The echo's receive-and-republish loop (0 with `--external-ipaas`).
    pub(crate) echo_s: f64,
    /// The collector's receive-and-measure loop.
    pub(crate) collector_s: f64,
    /// The embedded broker's threads, when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) embedded_broker_s: Option<f64>,
    /// The rest: the runtime waiting for and dispatching I/O events between the parts'
    /// polls, client-library tasks, progress, metrics and the results store.
    pub(crate) other_s: f64,
}

impl CpuParts {
    /// The parts measured so far (`other_s` is filled in with the process's total).
    pub(crate) fn new(
        loadgen_s: f64,
        echo_s: f64,
        collector_s: f64,
        embedded_broker_s: Option<f64>,
    ) -> Self {
        Self {
            loadgen_s: round3(loadgen_s),
            echo_s: round3(echo_s),
            collector_s: round3(collector_s),
            embedded_broker_s: embedded_broker_s.map(round3),
            other_s: 0.0,
        }
    }

    /// Fills in `other_s` as what `total_s` leaves after the measured parts.
    fn with_remainder_of(mut self, total_s: f64) -> Self {
        let measured =
            self.loadgen_s + self.echo_s + self.collector_s + self.embedded_broker_s.unwrap_or(0.0);
        self.other_s = round3((total_s - measured).max(0.0));
        self
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl ProcessSection {
    /// Reads this process's usage; `messages` is what it handled; `parts`, measured by
    /// `iotload run`, gets the remainder of the process's time as `other_s`.
    pub(crate) fn measure(messages: u64, parts: Option<CpuParts>) -> Self {
        let u = iotload_core::usage::ProcessUsage::now();
        Self {
            parts: parts.map(|p| p.with_remainder_of(u.cpu_s())),
            cpu_user_s: u.cpu_user_s,
            cpu_system_s: u.cpu_system_s,
            peak_rss_mib: (u.peak_rss_mib * 10.0).round() / 10.0,
            cpu_us_per_message: if messages == 0 {
                0.0
            } else {
                (u.cpu_s() * 1e6 / messages as f64 * 100.0).round() / 100.0
            },
        }
    }
}

/// The publishing side of a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadSection {
    /// Emulated devices requested.
    pub(crate) devices: u32,
    /// Devices that connected.
    pub(crate) connected: u32,
    /// Messages per second per device requested.
    pub(crate) rate_per_device: f64,
    /// Messages the schedule planned.
    pub(crate) planned: u64,
    /// Messages handed to the broker client.
    pub(crate) sent: u64,
    /// Messages whose publish failed.
    pub(crate) publish_errors: u64,
    /// Connections lost during the run.
    pub(crate) disconnections: u64,
    /// Seconds without a connection, summed over devices (10 devices down for 2 s: 20).
    pub(crate) disconnected_s: f64,
    /// Sent messages per second over the sending time.
    pub(crate) sent_per_s: f64,
    /// Lateness of sends behind their schedule.
    pub(crate) send_lag_ms: LatencyStats,
    /// Whether the tool fell behind its own schedule (send lag p99 above one period or 10 ms).
    pub(crate) behind: bool,
}

/// The reference iPaaS of a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EchoSection {
    /// Requests received.
    pub(crate) received: u64,
    /// Actions published.
    pub(crate) published: u64,
    /// Actions that could not be published.
    pub(crate) errors: u64,
    /// The faults it injected on purpose (`--drop`, `--duplicate`, `--reorder`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) faults: Option<InjectedFaults>,
    /// The throughput it simulated (`--capacity`), requests per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) capacity_per_s: Option<f64>,
    /// How long it held each answer (`--delay`, `--capacity` queueing, plus holds for
    /// `--reorder`), in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) delay_ms: Option<LatencyStats>,
    /// Times its delay queue was full and it stopped taking requests (`--max-delayed`).
    pub(crate) delay_queue_full: u64,
}

/// What the chaos echo did, exactly: the numbers every output must report.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct InjectedFaults {
    /// The seed of its draws (`--seed` repeats the run).
    pub(crate) seed: u64,
    /// Requests never answered.
    pub(crate) dropped: u64,
    /// Requests answered twice.
    pub(crate) duplicated: u64,
    /// Requests answered after a later one of the same topic.
    pub(crate) reordered: u64,
}

/// The receiving side of a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReceiveSection {
    /// Messages received, including duplicates.
    pub(crate) received: u64,
    /// Distinct (device, seq) pairs received.
    pub(crate) unique: u64,
    /// Messages never received: sent minus unique when the sender is known, else
    /// sequence gaps.
    pub(crate) lost: u64,
    /// Messages received more than once.
    pub(crate) duplicates: u64,
    /// Messages that arrived after a later one of the same device.
    pub(crate) reordered: u64,
    /// Messages whose stamp could not be read, by kind.
    pub(crate) undecodable: BTreeMap<String, u64>,
    /// Messages whose send time lies after their receive time (clock skew).
    pub(crate) future_stamps: u64,
    /// Connections lost during the run.
    pub(crate) disconnections: u64,
    /// Messages the broker client dropped because the collector did not keep up (NATS
    /// slow consumer). A lower bound: the client reports drops through a bounded event
    /// queue. The dropped messages also count in `lost` once their sequence gaps are seen.
    pub(crate) dropped_by_client: u64,
    /// The most bytes seen waiting unread in the receiving process's TCP sockets, sampled
    /// each second (Linux; 0 elsewhere). In `iotload run` this covers every component.
    pub(crate) socket_backlog_peak_bytes: u64,
    /// Seconds during which 32 KiB or more waited unread (from the once-a-second
    /// samples): a socket about full, the receiver behind, the latency including the wait.
    pub(crate) socket_backlog_behind_s: f64,
    /// Received messages per second.
    pub(crate) received_per_s: f64,
    /// End-to-end latency: receive time minus actual send time.
    pub(crate) latency_ms: LatencyStats,
    /// Latency corrected for coordinated omission: receive time minus intended send time.
    pub(crate) latency_corrected_ms: LatencyStats,
    /// Counts per device (with `--per-device`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) per_device: Option<Vec<DeviceCounts>>,
    /// With a shared store: this collector's clock against each loadgen's of the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) clock_offsets: Vec<iotload_core::clock_offset::ClockOffset>,
}

/// One device's sequence accounting.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeviceCounts {
    /// The device number (for string ids and topics: the collector's key for it).
    pub(crate) device: u32,
    /// The string id (or the topic, for messages without a device field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// Its counts; `gaps` are sequence numbers below its highest never received.
    #[serde(flatten)]
    pub(crate) counts: iotload_core::seq::SeqCounts,
}

impl ReceiveSection {
    /// Total undecodable messages.
    pub(crate) fn undecodable_total(&self) -> u64 {
        self.undecodable.values().sum()
    }
}

impl RunSummary {
    /// A summary with no sections yet.
    pub(crate) fn new(component: &str, broker: String, started_at: String) -> Self {
        Self {
            schema: SCHEMA,
            tool_version: env!("CARGO_PKG_VERSION"),
            component: component.to_string(),
            broker,
            started_at,
            elapsed_s: 0.0,
            interrupted: false,
            load: None,
            echo: None,
            receive: None,
            groups: Vec::new(),
            store: None,
            process: ProcessSection::default(),
            warnings: Vec::new(),
            thresholds: Vec::new(),
        }
    }

    /// Whether any threshold failed.
    pub(crate) fn thresholds_failed(&self) -> bool {
        self.thresholds.iter().any(|t| !t.passed)
    }

    /// Pretty JSON.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a summary always serialises")
    }

    /// The human-readable table.
    pub(crate) fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "iotload {} · {} · {:.1} s{}",
            self.component,
            self.broker,
            self.elapsed_s,
            if self.interrupted {
                " · interrupted"
            } else {
                ""
            }
        );
        if let Some(l) = &self.load {
            let _ = writeln!(
                o,
                "devices     {} connected of {} · {} msg/s each · {} planned",
                l.connected, l.devices, l.rate_per_device, l.planned
            );
            let _ = write!(
                o,
                "sent        {} ({:.1}/s) · publish errors {} · disconnections {}",
                l.sent, l.sent_per_s, l.publish_errors, l.disconnections
            );
            let _ = if l.disconnected_s > 0.0 {
                writeln!(
                    o,
                    " ({:.1} device-s without a connection)",
                    l.disconnected_s
                )
            } else {
                writeln!(o)
            };
            let _ = writeln!(
                o,
                "send lag    p50 {:.3} ms · p99 {:.3} ms · max {:.3} ms{}",
                l.send_lag_ms.p50,
                l.send_lag_ms.p99,
                l.send_lag_ms.max,
                if l.behind { "  (BEHIND SCHEDULE)" } else { "" }
            );
        }
        if let Some(e) = &self.echo {
            let _ = writeln!(
                o,
                "echo-ipaas  {} requests → {} actions · {} errors",
                e.received, e.published, e.errors
            );
            if let Some(f) = &e.faults {
                let _ = writeln!(
                    o,
                    "injected    dropped {} · duplicated {} · reordered {} (--seed {})",
                    f.dropped, f.duplicated, f.reordered, f.seed
                );
            }
            if let Some(d) = &e.delay_ms {
                let _ = writeln!(
                    o,
                    "delay       p50 {:.3} ms · p99 {:.3} ms · max {:.3} ms{}",
                    d.p50,
                    d.p99,
                    d.max,
                    if e.delay_queue_full > 0 {
                        format!(" · queue full {} times", e.delay_queue_full)
                    } else {
                        String::new()
                    }
                );
            }
        }
        if let Some(r) = &self.receive {
            let _ = writeln!(
                o,
                "received    {} ({:.1}/s) · lost {} · dup {} · reordered {} · undecodable {}",
                r.received,
                r.received_per_s,
                r.lost,
                r.duplicates,
                r.reordered,
                r.undecodable_total()
            );
            let _ = writeln!(
                o,
                "\nlatency ms        min       p50       p90       p99     p99.9       max"
            );
            for (name, s) in [
                ("raw", &r.latency_ms),
                ("corrected", &r.latency_corrected_ms),
            ] {
                let _ = writeln!(
                    o,
                    "{name:<10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                    s.min, s.p50, s.p90, s.p99, s.p999, s.max
                );
            }
        }
        if let Some(st) = &self.store {
            let _ = writeln!(
                o,
                "\nresults     {} · run {} · {} per-second records{} · dropped {}",
                st.url,
                st.run_id,
                st.seconds_written,
                if st.raw_written > 0 {
                    format!(" + {} raw", st.raw_written)
                } else {
                    String::new()
                },
                st.dropped + st.unflushed
            );
        }
        let p = &self.process;
        let _ = writeln!(
            o,
            "\niotload     cpu {:.2} s ({:.2} µs/msg) · peak RSS {:.1} MiB",
            p.cpu_user_s + p.cpu_system_s,
            p.cpu_us_per_message,
            p.peak_rss_mib
        );
        if let (Some(parts), Some(load)) = (&p.parts, &self.load) {
            let per_msg = |s: f64| {
                if load.sent == 0 {
                    0.0
                } else {
                    s * 1e6 / load.sent as f64
                }
            };
            let broker = parts
                .embedded_broker_s
                .map(|b| format!(" · embedded broker {:.1}", per_msg(b)))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  by part   loadgen {:.1} · echo {:.1} · collector {:.1}{broker} · runtime and other {:.1} µs/msg",
                per_msg(parts.loadgen_s),
                per_msg(parts.echo_s),
                per_msg(parts.collector_s),
                per_msg(parts.other_s),
            );
        }
        if !self.groups.is_empty() {
            let _ = writeln!(
                o,
                "\n{:<16} {:>7} {:>8} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9}",
                "group",
                "devices",
                "msg/s",
                "sent",
                "received",
                "lost",
                "p50 ms",
                "p99 ms",
                "lag p99"
            );
            let dash = || "-".to_string();
            for g in &self.groups {
                let ms = |l: &Option<LatencyStats>, f: fn(&LatencyStats) -> f64| {
                    l.as_ref().map_or_else(dash, |l| format!("{:.3}", f(l)))
                };
                let _ = writeln!(
                    o,
                    "{:<16} {:>7} {:>8.1} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9.3}",
                    g.name,
                    g.devices,
                    g.rate_per_device * f64::from(g.devices),
                    g.sent,
                    g.received.map_or_else(dash, |n| n.to_string()),
                    g.lost.map_or_else(dash, |n| n.to_string()),
                    ms(&g.latency_ms, |l| l.p50),
                    ms(&g.latency_ms, |l| l.p99),
                    g.send_lag_ms.p99
                );
            }
        }
        if let Some(devices) = self.receive.as_ref().and_then(|r| r.per_device.as_ref()) {
            let _ = writeln!(o, "\ndevice      received      gaps       dup reordered");
            for d in devices {
                let _ = writeln!(
                    o,
                    "{:<10} {:>9} {:>9} {:>9} {:>9}",
                    d.name.clone().unwrap_or_else(|| d.device.to_string()),
                    d.counts.unique,
                    d.counts.gaps,
                    d.counts.duplicates,
                    d.counts.reordered
                );
            }
        }
        if !self.thresholds.is_empty() {
            let _ = writeln!(o);
        }
        for t in &self.thresholds {
            let value = if t.value.is_nan() {
                "no value: nothing measured".to_string()
            } else {
                format!("{:.3} {}", t.value, t.unit)
            };
            let _ = writeln!(
                o,
                "threshold   {:<24} {}  ({value}){}",
                t.threshold,
                if t.passed { "pass" } else { "FAIL" },
                if t.aborted_run {
                    " · stopped the run (--abort-on-fail)"
                } else {
                    ""
                }
            );
        }
        for w in &self.warnings {
            let _ = writeln!(o, "warning: {w}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_counts_and_percentiles() {
        let mut s = RunSummary::new("run", "mqtt://127.0.0.1:1883".into(), "now".into());
        s.receive = Some(ReceiveSection {
            received: 10,
            unique: 10,
            lost: 0,
            duplicates: 0,
            reordered: 0,
            undecodable: BTreeMap::new(),
            future_stamps: 0,
            disconnections: 0,
            dropped_by_client: 0,
            socket_backlog_peak_bytes: 0,
            socket_backlog_behind_s: 0.0,
            received_per_s: 10.0,
            latency_ms: LatencyStats {
                count: 10,
                p50: 1.25,
                ..Default::default()
            },
            latency_corrected_ms: LatencyStats::default(),
            per_device: None,
            clock_offsets: Vec::new(),
        });
        let t = s.render();
        assert!(t.contains("received    10 (10.0/s) · lost 0"), "{t}");
        assert!(t.contains("raw            0.000     1.250"), "{t}");
        assert!(s.to_json().contains("\"schema\": \"iotload-summary/1\""));
    }
}
