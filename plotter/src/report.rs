//! The HTML report: one self-contained file (inline CSS and SVG charts, no script, no
//! external resource), so it opens offline and can be mailed or archived as is.
//!
//! With several runs, the first is the baseline: charts overlay the runs on one time axis
//! (seconds since each run's first second) and a table gives the difference per
//! percentile, which is the latency the iPaaS or broker of the other run adds.

use std::fmt::Write as _;

use iotload_core::recorder::{LatencyHistogram, LatencyStats};
use iotload_core::store::RunRecord;

use crate::aggregate::{Cell, CellStats, RunAggregate, SecondStats};
use crate::charts::{
    BLUE_, Chart, ChartError, GREEN_, Line, ORANGE_, PURPLE_, RED_, RUN_COLOURS, XAxis,
};

/// One run as the report shows it.
pub struct RunReport {
    /// The aggregates.
    pub aggregate: RunAggregate,
    /// Its run records (one per component instance).
    pub records: Vec<RunRecord>,
}

/// The report as one HTML document.
pub fn render(runs: &[RunReport], generated: &str) -> Result<String, ChartError> {
    let mut h = String::with_capacity(64 * 1024);
    let title = match runs {
        [one] => format!("iotload report · {}", one.aggregate.run_id),
        _ => format!("iotload report · {} runs compared", runs.len()),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n\
         <p class=\"meta\">generated {} by iotload {}</p>\n",
        esc(&title),
        esc(&title),
        esc(generated),
        env!("CARGO_PKG_VERSION"),
    );
    runs_section(&mut h, runs);
    if runs.len() > 1 {
        comparison_section(&mut h, runs);
    }
    h.push_str("<h2 id=\"charts\">Charts</h2>\n");
    for (id, chart) in charts(runs) {
        let svg = chart.svg()?;
        let _ = write!(
            h,
            "<figure class=\"chart\" id=\"{id}\">\n{svg}\n</figure>\n"
        );
    }
    topics_section(&mut h, runs);
    config_section(&mut h, runs);
    h.push_str("</body>\n</html>\n");
    Ok(h)
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em auto;max-width:1060px;color:#222;\
padding:0 1em}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}\
h3{font-size:1em}table{border-collapse:collapse;margin:.5em 0 1em;font-size:.85em}\
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:right}th{background:#f4f4f4}\
td.l,th.l{text-align:left}figure.chart{margin:1em 0}figure.chart svg{max-width:100%;height:auto}\
.meta{color:#666;font-size:.85em}.pos{color:#b22}.neg{color:#272}\
.scroll{max-height:32em;overflow:auto}";

/// Picks one value out of latency statistics.
type Pick = fn(&LatencyStats) -> f64;

/// The percentiles the tables show, with their labels.
const PERCENTILES: [(&str, Pick); 7] = [
    ("min", |s| s.min),
    ("mean", |s| s.mean),
    ("p50", |s| s.p50),
    ("p90", |s| s.p90),
    ("p99", |s| s.p99),
    ("p99.9", |s| s.p999),
    ("max", |s| s.max),
];

fn runs_section(h: &mut String, runs: &[RunReport]) {
    h.push_str(
        "<h2 id=\"runs\">Runs</h2>\n<table id=\"runs-table\">\n<tr><th class=\"l\">run</th>\
                <th class=\"l\">started (UTC)</th><th>seconds</th><th>topics</th><th>sent</th>\
                <th>received</th><th>lost</th><th>duplicates</th><th>reordered</th>\
                <th>undecodable</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th>\
                <th>corrected p99 ms</th></tr>\n",
    );
    for (i, run) in runs.iter().enumerate() {
        let a = &run.aggregate;
        let s = a.total.stats();
        let c = s.counts;
        let started = run.records.iter().map(|r| r.started_us).min().unwrap_or(0);
        let role = if i == 0 && runs.len() > 1 {
            " (baseline)"
        } else {
            ""
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}{role}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.run_id),
            time_of(started),
            a.span_s(),
            a.topics.len(),
            c.sent,
            c.received,
            a.lost(),
            c.duplicates,
            c.reordered,
            c.undecodable,
            ms(s.latency_ms.p50),
            ms(s.latency_ms.p99),
            ms(s.latency_ms.max),
            ms(s.latency_corrected_ms.p99),
        );
    }
    h.push_str("</table>\n");
}

fn comparison_section(h: &mut String, runs: &[RunReport]) {
    let base = runs[0].aggregate.total.stats();
    let _ = writeln!(
        h,
        "<h2 id=\"comparison\">Difference from the baseline</h2>\n<p>Baseline: <b>{}</b>. \
         Each other run's latency minus the baseline's, per percentile: what its iPaaS or \
         broker adds (negative: it is faster).</p>",
        esc(&runs[0].aggregate.run_id)
    );
    for (kind, pick) in [
        (
            "latency",
            (|s: &CellStats| s.latency_ms) as fn(&CellStats) -> LatencyStats,
        ),
        ("corrected latency", |s: &CellStats| s.latency_corrected_ms),
    ] {
        let id = if kind == "latency" {
            "comparison-raw"
        } else {
            "comparison-corrected"
        };
        let _ = write!(
            h,
            "<h3>{kind} (ms)</h3>\n<table id=\"{id}\">\n<tr><th class=\"l\">percentile</th>\
             <th>{} (baseline)</th>",
            esc(&runs[0].aggregate.run_id)
        );
        for run in &runs[1..] {
            let id = esc(&run.aggregate.run_id);
            let _ = write!(h, "<th>{id}</th><th>difference</th><th>difference %</th>");
        }
        h.push_str("</tr>\n");
        let b = pick(&base);
        for (name, get) in PERCENTILES {
            let _ = write!(h, "<tr><td class=\"l\">{name}</td><td>{}</td>", ms(get(&b)));
            for run in &runs[1..] {
                let v = get(&pick(&run.aggregate.total.stats()));
                let d = v - get(&b);
                let class = if d > 0.0 { "pos" } else { "neg" };
                let pct = if get(&b) > 0.0 {
                    format!("{:+.1}%", 100.0 * d / get(&b))
                } else {
                    "-".into()
                };
                let _ = write!(
                    h,
                    "<td>{}</td><td class=\"{class}\">{:+.3}</td><td class=\"{class}\">{pct}</td>",
                    ms(v),
                    d
                );
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }
}

fn topics_section(h: &mut String, runs: &[RunReport]) {
    h.push_str("<h2 id=\"topics\">Per topic</h2>\n");
    for run in runs {
        let _ = write!(
            h,
            "<h3>{}</h3>\n<div class=\"scroll\"><table class=\"topics\">\n<tr><th class=\"l\">topic\
             </th><th>sent</th><th>received</th><th>lost</th><th>duplicates</th>\
             <th>reordered</th><th>undecodable</th><th>p50 ms</th><th>p90 ms</th>\
             <th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>corrected p50 ms</th>\
             <th>corrected p99 ms</th></tr>\n",
            esc(&run.aggregate.run_id)
        );
        for (topic, cell) in &run.aggregate.topics {
            topic_row(h, topic, cell, cell.counts.lost());
        }
        if run.aggregate.topics.len() > 1 {
            let total = &run.aggregate.total;
            topic_row(h, "(all topics)", total, run.aggregate.lost());
        }
        h.push_str("</table></div>\n");
    }
}

fn topic_row(h: &mut String, topic: &str, cell: &Cell, lost: u64) {
    let s = cell.stats();
    let (c, l, k) = (s.counts, s.latency_ms, s.latency_corrected_ms);
    let _ = writeln!(
        h,
        "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td></tr>",
        esc(topic),
        c.sent,
        c.received,
        lost,
        c.duplicates,
        c.reordered,
        c.undecodable,
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p999),
        ms(l.max),
        ms(k.p50),
        ms(k.p99),
    );
}

fn config_section(h: &mut String, runs: &[RunReport]) {
    h.push_str("<h2 id=\"configuration\">Configuration</h2>\n");
    for run in runs {
        let _ = writeln!(h, "<h3>{}</h3>", esc(&run.aggregate.run_id));
        if run.records.is_empty() {
            h.push_str("<p>No run records are stored for this run.</p>\n");
        }
        for r in &run.records {
            let ended = if r.ended_us == 0 {
                "running".to_string()
            } else {
                time_of(r.ended_us)
            };
            let _ = write!(
                h,
                "<table class=\"config\">\n<tr><th class=\"l\" colspan=\"2\">{} · {}</th></tr>\n\
                 <tr><td class=\"l\">started → ended (UTC)</td><td class=\"l\">{} → {}</td></tr>\n\
                 <tr><td class=\"l\">broker</td><td class=\"l\">{}</td></tr>\n\
                 <tr><td class=\"l\">iotload version</td><td class=\"l\">{}</td></tr>\n",
                esc(&r.component),
                esc(&r.instance),
                time_of(r.started_us),
                ended,
                esc(&r.broker),
                esc(&r.tool_version),
            );
            if let Some(options) = r.config.as_object() {
                for (key, value) in options {
                    let text = match value {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let _ = writeln!(
                        h,
                        "<tr><td class=\"l\">--{}</td><td class=\"l\">{}</td></tr>",
                        esc(key),
                        esc(&text)
                    );
                }
            }
            h.push_str("</table>\n");
        }
    }
}

/// The charts with their element ids.
fn charts(runs: &[RunReport]) -> Vec<(&'static str, Chart)> {
    let label = |what: &str, i: usize| {
        if runs.len() > 1 {
            format!("{what} · {}", runs[i].aggregate.run_id)
        } else {
            what.to_string()
        }
    };
    let series =
        |pick: &dyn Fn(&SecondStats) -> Option<f64>, what: &str, colour, lines: &mut Vec<Line>| {
            for (i, run) in runs.iter().enumerate() {
                let first = run.aggregate.seconds.first().map_or(0, |s| s.second);
                lines.push(Line {
                    label: label(what, i),
                    colour,
                    dash: i,
                    points: run
                        .aggregate
                        .seconds
                        .iter()
                        .filter_map(|s| pick(s).map(|v| ((s.second - first) as f64, v)))
                        .collect(),
                });
            }
        };
    let percentile_colours = [
        ("p50", BLUE_),
        ("p90", GREEN_),
        ("p99", ORANGE_),
        ("max", RED_),
    ];
    let latency_chart = |corrected: bool| {
        let mut lines = Vec::new();
        for (what, colour) in percentile_colours {
            let pick = move |s: &SecondStats| {
                let l = if corrected {
                    s.stats.latency_corrected_ms
                } else {
                    s.stats.latency_ms
                };
                (l.count > 0).then_some(match what {
                    "p50" => l.p50,
                    "p90" => l.p90,
                    "p99" => l.p99,
                    _ => l.max,
                })
            };
            series(&pick, what, colour, &mut lines);
        }
        Chart {
            title: if corrected {
                "Corrected latency (receive − intended send) per second".into()
            } else {
                "Latency (receive − send) per second".into()
            },
            x: XAxis::Seconds,
            y_desc: "ms (log scale)".into(),
            y_log: true,
            lines,
        }
    };
    let mut throughput = Vec::new();
    series(
        &|s| Some(s.stats.counts.sent as f64),
        "sent",
        BLUE_,
        &mut throughput,
    );
    series(
        &|s| Some(s.stats.counts.received as f64),
        "received",
        GREEN_,
        &mut throughput,
    );
    let mut integrity = Vec::new();
    series(
        &|s| Some(s.stats.counts.gaps as f64),
        "gaps",
        RED_,
        &mut integrity,
    );
    series(
        &|s| Some(s.stats.counts.duplicates as f64),
        "duplicates",
        PURPLE_,
        &mut integrity,
    );
    series(
        &|s| Some(s.stats.counts.reordered as f64),
        "reordered",
        ORANGE_,
        &mut integrity,
    );
    let mut distribution = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let colour = RUN_COLOURS[i % RUN_COLOURS.len()];
        let id = &run.aggregate.run_id;
        distribution.push(Line {
            label: format!("{id} latency"),
            colour,
            dash: 0,
            points: percentile_curve(&run.aggregate.total.latency),
        });
        distribution.push(Line {
            label: format!("{id} corrected"),
            colour,
            dash: 1,
            points: percentile_curve(&run.aggregate.total.corrected),
        });
    }
    vec![
        ("latency-raw", latency_chart(false)),
        ("latency-corrected", latency_chart(true)),
        (
            "throughput",
            Chart {
                title: "Throughput: messages sent and received per second".into(),
                x: XAxis::Seconds,
                y_desc: "messages/s".into(),
                y_log: false,
                lines: throughput,
            },
        ),
        (
            "integrity",
            Chart {
                title: "Lost, duplicate and reordered messages per second".into(),
                x: XAxis::Seconds,
                y_desc: "messages/s".into(),
                y_log: false,
                lines: integrity,
            },
        ),
        (
            "distribution",
            Chart {
                title: "Latency by percentile, whole run (HdrHistogram percentile plot)".into(),
                x: XAxis::Percentile,
                y_desc: "ms".into(),
                y_log: false,
                lines: distribution,
            },
        ),
    ]
}

/// The histogram's percentile curve: (1/(1-p), latency ms), ending at the maximum.
pub(crate) fn percentile_curve(h: &LatencyHistogram) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = Vec::new();
    if h.is_empty() {
        return points;
    }
    let last_x = (h.len() as f64).max(10.0);
    for v in h.inner().iter_quantiles(4) {
        let q = v.quantile_iterated_to();
        let x = if q >= 1.0 {
            last_x
        } else {
            (1.0 / (1.0 - q)).min(last_x)
        };
        let y = h.inner().highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
        points.push((x, y));
    }
    points
}

fn ms(v: f64) -> String {
    format!("{v:.3}")
}

fn time_of(us: u64) -> String {
    i64::try_from(us)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::aggregate;
    use iotload_core::recorder::{SecondSamples, second_scratch};
    use iotload_core::store::TopicSecond;

    fn run(id: &str, base_us: u64) -> RunReport {
        let mut rows = Vec::new();
        for second in 0..3 {
            for topic in ["a/<1>", "b"] {
                let mut samples = SecondSamples::default();
                for k in 0..50 {
                    samples.record(base_us + k * 10, base_us + k * 20);
                }
                let (latency_hdr, corrected_hdr) = samples.take_encoded(&mut second_scratch());
                rows.push(TopicSecond {
                    run_id: id.into(),
                    topic: topic.into(),
                    second: 1_700_000_000 + second,
                    instance: "i".into(),
                    sent: 50,
                    received: 50,
                    latency_hdr,
                    corrected_hdr,
                    ..TopicSecond::default()
                });
            }
        }
        let aggregate = aggregate::<crate::aggregate::AggregateError>(id, rows, |_| Ok(()))
            .expect("rows decode");
        RunReport {
            aggregate,
            records: vec![RunRecord {
                run_id: id.into(),
                component: "run".into(),
                instance: "host-1".into(),
                started_us: 1_700_000_000_000_000,
                ended_us: 1_700_000_003_000_000,
                tool_version: "0.1.0".into(),
                broker: "mqtt://127.0.0.1:1883".into(),
                config: serde_json::json!({ "rate": "10", "topic": "<x>" }),
            }],
        }
    }

    #[test]
    fn one_run_has_every_section_and_escapes_text() {
        let html = render(&[run("r1", 1_000)], "now").unwrap();
        for id in [
            "latency-raw",
            "latency-corrected",
            "throughput",
            "integrity",
            "distribution",
            "runs-table",
            "topics",
            "configuration",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert_eq!(html.matches("<svg").count(), 5);
        assert!(html.contains("a/&lt;1&gt;"));
        assert!(html.contains("&lt;x&gt;"));
        assert!(!html.contains("comparison"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn two_runs_get_a_difference_table_against_the_first() {
        let html = render(&[run("base", 1_000), run("ipaas", 3_000)], "now").unwrap();
        assert!(html.contains("id=\"comparison-raw\""));
        assert!(html.contains("id=\"comparison-corrected\""));
        assert!(html.contains("base (baseline)"));
        // p50 moves by about 2 ms: shown as a positive difference.
        let row = html
            .split("<tr><td class=\"l\">p50</td>")
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap();
        assert!(row.contains("class=\"pos\">+2.0"), "{row}");
    }

    #[test]
    fn percentile_curve_rises_to_the_maximum() {
        let mut h = LatencyHistogram::new();
        for v in 1..=1000 {
            h.record(v * 1000);
        }
        let curve = percentile_curve(&h);
        assert!(curve.len() > 5);
        assert!(
            curve
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
        );
        let last = curve.last().unwrap();
        assert!((last.1 - 1000.0).abs() < 1.0, "{last:?}");
    }
}
