//! Turns the components' reports into the run summary's sections.

use std::time::Duration;

use crate::summary::{
    DeviceCounts, EchoSection, GroupSection, InjectedFaults, LoadSection, ReceiveSection,
};
use collector::CollectReport;
use echo_ipaas::EchoStats;
use loadgen::{LoadPlan, LoadReport};
use std::sync::atomic::Ordering;

/// The send lag above which the tool says it fell behind its own schedule.
const BEHIND_LAG_MS: f64 = 10.0;

/// Time with a full socket from which the tool says the receiver fell behind: one
/// once-a-second sample may be a scheduling hiccup, two seconds in a run are not.
const BACKLOG_WARNING: Duration = Duration::from_secs(2);

pub(crate) fn load_section(
    plan: &LoadPlan,
    report: &LoadReport,
    warnings: &mut Vec<String>,
) -> LoadSection {
    let send_lag_ms = report.send_lag.stats_ms();
    let behind = send_lag_ms.p99 > BEHIND_LAG_MS;
    if behind {
        warnings.push(format!(
            "iotload fell behind its schedule (send lag p99 {:.3} ms > {BEHIND_LAG_MS} ms): \
             the load is lower than planned; use fewer devices or a lower rate per process, \
             or more processes",
            send_lag_ms.p99
        ));
    }
    if report.connect_failures > 0 {
        warnings.push(format!(
            "{} of {} devices could not connect (first error: {})",
            report.connect_failures,
            plan.devices,
            report.first_connect_error.as_deref().unwrap_or("unknown")
        ));
    }
    if report.errors > 0 {
        warnings.push(format!("{} publishes failed", report.errors));
    }
    let secs = report.send_elapsed.as_secs_f64();
    LoadSection {
        devices: plan.devices,
        connected: report.connected,
        rate_per_device: plan.rate_per_device(),
        planned: plan.planned(),
        sent: report.sent,
        publish_errors: report.errors,
        disconnections: report.disconnections,
        disconnected_s: report.disconnected.as_secs_f64(),
        sent_per_s: if secs > 0.0 {
            report.sent as f64 / secs
        } else {
            report.sent as f64
        },
        send_lag_ms,
        behind,
    }
}

/// One section per device group: what it sent, and with `received` (the collector of the
/// same process) what came back.
pub(crate) fn group_sections(
    plan: &LoadPlan,
    report: &LoadReport,
    received: Option<&CollectReport>,
) -> Vec<GroupSection> {
    plan.groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let sent = report.groups.get(i);
            let back = received.and_then(|r| r.groups.get(i));
            let sent_n = sent.map_or(0, |s| s.sent);
            GroupSection {
                name: g.name.clone(),
                first_device: plan.first_device + g.offset,
                devices: g.devices,
                rate_per_device: g.rate.per_s(),
                planned: g.planned(),
                sent: sent_n,
                publish_errors: sent.map_or(0, |s| s.errors),
                send_lag_ms: sent.map(|s| s.send_lag.stats_ms()).unwrap_or_default(),
                received: back.map(|b| b.received),
                lost: back.map(|b| sent_n.saturating_sub(b.unique)),
                latency_ms: back.map(|b| b.latency.stats_ms()),
                latency_corrected_ms: back.map(|b| b.latency_corrected.stats_ms()),
            }
        })
        .collect()
}

/// `plan`: the echo's plan, for what it was asked to inject.
pub(crate) fn echo_section(stats: &EchoStats, plan: &echo_ipaas::EchoPlan) -> EchoSection {
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let delays = stats.delays();
    EchoSection {
        received: n(&stats.received),
        published: n(&stats.published),
        errors: n(&stats.errors),
        faults: plan.faults.injects_faults().then(|| InjectedFaults {
            seed: plan.seed,
            dropped: n(&stats.dropped),
            duplicated: n(&stats.duplicated),
            reordered: n(&stats.reordered),
        }),
        delay_ms: (!delays.is_empty()).then(|| delays.stats_ms()),
        delay_queue_full: n(&stats.delay_queue_full),
        capacity_per_s: plan.faults.capacity,
    }
}

/// `sent`: messages known to have been sent (same process), so tail loss counts too.
pub(crate) fn receive_section(
    report: &CollectReport,
    sent: Option<u64>,
    per_device: bool,
    warnings: &mut Vec<String>,
) -> ReceiveSection {
    let lost = match sent {
        Some(sent) => sent.saturating_sub(report.seq.unique),
        None => report.seq.gaps,
    };
    let undecodable: u64 = report.undecodable.values().sum();
    if undecodable > 0 {
        warnings.push(format!(
            "{undecodable} messages had no readable stamp (by kind: {:?}); check --stamp and \
             --stamp-fields, and that the iPaaS copies the stamp fields",
            report.undecodable
        ));
    }
    if report.future_stamps > 0 {
        warnings.push(format!(
            "{} messages were stamped after they were received: the sender's clock is ahead",
            report.future_stamps
        ));
    }
    if report.dropped_by_client > 0 {
        warnings.push(format!(
            "the collector could not keep up: its broker client dropped at least {} messages \
             (slow consumer); spread the topics over more collectors (--claim N) or raise \
             --queue-capacity",
            report.dropped_by_client
        ));
    }
    if report.backlog_behind >= BACKLOG_WARNING {
        warnings.push(format!(
            "the receiver fell behind: for {:.1} s its sockets held 32 KiB or more unread \
             (peak {} KiB) and the latency includes that wait; spread the topics over more \
             collectors (--claim N) or give the collector more CPU",
            report.backlog_behind.as_secs_f64(),
            report.backlog_peak_bytes / 1024
        ));
    }
    let span = report
        .receive_span
        .max(Duration::from_millis(1))
        .as_secs_f64();
    ReceiveSection {
        received: report.received,
        unique: report.seq.unique,
        lost,
        duplicates: report.seq.duplicates,
        reordered: report.seq.reordered,
        undecodable: report.undecodable.clone(),
        future_stamps: report.future_stamps,
        disconnections: report.disconnections,
        dropped_by_client: report.dropped_by_client,
        socket_backlog_peak_bytes: report.backlog_peak_bytes,
        socket_backlog_behind_s: (report.backlog_behind.as_secs_f64() * 10.0).round() / 10.0,
        received_per_s: report.received as f64 / span,
        latency_ms: report.latency.stats_ms(),
        latency_corrected_ms: report.latency_corrected.stats_ms(),
        per_device: per_device.then(|| {
            report
                .per_device
                .iter()
                .map(|&(device, counts)| DeviceCounts {
                    device,
                    name: report.device_names.get(&device).cloned(),
                    counts,
                })
                .collect()
        }),
        clock_offsets: Vec::new(),
    }
}
