//! `iotload results`: list, show and export stored runs from any store backend.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use iotload_core::recorder::LatencyHistogram;
use iotload_core::store::{Backend, RunRecord, TopicSecond};
use plotter::aggregate::Cell;

/// Options of `iotload results`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ResultsArgs {
    /// The results store: sqlite://FILE, redis://HOST:PORT/DB, rediss://… (TLS) or
    /// redis+cluster://HOST1:PORT1,HOST2:PORT2/ (Redis Cluster; docs/store.md).
    #[arg(
        long,
        env = "IOTLOAD_STORE",
        value_name = "URL",
        default_value = "sqlite://iotload-results.db",
        global = true
    )]
    pub(crate) store: String,

    #[command(subcommand)]
    pub(crate) action: ResultsAction,
}

/// What to do with stored results.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum ResultsAction {
    /// Every stored run, newest first.
    List,
    /// One run: its instances and a per-topic table. RUN may be `latest`.
    Show {
        /// Run id, or `latest`.
        run: String,
    },
    /// One run's data for other tools. RUN may be `latest`.
    Export {
        /// Run id, or `latest`.
        run: String,
        /// Format: csv (per-topic per-second rows, or raw rows with --raw), json, or hdr
        /// (HdrHistogram interval log, one interval per topic and second, tagged by topic).
        #[arg(long, value_parser = ["csv", "json", "hdr"], default_value = "csv")]
        format: String,
        /// Same as --format csv.
        #[arg(long, conflicts_with_all = ["json", "hdr"])]
        csv: bool,
        /// Same as --format json.
        #[arg(long, conflicts_with_all = ["csv", "hdr"])]
        json: bool,
        /// Same as --format hdr.
        #[arg(long, conflicts_with_all = ["csv", "json"])]
        hdr: bool,
        /// Export raw per-message records (stored with --raw) instead of aggregates.
        #[arg(long)]
        raw: bool,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
}

/// Runs `iotload results …`.
pub(crate) async fn execute(args: ResultsArgs) -> anyhow::Result<()> {
    let store = iotload_core::store::open(&args.store)
        .await
        .context("opening the results store")?;
    match args.action {
        ResultsAction::List => list(store.as_ref()).await,
        ResultsAction::Show { run } => {
            let run = resolve_run(store.as_ref(), &run).await?;
            show(store.as_ref(), &run).await
        }
        ResultsAction::Export {
            run,
            format,
            csv,
            json,
            hdr,
            raw,
            out,
        } => {
            let format = match (csv, json, hdr) {
                (true, _, _) => "csv".to_string(),
                (_, true, _) => "json".to_string(),
                (_, _, true) => "hdr".to_string(),
                _ => format,
            };
            let run = resolve_run(store.as_ref(), &run).await?;
            let Some(path) = out else {
                let mut w = std::io::BufWriter::new(std::io::stdout());
                export(store.as_ref(), &run, &format, raw, &mut w).await?;
                w.flush()?;
                return Ok(());
            };
            // Written beside the target and moved over it once complete, so a failed
            // export leaves no half file under the name asked for.
            let mut partial = path.clone().into_os_string();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            let file = std::fs::File::create(&partial)
                .with_context(|| format!("cannot write {}", partial.display()))?;
            let mut w = std::io::BufWriter::new(file);
            let written = match export(store.as_ref(), &run, &format, raw, &mut w).await {
                Ok(()) => w
                    .flush()
                    .with_context(|| format!("cannot write {}", partial.display())),
                Err(e) => Err(e),
            };
            drop(w);
            if let Err(e) = written {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
            std::fs::rename(&partial, &path)
                .with_context(|| format!("cannot write {}", path.display()))
        }
    }
}

async fn resolve_run(store: &dyn Backend, run: &str) -> anyhow::Result<String> {
    if run != "latest" {
        return Ok(run.to_string());
    }
    let records = store.runs().await?;
    let mut ids = plotter::resolve_runs(store.url(), &records, &[run.to_string()])?;
    ids.pop()
        .ok_or_else(|| anyhow!("no run `{run}` in {}", store.url()))
}

fn time_of(us: u64) -> String {
    chrono::DateTime::from_timestamp_micros(us as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

async fn list(store: &dyn Backend) -> anyhow::Result<()> {
    let runs = store.runs().await?;
    if runs.is_empty() {
        println!("{} holds no runs yet", store.url());
        return Ok(());
    }
    let mut by_run: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for r in &runs {
        by_run.entry(&r.run_id).or_default().push(r);
    }
    let mut order: Vec<(&str, u64)> = by_run
        .iter()
        .map(|(id, rs)| (*id, rs.iter().map(|r| r.started_us).min().unwrap_or(0)))
        .collect();
    order.sort_by_key(|(_, started)| std::cmp::Reverse(*started));
    println!(
        "{:<28} {:<20} {:<10} components",
        "run", "started (UTC)", "instances"
    );
    for (id, started) in order {
        let rs = &by_run[id];
        let mut components: Vec<&str> = rs.iter().map(|r| r.component.as_str()).collect();
        components.sort_unstable();
        components.dedup();
        println!(
            "{id:<28} {:<20} {:<10} {}",
            time_of(started),
            rs.len(),
            components.join(",")
        );
    }
    Ok(())
}

async fn show(store: &dyn Backend, run: &str) -> anyhow::Result<()> {
    let runs: Vec<RunRecord> = store
        .runs()
        .await?
        .into_iter()
        .filter(|r| r.run_id == run)
        .collect();
    if runs.is_empty() {
        return Err(anyhow!(
            "no run `{run}` in {}; `iotload results list` shows the runs",
            store.url()
        ));
    }
    println!("run {run}");
    for r in &runs {
        println!(
            "  {:<10} {:<28} {} → {}  {}",
            r.component,
            r.instance,
            time_of(r.started_us),
            if r.ended_us == 0 {
                "running".to_string()
            } else {
                time_of(r.ended_us)
            },
            r.broker
        );
    }
    let aggregate = plotter::run_aggregate(store, run).await?;
    println!(
        "\n{:<32} {:>9} {:>9} {:>7} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "topic", "sent", "received", "lost", "dup", "reordered", "p50 ms", "p99 ms", "max ms"
    );
    for (topic, cell) in &aggregate.topics {
        print_row(topic, cell, cell.counts.lost());
    }
    if aggregate.topics.len() > 1 {
        print_row("(all topics)", &aggregate.total, aggregate.lost());
    }
    let (names, group_of) = stored_groups(&runs);
    if !names.is_empty() {
        println!(
            "\n{:<32} {:>9} {:>9} {:>7} {:>6} {:>9} {:>9} {:>9} {:>9}",
            "group", "sent", "received", "lost", "dup", "reordered", "p50 ms", "p99 ms", "max ms"
        );
        let mut cells: Vec<(Cell, u64)> = names.iter().map(|_| (Cell::default(), 0)).collect();
        for (topic, c) in &aggregate.topics {
            if let Some(&g) = group_of.get(topic) {
                let (cell, lost) = &mut cells[g];
                cell.add(c);
                *lost += c.counts.lost();
            }
        }
        for (name, (cell, lost)) in names.iter().zip(&cells) {
            print_row(name, cell, *lost);
        }
    }
    Ok(())
}

/// The device groups the run's loadgens stored (`--fleet`), in the order stored (the same
/// group stored by several instances once), and the group of each of their action topics.
fn stored_groups(runs: &[RunRecord]) -> (Vec<String>, HashMap<String, usize>) {
    let mut names: Vec<String> = Vec::new();
    let mut group_of = HashMap::new();
    for run in runs {
        let Some(list) = run.config.get("groups").and_then(|g| g.as_array()) else {
            continue;
        };
        for g in list {
            let name = g.get("name").and_then(|v| v.as_str()).unwrap_or("?");
            let first = g.get("first_device").and_then(|v| v.as_u64()).unwrap_or(0);
            let devices = g.get("devices").and_then(|v| v.as_u64()).unwrap_or(0);
            let Some(template) = g
                .get("action_topic")
                .and_then(|v| v.as_str())
                .and_then(|t| iotload_core::plan::Template::parse(t).ok())
            else {
                continue;
            };
            let index = names.iter().position(|n| n == name).unwrap_or_else(|| {
                names.push(name.to_string());
                names.len() - 1
            });
            for d in first..first + devices {
                if let Ok(d) = u32::try_from(d) {
                    group_of.insert(template.render(d), index);
                }
            }
        }
    }
    (names, group_of)
}

fn print_row(topic: &str, cell: &Cell, lost: u64) {
    let (t, s) = (cell.counts, cell.latency.stats_ms());
    println!(
        "{topic:<32} {:>9} {:>9} {:>7} {:>6} {:>9} {:>9.3} {:>9.3} {:>9.3}",
        t.sent, t.received, lost, t.duplicates, t.reordered, s.p50, s.p99, s.max
    );
}

async fn export(
    store: &dyn Backend,
    run: &str,
    format: &str,
    raw: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if raw {
        let rows = store.raw(run).await?;
        match format {
            "json" => {
                let items: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(topic, r)| serde_json::json!({ "topic": topic, "record": r }))
                    .collect();
                serde_json::to_writer_pretty(&mut *out, &items)?;
                out.write_all(b"\n")?;
            }
            "csv" => {
                let mut w = csv::Writer::from_writer(out);
                w.write_record([
                    "run_id",
                    "topic",
                    "device",
                    "seq",
                    "intended_us",
                    "sent_us",
                    "received_us",
                    "latency_us",
                ])?;
                for (topic, r) in rows {
                    w.write_record([
                        run.to_string(),
                        topic,
                        r.device.to_string(),
                        r.seq.to_string(),
                        r.intended_us.to_string(),
                        r.sent_us.to_string(),
                        r.received_us.to_string(),
                        r.received_us.saturating_sub(r.sent_us).to_string(),
                    ])?;
                }
                w.flush()?;
            }
            _ => return Err(anyhow!("raw records export as csv or json, not {format}")),
        }
        return Ok(());
    }
    // The aggregates a time slice at a time (memory follows the slice, not the run),
    // each slice in order of second, topic, instance.
    match format {
        "json" => {
            let runs: Vec<RunRecord> = store
                .runs()
                .await?
                .into_iter()
                .filter(|r| r.run_id == run)
                .collect();
            out.write_all(b"{\n\"runs\": ")?;
            serde_json::to_writer_pretty(&mut *out, &runs)?;
            out.write_all(b",\n\"seconds\": [")?;
            let mut first = true;
            each_slice(store, run, |rows| {
                for s in rows {
                    let latency =
                        LatencyHistogram::decode_stored(&s.latency_hdr).unwrap_or_default();
                    let corrected =
                        LatencyHistogram::decode_stored(&s.corrected_hdr).unwrap_or_default();
                    let item = serde_json::json!({
                        "second": s,
                        "latency_ms": latency.stats_ms(),
                        "latency_corrected_ms": corrected.stats_ms(),
                    });
                    out.write_all(if first { b"\n  " } else { b",\n  " })?;
                    first = false;
                    serde_json::to_writer(&mut *out, &item)?;
                }
                Ok(())
            })
            .await?;
            out.write_all(b"\n]}\n")?;
        }
        "csv" => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "run_id",
                "topic",
                "second",
                "instance",
                "sent",
                "received",
                "gaps",
                "duplicates",
                "reordered",
                "undecodable",
                "latency_count",
                "latency_p50_ms",
                "latency_p90_ms",
                "latency_p99_ms",
                "latency_max_ms",
                "corrected_p50_ms",
                "corrected_p99_ms",
            ])?;
            each_slice(store, run, |rows| {
                for s in rows {
                    let l = LatencyHistogram::decode_stored(&s.latency_hdr)?.stats_ms();
                    let c = LatencyHistogram::decode_stored(&s.corrected_hdr)?.stats_ms();
                    w.write_record([
                        s.run_id.clone(),
                        s.topic.clone(),
                        s.second.to_string(),
                        s.instance.clone(),
                        s.sent.to_string(),
                        s.received.to_string(),
                        s.gaps.to_string(),
                        s.duplicates.to_string(),
                        s.reordered.to_string(),
                        s.undecodable.to_string(),
                        l.count.to_string(),
                        l.p50.to_string(),
                        l.p90.to_string(),
                        l.p99.to_string(),
                        l.max.to_string(),
                        c.p50.to_string(),
                        c.p99.to_string(),
                    ])?;
                }
                Ok(())
            })
            .await?;
            w.flush()?;
        }
        _ => {
            use hdrhistogram::serialization::V2DeflateSerializer;
            use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
            let mut serializer = V2DeflateSerializer::new();
            let mut builder = IntervalLogWriterBuilder::new();
            builder.add_comment(&format!(
                "iotload run {run}: latency in µs, one interval per topic and second"
            ));
            builder.with_max_value_divisor(1000.0);
            let mut out = out;
            let mut log = builder.begin_log_with(&mut out, &mut serializer)?;
            each_slice(store, run, |rows| {
                for s in rows {
                    let h = LatencyHistogram::decode_stored(&s.latency_hdr)?;
                    if h.is_empty() {
                        continue;
                    }
                    let tag_text = plotter::export::interval_log_tag(&s.topic);
                    log.write_histogram(
                        h.inner(),
                        std::time::Duration::from_secs(s.second),
                        std::time::Duration::from_secs(1),
                        Tag::new(&tag_text),
                    )
                    .map_err(|e| anyhow!("writing the interval log: {e:?}"))?;
                }
                Ok(())
            })
            .await?;
        }
    }
    Ok(())
}

/// Calls `each` with the aggregates of run `run`, a time slice at a time in order, each
/// slice sorted by second, topic and instance.
async fn each_slice(
    store: &dyn Backend,
    run: &str,
    mut each: impl FnMut(&[TopicSecond]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Some(extent) = store.extent(run).await? else {
        return Ok(());
    };
    for (from, to) in extent.slices(plotter::ROWS_PER_SLICE) {
        let mut rows = store.seconds_between(run, from, to).await?;
        rows.sort_by(|a, b| {
            (a.second, &a.topic, &a.instance).cmp(&(b.second, &b.topic, &b.instance))
        });
        each(&rows)?;
    }
    Ok(())
}
