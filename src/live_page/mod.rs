//! The live web page (`--ui ADDR`): latency percentiles, throughput, loss, devices and send
//! lag, updated each second over server-sent events, per-topic detail on demand, and the
//! final summary when the run ends.
//!
//! One feeder task keeps the samples: in a component, a sampler reads this process's
//! counters once a second (`sample.rs`); in `iotload plotter --ui`, the store feed reads a
//! run's per-second aggregates from the results store (`store_feed.rs`). Viewers only ever
//! read what the feeder kept, so a slow or stuck browser cannot hold up the engine. The
//! page's assets (and the uPlot charting library, vendored in `vendor/`) are
//! compiled into the binary: the page works without any network access.

mod sample;
mod store_feed;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use iotload_core::store::Backend;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::progress::Sources;
use sample::{Sampler, TopicRow};

/// Samples kept for the page: the last 15 minutes.
const HISTORY: usize = 900;

/// How long the page waits at the end for viewers to receive the final summary.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// How long per-topic detail keeps being computed after the page last asked for it.
const TOPICS_WANTED_FOR: Duration = Duration::from_secs(5);

/// What the page says about what it shows, sent before the samples (and again whenever it
/// changes: a page following a store moves on to a newer run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PageInfo {
    pub(crate) component: String,
    pub(crate) broker: String,
    pub(crate) run_id: Option<String>,
    pub(crate) thresholds: Vec<String>,
    pub(crate) version: &'static str,
    /// `process` (this process's counters) or `store` (a results store's aggregates).
    pub(crate) source: &'static str,
    /// A store-fed page: the store (password redacted), and the run's state there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) store: Option<StoreState>,
}

/// Where a store-fed page stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct StoreState {
    pub(crate) url: String,
    /// `waiting` (no run yet), `recording` or `ended` (every instance stored its end).
    pub(crate) state: &'static str,
    /// Why the last read failed, while it keeps failing.
    pub(crate) problem: Option<String>,
}

/// The newest change viewers have not all seen: a `sample` to append, a `tail` (samples
/// from some second on, replacing what the page has from that second), or new `info`
/// (start over). `seq` counts changes, 0 before the first.
#[derive(Debug, Clone)]
struct Update {
    seq: u64,
    event: &'static str,
    data: Arc<str>,
}

/// What the feeder shares with the viewers.
struct Shared {
    info: Mutex<Arc<str>>,
    history: Mutex<VecDeque<Arc<str>>>,
    /// Sent while `history` is locked, so a viewer reading both sees them agree.
    latest: watch::Sender<Update>,
    summary: watch::Sender<Option<Arc<str>>>,
    topics: Mutex<Arc<str>>,
    topics_asked: Mutex<Option<Instant>>,
    /// Event streams open now.
    viewers: watch::Sender<usize>,
}

impl Shared {
    fn new(info: &PageInfo) -> anyhow::Result<Self> {
        Ok(Self {
            info: Mutex::new(Arc::from(serde_json::to_string(info)?)),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            latest: watch::channel(Update {
                seq: 0,
                event: "sample",
                data: Arc::from(""),
            })
            .0,
            summary: watch::channel(None).0,
            topics: Mutex::new(Arc::from("[]")),
            topics_asked: Mutex::new(None),
            viewers: watch::channel(0).0,
        })
    }

    /// Publishes a change; the caller holds the history lock.
    fn publish(&self, event: &'static str, data: Arc<str>) {
        self.latest.send_modify(|u| {
            *u = Update {
                seq: u.seq + 1,
                event,
                data,
            }
        });
    }

    /// Appends one sample.
    fn push_sample(&self, json: Arc<str>) {
        let mut history = lock(&self.history);
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(json.clone());
        self.publish("sample", json);
    }

    /// Keeps the first `keep` samples and appends `tail` after them.
    fn replace_tail(&self, keep: usize, tail: &[Arc<str>]) {
        let mut history = lock(&self.history);
        history.truncate(keep);
        history.extend(tail.iter().cloned());
        while history.len() > HISTORY {
            history.pop_front();
        }
        self.publish("tail", Arc::from(json_array(tail.iter())));
    }

    /// Replaces what the page is about and every sample.
    fn reset(&self, info: &PageInfo, samples: &[Arc<str>]) {
        let Ok(info) = serde_json::to_string(info) else {
            return;
        };
        let mut history = lock(&self.history);
        *lock(&self.info) = Arc::from(info);
        history.clear();
        history.extend(samples.iter().cloned());
        *lock(&self.topics) = Arc::from("[]");
        self.publish("info", Arc::from(""));
    }

    /// Whether a viewer asked for per-topic detail lately.
    fn topics_wanted(&self) -> bool {
        lock(&self.topics_asked).is_some_and(|at| at.elapsed() < TOPICS_WANTED_FOR)
    }

    fn set_topics(&self, rows: &[TopicRow]) {
        let rows = serde_json::to_string(rows).unwrap_or_else(|_| "[]".into());
        *lock(&self.topics) = Arc::from(rows);
    }
}

type Page = Arc<Shared>;

/// A running live page; [`LivePage::finish`] sends the summary and closes it.
pub(crate) struct LivePage {
    shared: Page,
    stop_feeding: CancellationToken,
    feeder: Option<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<()>,
    stop_serving: CancellationToken,
}

impl LivePage {
    /// Listens on `addr` and starts sampling `sources` once a second.
    pub(crate) async fn start(
        addr: &str,
        sources: &Sources,
        info: PageInfo,
    ) -> anyhow::Result<Self> {
        let sampler = Sampler::new(sources.clone());
        Self::serve(addr, &info, |page, stop| {
            sample_every_second(sampler, page, stop)
        })
        .await
    }

    /// Listens on `addr` and shows the run `wanted` (a run id or `latest`, followed to
    /// newer runs) from the results store, read again each second or so.
    pub(crate) async fn follow_store(
        addr: &str,
        store: Arc<dyn Backend>,
        wanted: String,
    ) -> anyhow::Result<Self> {
        let info = store_feed::waiting_info(store.url());
        Self::serve(addr, &info, |page, stop| {
            store_feed::follow(store, wanted, page, stop)
        })
        .await
    }

    /// Binds, starts the server and the feeder `feed` makes.
    async fn serve<F>(
        addr: &str,
        info: &PageInfo,
        feed: impl FnOnce(Page, CancellationToken) -> F,
    ) -> anyhow::Result<Self>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --ui {addr}"))?;
        let bound = listener.local_addr()?;
        eprintln!("live page at http://{bound}/");
        let shared = Arc::new(Shared::new(info)?);
        let stop_feeding = CancellationToken::new();
        let feeder = tokio::spawn(feed(shared.clone(), stop_feeding.clone()));
        let stop_serving = CancellationToken::new();
        let mut app = Router::new();
        for (path, _, _) in ASSETS {
            app = app.route(path, get(asset));
        }
        let app = app
            .route("/events", get(events))
            .route("/api/info", get(info_json))
            .route("/api/samples", get(samples_json))
            .route("/api/topics", get(topics_json))
            .route("/api/summary", get(summary_json))
            .with_state(shared.clone());
        let stopped = stop_serving.clone();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!("the live page server stopped: {e}");
            }
        });
        Ok(Self {
            shared,
            stop_feeding,
            feeder: Some(feeder),
            server,
            stop_serving,
        })
    }

    /// Takes a last sample and stops sampling (when the components have stopped).
    pub(crate) async fn stop_sampling(&mut self) {
        self.stop_feeding.cancel();
        if let Some(feeder) = self.feeder.take() {
            let _ = feeder.await;
        }
    }

    /// Sends the final summary (JSON) to every viewer, waits up to 2 s for them to get it,
    /// and closes the page.
    pub(crate) async fn finish(mut self, summary_json: &str) {
        self.stop_sampling().await;
        self.shared
            .summary
            .send_replace(Some(Arc::from(summary_json)));
        let flushed = async {
            // Every viewer's stream ends after the summary; then stop accepting.
            let mut viewers = self.shared.viewers.subscribe();
            let _ = viewers.wait_for(|n| *n == 0).await;
            self.stop_serving.cancel();
            let _ = (&mut self.server).await;
        };
        if tokio::time::timeout(FINAL_FLUSH, flushed).await.is_err() {
            self.server.abort();
        }
    }

    /// Stops feeding and serving (a store-fed page has no summary to send).
    pub(crate) async fn close(mut self) {
        self.stop_sampling().await;
        self.stop_serving.cancel();
        if tokio::time::timeout(FINAL_FLUSH, &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
        }
    }
}

/// Samples once a second until `stop`, and once more at the end.
async fn sample_every_second(mut sampler: Sampler, shared: Page, stop: CancellationToken) {
    let start = Instant::now();
    let mut interval = sampler.collector_interval();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await;
    loop {
        let last = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let second = interval.as_mut().map(|rx| *rx.borrow_and_update());
        let sample = sampler.sample(start.elapsed().as_secs_f64(), second);
        let Ok(json) = serde_json::to_string(&sample) else {
            break;
        };
        shared.push_sample(Arc::from(json));
        if shared.topics_wanted() || last {
            shared.set_topics(&sampler.topics());
        }
        if last {
            break;
        }
    }
}

/// Locks a mutex whose holder cannot leave it inconsistent (a whole value is swapped).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The page's files: path, content type, body (compiled in).
const ASSETS: [(&str, &str, &str); 5] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "/app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    (
        "/vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("vendor/uPlot.iife.min.js"),
    ),
    (
        "/vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("vendor/uPlot.min.css"),
    ),
];

async fn asset(uri: Uri) -> Response {
    match ASSETS.iter().find(|(path, _, _)| *path == uri.path()) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn info_json(State(page): State<Page>) -> Response {
    json(lock(&page.info).to_string())
}

async fn samples_json(State(page): State<Page>) -> Response {
    json(history_array(&page))
}

async fn topics_json(State(page): State<Page>) -> Response {
    *lock(&page.topics_asked) = Some(Instant::now());
    let rows = lock(&page.topics).clone();
    json(rows.to_string())
}

async fn summary_json(State(page): State<Page>) -> Response {
    match page.summary.borrow().clone() {
        Some(s) => json(s.to_string()),
        None => (StatusCode::NOT_FOUND, "the run has not finished yet\n").into_response(),
    }
}

/// The kept samples as one JSON array.
fn history_array(page: &Shared) -> String {
    json_array(lock(&page.history).iter())
}

/// JSON texts as one JSON array.
fn json_array<'a>(items: impl Iterator<Item = &'a Arc<str>> + Clone) -> String {
    let mut out = String::with_capacity(items.clone().map(|s| s.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(s);
    }
    out.push(']');
    out
}

/// Where one viewer's event stream is.
enum Step {
    Info,
    History,
    Live,
    Done,
}

/// One viewer's stream state: the step, the page, and the last change it got.
struct Viewer {
    step: Step,
    page: Page,
    latest: watch::Receiver<Update>,
    summary: watch::Receiver<Option<Arc<str>>>,
    seen: u64,
}

impl Viewer {
    fn new(page: Page) -> Self {
        page.viewers.send_modify(|n| *n += 1);
        Self {
            step: Step::Info,
            latest: page.latest.subscribe(),
            summary: page.summary.subscribe(),
            page,
            seen: 0,
        }
    }

    /// The next event, `None` once the summary has been sent.
    async fn next(&mut self) -> Option<Event> {
        loop {
            match self.step {
                Step::Info => {
                    self.step = Step::History;
                    let info = lock(&self.page.info).clone();
                    return Some(Event::default().event("info").data(&*info));
                }
                Step::History => {
                    // Samples kept so far, and the change they include; later changes
                    // arrive as `sample` or `tail` events.
                    let history = lock(&self.page.history);
                    self.seen = self.latest.borrow_and_update().seq;
                    let data = json_array(history.iter());
                    drop(history);
                    self.step = Step::Live;
                    return Some(Event::default().event("history").data(data));
                }
                Step::Done => return None,
                Step::Live => {
                    let update = self.latest.borrow_and_update().clone();
                    if update.seq > self.seen {
                        if update.seq == self.seen + 1 && update.event != "info" {
                            self.seen = update.seq;
                            return Some(Event::default().event(update.event).data(&*update.data));
                        }
                        // New info, or changes this viewer missed: start over.
                        self.step = Step::Info;
                        continue;
                    }
                    if let Some(s) = self.summary.borrow_and_update().clone() {
                        self.step = Step::Done;
                        return Some(Event::default().event("summary").data(&*s));
                    }
                    tokio::select! {
                        changed = self.latest.changed() => changed.ok()?,
                        changed = self.summary.changed() => changed.ok()?,
                    }
                }
            }
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.page.viewers.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// `info`, then `history` (every kept sample), then a `sample` each second, then
/// `summary` when the run ends.
async fn events(State(page): State<Page>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let viewer = Viewer::new(page);
    let stream = futures_util::stream::unfold(viewer, |mut viewer| async move {
        let event = viewer.next().await?;
        Some((Ok(event), viewer))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
