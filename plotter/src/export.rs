//! File exports for people who plot elsewhere: JSON Lines (`--jsonl`), CSV (`--csv`) and
//! an HdrHistogram interval log (`--hlog`), all written while a run is aggregated, one
//! (second, topic) cell at a time, so a long run never has to fit in memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use iotload_core::recorder::{LatencyHistogram, LatencyStats};

use crate::aggregate::TopicSecondStats;
use crate::document::iso8601;
use crate::{PlotterError, write_error};

/// The CSV header: one column per document field, latency objects flattened.
pub const CSV_HEADER: &str = "timestamp,run_id,topic,instances,sent,received,gaps,duplicates,\
reordered,undecodable,latency_count,latency_min_ms,latency_mean_ms,latency_p50_ms,\
latency_p90_ms,latency_p99_ms,latency_p999_ms,latency_max_ms,corrected_count,\
corrected_min_ms,corrected_mean_ms,corrected_p50_ms,corrected_p90_ms,corrected_p99_ms,\
corrected_p999_ms,corrected_max_ms";

/// The export files being written.
pub struct Exports {
    jsonl: Option<Output<BufWriter<File>>>,
    csv: Option<Output<csv::Writer<File>>>,
    hlog: Option<Output<HlogState>>,
}

struct Output<W> {
    path: PathBuf,
    out: W,
}

/// The interval log and the second being merged across topics.
struct HlogState {
    out: BufWriter<File>,
    serializer: V2DeflateSerializer,
    second: Option<u64>,
    raw: LatencyHistogram,
    corrected: LatencyHistogram,
}

impl Exports {
    /// Creates the files that are asked for (each `None` is skipped).
    pub fn create(
        jsonl: Option<&Path>,
        csv: Option<&Path>,
        hlog: Option<&Path>,
    ) -> Result<Self, PlotterError> {
        let open = |path: &Path| File::create(path).map_err(|e| write_error(path, e));
        let jsonl = match jsonl {
            Some(p) => Some(Output {
                path: p.to_path_buf(),
                out: BufWriter::new(open(p)?),
            }),
            None => None,
        };
        let csv = match csv {
            Some(p) => {
                let mut out = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(open(p)?);
                out.write_record(CSV_HEADER.split(','))
                    .map_err(|e| write_error(p, e.into()))?;
                Some(Output {
                    path: p.to_path_buf(),
                    out,
                })
            }
            None => None,
        };
        let hlog = match hlog {
            Some(p) => {
                let mut out = BufWriter::new(open(p)?);
                let mut serializer = V2DeflateSerializer::new();
                IntervalLogWriterBuilder::new()
                    .add_comment(&format!(
                        "iotload {}: per-second latency across all topics, values in \
                         microseconds; tags raw:RUN (receive - sent) and corrected:RUN \
                         (receive - intended send time); timestamps are Unix seconds",
                        env!("CARGO_PKG_VERSION")
                    ))
                    .begin_log_with(&mut out, &mut serializer)
                    .map_err(|e| write_error(p, e))?;
                Some(Output {
                    path: p.to_path_buf(),
                    out: HlogState {
                        out,
                        serializer,
                        second: None,
                        raw: LatencyHistogram::stored_precision(),
                        corrected: LatencyHistogram::stored_precision(),
                    },
                })
            }
            None => None,
        };
        Ok(Self { jsonl, csv, hlog })
    }

    /// Whether any file is being written.
    pub fn any(&self) -> bool {
        self.jsonl.is_some() || self.csv.is_some() || self.hlog.is_some()
    }

    /// Writes one cell; `json` is its document as one line of JSON.
    pub fn cell(
        &mut self,
        run_id: &str,
        cell: &TopicSecondStats<'_>,
        json: &str,
    ) -> Result<(), PlotterError> {
        if let Some(j) = self.jsonl.as_mut() {
            j.out
                .write_all(json.as_bytes())
                .and_then(|()| j.out.write_all(b"\n"))
                .map_err(|e| write_error(&j.path, e))?;
        }
        if let Some(c) = self.csv.as_mut() {
            c.out
                .write_record(csv_row(run_id, cell))
                .map_err(|e| write_error(&c.path, e.into()))?;
        }
        if let Some(h) = self.hlog.as_mut() {
            let state = &mut h.out;
            if state.second.is_some_and(|s| s != cell.second) {
                state
                    .write_second(run_id)
                    .map_err(|e| write_error(&h.path, e))?;
            }
            state.second = Some(cell.second);
            state.raw.add(cell.latency);
            state.corrected.add(cell.corrected);
        }
        Ok(())
    }

    /// Ends a run: writes its last interval.
    pub fn end_run(&mut self, run_id: &str) -> Result<(), PlotterError> {
        if let Some(h) = self.hlog.as_mut() {
            h.out
                .write_second(run_id)
                .map_err(|e| write_error(&h.path, e))?;
        }
        Ok(())
    }

    /// Flushes every file.
    pub fn finish(mut self) -> Result<(), PlotterError> {
        if let Some(j) = self.jsonl.as_mut() {
            j.out.flush().map_err(|e| write_error(&j.path, e))?;
        }
        if let Some(c) = self.csv.as_mut() {
            c.out.flush().map_err(|e| write_error(&c.path, e))?;
        }
        if let Some(h) = self.hlog.as_mut() {
            h.out.out.flush().map_err(|e| write_error(&h.path, e))?;
        }
        Ok(())
    }
}

impl HlogState {
    /// Writes the merged second (raw and corrected intervals) and starts the next.
    fn write_second(&mut self, run_id: &str) -> std::io::Result<()> {
        let Some(second) = self.second.take() else {
            return Ok(());
        };
        let run_tag = interval_log_tag(run_id);
        let mut writer =
            IntervalLogWriterBuilder::new().begin_log_with(&mut self.out, &mut self.serializer)?;
        for (kind, h) in [("raw", &self.raw), ("corrected", &self.corrected)] {
            let tag = format!("{kind}:{run_tag}");
            writer
                .write_histogram(
                    h.inner(),
                    Duration::from_secs(second),
                    Duration::from_secs(1),
                    Tag::new(&tag),
                )
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        self.raw.clear();
        self.corrected.clear();
        Ok(())
    }
}

/// `text` as an interval-log tag: the characters a tag cannot hold (comma, space, line
/// breaks) become `_`.
pub fn interval_log_tag(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ',' | ' ' | '\r' | '\n' => '_',
            c => c,
        })
        .collect()
}

/// One CSV row: the document's fields in [`CSV_HEADER`] order.
fn csv_row(run_id: &str, cell: &TopicSecondStats<'_>) -> Vec<String> {
    let c = &cell.stats.counts;
    let mut row = vec![
        iso8601(cell.second),
        run_id.to_string(),
        cell.topic.to_string(),
        cell.instances.join(";"),
    ];
    row.extend(
        [
            c.sent,
            c.received,
            c.gaps,
            c.duplicates,
            c.reordered,
            c.undecodable,
        ]
        .map(|n| n.to_string()),
    );
    for s in [&cell.stats.latency_ms, &cell.stats.latency_corrected_ms] {
        row.extend(latency_columns(s));
    }
    row
}

fn latency_columns(s: &LatencyStats) -> [String; 8] {
    [
        s.count.to_string(),
        s.min.to_string(),
        s.mean.to_string(),
        s.p50.to_string(),
        s.p90.to_string(),
        s.p99.to_string(),
        s.p999.to_string(),
        s.max.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{CellStats, MessageCounts};

    #[test]
    fn csv_rows_match_the_header() {
        let h = LatencyHistogram::stored_precision();
        let cell = TopicSecondStats {
            second: 1_700_000_000,
            topic: "a,b",
            instances: vec!["i1", "i2"],
            stats: CellStats {
                counts: MessageCounts {
                    sent: 3,
                    ..MessageCounts::default()
                },
                ..CellStats::default()
            },
            latency: &h,
            corrected: &h,
        };
        let row = csv_row("r", &cell);
        assert_eq!(row.len(), CSV_HEADER.split(',').count());
        assert_eq!(row[0], "2023-11-14T22:13:20Z");
        assert_eq!(row[3], "i1;i2");
        assert_eq!(row[4], "3");
    }
}
