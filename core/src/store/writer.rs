//! The store writer: a task between the measurement and the store.
//!
//! Producers hand records over with [`StoreWriter::offer`], which never waits: the
//! measurement must not stall because the store is slow or down. The channel between
//! them is the bounded buffer (`--store-buffer` records). The writer takes batches of up
//! to 10,000 records or 100 ms, writes each in one call, and when the store fails it keeps
//! the batch, retries with backoff and stops taking new records, so the channel fills;
//! records offered while it is full are dropped and counted. At the end it flushes what
//! is buffered, within a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Backend, Batch, RawRecord, StoreError, TopicSecond};

/// Records per store call: large batches keep SQLite index updates cheap.
const BATCH_MAX: usize = 10_000;
/// Longest a record waits before its batch is written.
const BATCH_WAIT: Duration = Duration::from_millis(100);

/// One record on its way to the store.
#[derive(Debug, Clone)]
pub enum Record {
    /// A per-topic per-second aggregate.
    Second(TopicSecond),
    /// A raw message record and its topic.
    Raw(String, RawRecord),
}

/// What the writer did, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriterReport {
    /// Aggregates written.
    pub seconds_written: u64,
    /// Raw records written.
    pub raw_written: u64,
    /// Records dropped because the buffer was full.
    pub dropped: u64,
    /// Records still unwritten when the flush deadline passed.
    pub unflushed: u64,
    /// Failed store calls (each retried).
    pub failures: u64,
    /// The last store error, if any.
    pub last_error: Option<String>,
}

/// Handle to the writer task.
pub struct StoreWriter {
    sender: RecordSender,
    task: JoinHandle<WriterReport>,
    flush_deadline: Arc<tokio::sync::watch::Sender<Option<Instant>>>,
}

impl StoreWriter {
    /// Starts the writer of run `run_id` to `store`, with room for `buffer` records.
    pub fn spawn(store: Arc<dyn Backend>, run_id: String, buffer: usize) -> Self {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let (deadline_tx, deadline_rx) = tokio::sync::watch::channel(None);
        let task = tokio::spawn(run(store, run_id, rx, deadline_rx));
        Self {
            sender: RecordSender {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            task,
            flush_deadline: Arc::new(deadline_tx),
        }
    }

    /// Hands a record over without waiting; returns false (and counts it) when the buffer
    /// is full.
    pub fn offer(&self, record: Record) -> bool {
        self.sender.offer(record)
    }

    /// A cheap handle producers can clone into tasks.
    pub fn sender(&self) -> RecordSender {
        self.sender.clone()
    }

    /// Writes what is buffered, giving up after `timeout`, and reports.
    pub async fn finish(self, timeout: Duration) -> WriterReport {
        let _ = self.flush_deadline.send(Some(Instant::now() + timeout));
        let dropped = self.sender.dropped.clone();
        drop(self.sender);
        let mut report = self.task.await.unwrap_or_default();
        report.dropped += dropped.load(Ordering::Relaxed);
        report
    }
}

/// A clonable way to offer records to the writer.
#[derive(Clone)]
pub struct RecordSender {
    tx: mpsc::Sender<Record>,
    dropped: Arc<AtomicU64>,
}

impl RecordSender {
    /// Hands a record over without waiting; returns false (and counts it) when the buffer
    /// is full.
    pub fn offer(&self, record: Record) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

async fn run(
    store: Arc<dyn Backend>,
    run_id: String,
    mut rx: mpsc::Receiver<Record>,
    deadline: tokio::sync::watch::Receiver<Option<Instant>>,
) -> WriterReport {
    let mut report = WriterReport::default();
    let mut batch = Batch {
        run_id,
        ..Batch::default()
    };
    let mut closed = false;
    while !closed {
        // Gather a batch: up to BATCH_MAX records or BATCH_WAIT after the first one.
        match rx.recv().await {
            Some(r) => push(&mut batch, r),
            None => closed = true,
        }
        let until = Instant::now() + BATCH_WAIT;
        while !closed && len(&batch) < BATCH_MAX {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(r)) => push(&mut batch, r),
                Ok(None) => closed = true,
                Err(_) => break,
            }
        }
        // The same id on every retry: a batch whose reply was lost is not counted twice.
        batch.id = fastrand::u64(1..);
        if !write_with_retry(store.as_ref(), &batch, &mut report, &deadline).await {
            report.unflushed += len(&batch) as u64;
            // Past the deadline: count what is left in the channel and stop.
            rx.close();
            while let Some(_r) = rx.recv().await {
                report.unflushed += 1;
            }
            return report;
        }
        report.seconds_written += batch.seconds.len() as u64;
        report.raw_written += batch.raw.len() as u64;
        batch.seconds.clear();
        batch.raw.clear();
    }
    report
}

fn push(batch: &mut Batch, r: Record) {
    match r {
        Record::Second(s) => batch.seconds.push(s),
        Record::Raw(topic, raw) => batch.raw.push((topic, raw)),
    }
}

fn len(batch: &Batch) -> usize {
    batch.seconds.len() + batch.raw.len()
}

/// Writes `batch`, retrying with backoff; false when the flush deadline passed first.
async fn write_with_retry(
    store: &dyn Backend,
    batch: &Batch,
    report: &mut WriterReport,
    deadline: &tokio::sync::watch::Receiver<Option<Instant>>,
) -> bool {
    if len(batch) == 0 {
        return true;
    }
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(written) = write_before_deadline(store, batch, deadline).await else {
            return false;
        };
        match written {
            Ok(()) => return true,
            Err(e) => {
                report.failures += 1;
                if report.last_error.is_none() || report.failures % 50 == 1 {
                    tracing::warn!("writing results failed (will retry): {e}");
                }
                report.last_error = Some(e.to_string());
                if !retryable(&e) {
                    tracing::error!("results store rejected a batch: {e}");
                }
            }
        }
        let wake = Instant::now() + backoff;
        let limit = *deadline.borrow();
        match limit {
            Some(d) if d <= Instant::now() => return false,
            Some(d) => tokio::time::sleep_until(wake.min(d)).await,
            None => tokio::time::sleep_until(wake).await,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Writes `batch`; `None` when the flush deadline passes first, a deadline set while the
/// write is on its way included: a store that never answers must not hold the end of a
/// run.
async fn write_before_deadline(
    store: &dyn Backend,
    batch: &Batch,
    deadline: &tokio::sync::watch::Receiver<Option<Instant>>,
) -> Option<Result<(), StoreError>> {
    let mut deadline = deadline.clone();
    let write = store.write(batch);
    tokio::pin!(write);
    loop {
        let limit = *deadline.borrow_and_update();
        tokio::select! {
            written = &mut write => return Some(written),
            () = sleep_until_some(limit) => return None,
            changed = deadline.changed() => {
                if changed.is_err() {
                    // The writer's owner is gone without a deadline: only the write ends it.
                    return Some(write.await);
                }
            }
        }
    }
}

/// Sleeps until `limit`, forever without one.
async fn sleep_until_some(limit: Option<Instant>) {
    match limit {
        Some(limit) => tokio::time::sleep_until(limit).await,
        None => std::future::pending().await,
    }
}

fn retryable(e: &StoreError) -> bool {
    e.is_retryable()
}
