//! Feeds the live page from a results store (`iotload plotter --ui`): the per-second
//! aggregates of one run, read again every second or so while it is being recorded.
//!
//! The store holds one row per topic, second and instance, and the rows of the last
//! seconds keep changing while the writers flush; so each read compares its samples with
//! the previous read's and sends the page only what changed (a `tail`). Seconds older
//! than [`UNSETTLED_S`] before the newest are read once, a time slice at a time, and kept
//! aggregated ([`Settled`]); each read adds only the newer rows to a copy of them. The
//! feeder waits at least four times as long as a read took: a slow store is read less
//! often, never at its own expense. Once every instance of the run stored its end, the
//! run is read once more from its start (so late additions to old seconds count), the
//! numbers are final and only the run list is read again (to move on when `latest`
//! becomes a newer run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use iotload_core::store::{Backend, RunExtent, Store};
use plotter::PlotterError;
use plotter::aggregate::{MessageCounts, RunAggregate, RunAggregator};
use tokio_util::sync::CancellationToken;

use super::sample::{LoadSample, ReceiveSample, Sample, TopicRow};
use super::{HISTORY, Page, PageInfo, StoreState};

/// How often the store is read, at most.
const POLL: Duration = Duration::from_secs(1);

/// The feeder waits at least this many times as long as its last read took.
const READ_SHARE: u32 = 4;

/// Seconds this close to the newest stored one are read again at every read: writers
/// are still adding to them (a collector's rows follow its messages' send times).
const UNSETTLED_S: u64 = 30;

/// The seconds of the followed run that no longer change, aggregated once.
struct Settled {
    run_id: String,
    run: RunAggregator,
}

impl Settled {
    /// The aggregates of run `id` as they stand now: the settled seconds grow first, then
    /// the newer ones are added to a copy. `ended`: the run is over, read it all again.
    async fn read(
        settled: &mut Option<Settled>,
        store: &dyn Store,
        id: &str,
        ended: bool,
    ) -> Result<RunAggregate, PlotterError> {
        let Some(extent) = store.extent(id).await? else {
            *settled = None;
            return Ok(RunAggregator::new(id, None).finish());
        };
        if ended || settled.as_ref().is_some_and(|s| s.run_id != id) {
            *settled = None;
        }
        let s = settled.get_or_insert_with(|| {
            // Open-ended: the run grows while it is followed.
            let open = RunExtent {
                last: u64::MAX,
                ..extent.clone()
            };
            Settled {
                run_id: id.to_string(),
                run: RunAggregator::new(id, Some(&open)),
            }
        });
        let settle_to = match ended {
            true => extent.last,
            false => extent.last.saturating_sub(UNSETTLED_S),
        };
        add_seconds(store, id, &extent, &mut s.run, settle_to).await?;
        let mut now = s.run.clone();
        add_seconds(store, id, &extent, &mut now, extent.last).await?;
        Ok(now.finish())
    }
}

/// Reads the seconds from `run`'s next one through `to` into it, a slice at a time.
async fn add_seconds(
    store: &dyn Store,
    id: &str,
    extent: &RunExtent,
    run: &mut RunAggregator,
    to: u64,
) -> Result<(), PlotterError> {
    if to < run.next_second() {
        return Ok(());
    }
    let part = RunExtent {
        topics: extent.topics.clone(),
        first: run.next_second(),
        last: to,
    };
    for (from, to) in part.slices(plotter::ROWS_PER_SLICE) {
        let rows = store.seconds_between(id, from, to).await?;
        run.add_slice::<PlotterError>(rows, to, |_| Ok(()))?;
    }
    Ok(())
}

/// What the page says before a run is found.
pub(super) fn waiting_info(url: &str) -> PageInfo {
    PageInfo {
        component: "plotter".into(),
        broker: String::new(),
        run_id: None,
        thresholds: Vec::new(),
        version: env!("CARGO_PKG_VERSION"),
        source: "store",
        store: Some(StoreState {
            url: url.to_string(),
            state: "waiting",
            problem: None,
        }),
    }
}

/// What the page shows now.
#[derive(Default)]
struct Shown {
    info: Option<PageInfo>,
    /// Every second of the run, as JSON (the page keeps the last [`HISTORY`]).
    samples: Vec<Arc<str>>,
    /// The run was read after every instance stored its end: its numbers are final.
    finished: bool,
}

impl Shown {
    /// Shows `info` and `samples`, sending the page only what changed.
    fn show(&mut self, page: &Page, info: PageInfo, samples: Vec<Arc<str>>) {
        if self.info.as_ref() != Some(&info) {
            page.reset(&info, window(&samples));
        } else {
            let common = self
                .samples
                .iter()
                .zip(&samples)
                .take_while(|(a, b)| a == b)
                .count();
            let page_start = self.samples.len().saturating_sub(HISTORY);
            if common == self.samples.len() && common == samples.len() {
                // Nothing changed.
            } else if common >= page_start {
                page.replace_tail(common - page_start, &samples[common..]);
            } else {
                page.reset(&info, window(&samples));
            }
        }
        self.info = Some(info);
        self.samples = samples;
    }

    /// Shows that the last read failed, keeping what was shown.
    fn problem(&mut self, page: &Page, url: &str, problem: String) {
        let mut info = self.info.clone().unwrap_or_else(|| waiting_info(url));
        if let Some(s) = &mut info.store {
            s.problem = Some(problem);
        }
        let samples = self.samples.clone();
        self.show(page, info, samples);
    }
}

/// The last [`HISTORY`] samples.
fn window(samples: &[Arc<str>]) -> &[Arc<str>] {
    &samples[samples.len().saturating_sub(HISTORY)..]
}

/// Reads the store until `stop`: `wanted` is a run id or `latest`.
pub(super) async fn follow(
    store: Arc<dyn Backend>,
    wanted: String,
    page: Page,
    stop: CancellationToken,
) {
    let mut shown = Shown::default();
    let mut settled = None;
    loop {
        let began = Instant::now();
        if let Err(e) = read(store.as_ref(), &wanted, &page, &mut shown, &mut settled).await {
            tracing::warn!("the live page cannot read {}: {e}", store.url());
            shown.problem(&page, store.url(), e.to_string());
        }
        let wait = POLL.max(began.elapsed() * READ_SHARE);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One read of the store into the page.
async fn read(
    store: &dyn Backend,
    wanted: &str,
    page: &Page,
    shown: &mut Shown,
    settled: &mut Option<Settled>,
) -> Result<(), PlotterError> {
    let records = store.runs().await?;
    let id = match wanted {
        "latest" => records.first().map(|r| r.run_id.clone()),
        id => Some(id.to_string()),
    };
    let instances: Vec<_> = records
        .iter()
        .filter(|r| Some(&r.run_id) == id.as_ref())
        .collect();
    let (Some(id), Some(first)) = (id, instances.first()) else {
        let mut info = waiting_info(store.url());
        if wanted != "latest"
            && let Some(s) = &mut info.store
        {
            s.problem = Some(format!("no run `{wanted}` in the store yet"));
        }
        shown.finished = false;
        shown.show(page, info, Vec::new());
        return Ok(());
    };
    let ended = instances.iter().all(|r| r.ended_us > 0);
    let info = PageInfo {
        component: "plotter".into(),
        broker: first.broker.clone(),
        run_id: Some(id.clone()),
        thresholds: Vec::new(),
        version: env!("CARGO_PKG_VERSION"),
        source: "store",
        store: Some(StoreState {
            url: store.url().to_string(),
            state: if ended { "ended" } else { "recording" },
            problem: None,
        }),
    };
    if shown.finished && shown.info.as_ref() == Some(&info) {
        return Ok(());
    }
    let aggregate = Settled::read(settled, store, &id, ended).await?;
    let samples = samples_of(&aggregate)
        .iter()
        .filter_map(|s| serde_json::to_string(s).ok())
        .map(Arc::from)
        .collect();
    shown.show(page, info, samples);
    shown.finished = ended;
    if ended || page.topics_wanted() {
        page.set_topics(&topic_rows(&aggregate));
    }
    Ok(())
}

/// One sample per stored second, `t` counted from the run's first second. Totals add up
/// the seconds so far; latency over the whole run is only known for the newest one.
fn samples_of(run: &RunAggregate) -> Vec<Sample> {
    let first = run.seconds.first().map_or(0, |s| s.second);
    let newest = run.seconds.len().saturating_sub(1);
    let whole = run.total.latency.stats_ms();
    let mut totals = MessageCounts::default();
    run.seconds
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let c = s.stats.counts;
            totals += c;
            let l = &s.stats.latency_ms;
            let overall = |v: f64| (i == newest).then_some(v);
            Sample {
                t: s.second.saturating_sub(first) as f64,
                load: Some(LoadSample {
                    devices: None,
                    connected: None,
                    sent: totals.sent,
                    sent_per_s: c.sent as f64,
                    publish_errors: None,
                    send_lag_ms: None,
                }),
                echo: None,
                receive: Some(ReceiveSample {
                    received_per_s: c.received,
                    p50_ms: l.p50,
                    p90_ms: l.p90,
                    p99_ms: l.p99,
                    p999_ms: l.p999,
                    max_ms: l.max,
                    corrected_p99_ms: s.stats.latency_corrected_ms.p99,
                    received: totals.received,
                    unique: totals.unique(),
                    open_gaps: totals.open_gaps(),
                    duplicates: totals.duplicates,
                    reordered: totals.reordered,
                    undecodable: totals.undecodable,
                    total_p50_ms: overall(whole.p50),
                    total_p99_ms: overall(whole.p99),
                    total_max_ms: overall(whole.max),
                }),
            }
        })
        .collect()
}

/// Every topic's totals, busiest first.
fn topic_rows(run: &RunAggregate) -> Vec<TopicRow> {
    let mut rows: Vec<TopicRow> = run
        .topics
        .iter()
        .map(|(topic, cell)| {
            let l = cell.latency.stats_ms();
            TopicRow {
                topic: topic.clone(),
                received: cell.counts.received,
                p50_ms: l.p50,
                p99_ms: l.p99,
                max_ms: l.max,
                corrected_p99_ms: cell.corrected.stats_ms().p99,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.received.cmp(&a.received).then(a.topic.cmp(&b.topic)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live_page::{Shared, lock};
    use iotload_core::recorder::{SecondSamples, second_scratch};
    use iotload_core::store::TopicSecond;

    fn page() -> Page {
        Arc::new(Shared::new(&waiting_info("sqlite://x.db")).unwrap())
    }

    fn texts(items: &[u32]) -> Vec<Arc<str>> {
        items.iter().map(|i| Arc::from(i.to_string())).collect()
    }

    /// The newest change: (count, event, data), and the page's samples.
    fn last(page: &Page) -> (u64, &'static str, String, Vec<String>) {
        let u = page.latest.borrow().clone();
        let history = lock(&page.history).iter().map(|s| s.to_string()).collect();
        (u.seq, u.event, u.data.to_string(), history)
    }

    fn recording(run: &str) -> PageInfo {
        let mut info = waiting_info("sqlite://x.db");
        info.run_id = Some(run.into());
        info
    }

    #[test]
    fn only_what_changed_reaches_the_page() {
        let page = page();
        let mut shown = Shown::default();
        shown.show(&page, recording("r1"), texts(&[1, 2]));
        assert_eq!(
            last(&page),
            (1, "info", String::new(), vec!["1".into(), "2".into()])
        );
        // The same read again: nothing to send.
        shown.show(&page, recording("r1"), texts(&[1, 2]));
        assert_eq!(last(&page).0, 1);
        // The last second grew and a new one came: both, as a tail.
        shown.show(&page, recording("r1"), texts(&[1, 20, 3]));
        let (seq, event, data, history) = last(&page);
        assert_eq!((seq, event, data.as_str()), (2, "tail", "[20,3]"));
        assert_eq!(history, ["1", "20", "3"]);
        // A newer run: start over.
        shown.show(&page, recording("r2"), texts(&[7]));
        assert_eq!(last(&page), (3, "info", String::new(), vec!["7".into()]));
        // A failed read keeps the samples and says why; the next good read clears it.
        shown.problem(&page, "sqlite://x.db", "locked".into());
        let (seq, event, _, history) = last(&page);
        assert_eq!((seq, event, history), (4, "info", vec!["7".to_string()]));
        assert!(lock(&page.info).contains("locked"));
        shown.problem(&page, "sqlite://x.db", "locked".into());
        assert_eq!(last(&page).0, 4, "the same problem again changes nothing");
        shown.show(&page, recording("r2"), texts(&[7]));
        assert_eq!(last(&page).0, 5);
        assert!(!lock(&page.info).contains("locked"));
    }

    #[test]
    fn a_run_longer_than_the_page_keeps_its_last_seconds() {
        let page = page();
        let mut shown = Shown::default();
        let n = HISTORY as u32 + 10;
        shown.show(&page, recording("r"), texts(&(0..n).collect::<Vec<_>>()));
        assert_eq!(lock(&page.history).len(), HISTORY);
        assert_eq!(
            lock(&page.history).front().map(|s| s.to_string()),
            Some("10".into())
        );
        let mut next: Vec<u32> = (0..n).collect();
        next.push(n);
        shown.show(&page, recording("r"), texts(&next));
        let (_, event, data, history) = last(&page);
        assert_eq!((event, data), ("tail", format!("[{n}]")));
        assert_eq!(history.len(), HISTORY);
        assert_eq!(history.first().map(String::as_str), Some("11"));
        assert_eq!(history.last(), Some(&n.to_string()));
    }

    fn row(topic: &str, second: u64, sent: u64, latencies_us: &[u64]) -> TopicSecond {
        let mut samples = SecondSamples::default();
        for &v in latencies_us {
            samples.record(v, v);
        }
        let (latency_hdr, corrected_hdr) = samples.take_encoded(&mut second_scratch());
        TopicSecond {
            run_id: "r".into(),
            topic: topic.into(),
            second,
            instance: "i".into(),
            sent,
            received: latencies_us.len() as u64,
            duplicates: 1,
            latency_hdr,
            corrected_hdr,
            ..TopicSecond::default()
        }
    }

    #[test]
    fn samples_add_up_the_stored_seconds() {
        let rows = vec![
            row("a", 100, 3, &[1_000, 2_000]),
            row("b", 100, 1, &[3_000]),
            row("a", 102, 2, &[10_000, 20_000]),
        ];
        let run =
            plotter::aggregate::aggregate::<plotter::aggregate::AggregateError>("r", rows, |_| {
                Ok(())
            })
            .unwrap();
        let samples = samples_of(&run);
        let t: Vec<f64> = samples.iter().map(|s| s.t).collect();
        assert_eq!(t, [0.0, 1.0, 2.0], "one sample per second, gaps included");
        let load: Vec<(u64, f64)> = samples
            .iter()
            .map(|s| s.load.as_ref().map(|l| (l.sent, l.sent_per_s)).unwrap())
            .collect();
        assert_eq!(load, [(4, 4.0), (4, 0.0), (6, 2.0)]);
        let r: Vec<&ReceiveSample> = samples.iter().filter_map(|s| s.receive.as_ref()).collect();
        assert_eq!(
            r.iter()
                .map(|r| (r.received_per_s, r.received, r.unique, r.duplicates))
                .collect::<Vec<_>>(),
            [(3, 3, 1, 2), (0, 3, 1, 2), (2, 5, 2, 3)]
        );
        assert!((r[2].p50_ms - 10.0).abs() < 0.2, "{}", r[2].p50_ms);
        assert!(r[0].total_p99_ms.is_none() && r[1].total_max_ms.is_none());
        let max = r[2].total_max_ms.unwrap();
        assert!((max - 20.0).abs() < 0.2, "{max}");
        let topics: Vec<(String, u64)> = topic_rows(&run)
            .into_iter()
            .map(|t| (t.topic, t.received))
            .collect();
        assert_eq!(topics, [("a".to_string(), 4), ("b".to_string(), 1)]);
    }
}
