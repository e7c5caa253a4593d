//! The live web page (`--ui ADDR`): latency percentiles, throughput, loss, devices and send
//! lag of this process, updated each second over server-sent events, per-topic detail on
//! demand, and the final summary when the run ends.
//!
//! One sampler task reads the components' counters once a second and keeps the samples;
//! viewers only ever read what it kept, so a slow or stuck browser cannot hold up the
//! engine. The page's assets (and the uPlot charting library, vendored in `vendor/`) are
//! compiled into the binary: the page works without any network access.

mod sample;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::progress::Sources;
use sample::Sampler;

/// Samples kept for the page: the last 15 minutes.
const HISTORY: usize = 900;

/// How long the page waits at the end for viewers to receive the final summary.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// How long per-topic detail keeps being computed after the page last asked for it.
const TOPICS_WANTED_FOR: Duration = Duration::from_secs(5);

/// What the page says about the process before the first sample.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PageInfo {
    pub(crate) component: String,
    pub(crate) broker: String,
    pub(crate) run_id: Option<String>,
    pub(crate) thresholds: Vec<String>,
    pub(crate) version: &'static str,
}

/// What the sampler shares with the viewers.
struct Shared {
    info: String,
    history: Mutex<VecDeque<Arc<str>>>,
    latest: watch::Sender<Option<(u64, Arc<str>)>>,
    summary: watch::Sender<Option<Arc<str>>>,
    topics: Mutex<Arc<str>>,
    topics_asked: Mutex<Option<Instant>>,
    /// Event streams open now.
    viewers: watch::Sender<usize>,
}

type Page = Arc<Shared>;

/// A running live page; [`LivePage::finish`] sends the summary and closes it.
pub(crate) struct LivePage {
    shared: Page,
    stop_sampling: CancellationToken,
    sampler: Option<tokio::task::JoinHandle<()>>,
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
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --ui {addr}"))?;
        let bound = listener.local_addr()?;
        eprintln!("live page at http://{bound}/");
        let shared = Arc::new(Shared {
            info: serde_json::to_string(&info)?,
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            latest: watch::channel(None).0,
            summary: watch::channel(None).0,
            topics: Mutex::new(Arc::from("[]")),
            topics_asked: Mutex::new(None),
            viewers: watch::channel(0).0,
        });
        let stop_sampling = CancellationToken::new();
        let sampler = tokio::spawn(sample_every_second(
            Sampler::new(sources.clone()),
            sources.clone(),
            shared.clone(),
            stop_sampling.clone(),
        ));
        let stop_serving = CancellationToken::new();
        let app = Router::new()
            .route("/", get(index))
            .route("/app.js", get(app_js))
            .route("/app.css", get(app_css))
            .route("/vendor/uPlot.iife.min.js", get(uplot_js))
            .route("/vendor/uPlot.min.css", get(uplot_css))
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
            stop_sampling,
            sampler: Some(sampler),
            server,
            stop_serving,
        })
    }

    /// Takes a last sample and stops sampling (when the components have stopped).
    pub(crate) async fn stop_sampling(&mut self) {
        self.stop_sampling.cancel();
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.await;
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
}

/// Samples once a second until `stop`, and once more at the end.
async fn sample_every_second(
    mut sampler: Sampler,
    sources: Sources,
    shared: Page,
    stop: CancellationToken,
) {
    let start = Instant::now();
    let mut interval = sources.collector.as_ref().map(|c| c.interval());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await;
    let mut seq = 0u64;
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
        let json: Arc<str> = Arc::from(json);
        {
            let mut history = lock(&shared.history);
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(json.clone());
        }
        seq += 1;
        shared.latest.send_replace(Some((seq, json)));
        let wanted = lock(&shared.topics_asked).is_some_and(|at| at.elapsed() < TOPICS_WANTED_FOR);
        if wanted || last {
            let rows = serde_json::to_string(&sampler.topics()).unwrap_or_else(|_| "[]".into());
            *lock(&shared.topics) = Arc::from(rows);
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

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    )
}

async fn app_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

async fn uplot_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("vendor/uPlot.iife.min.js"),
    )
}

async fn uplot_css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("vendor/uPlot.min.css"),
    )
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn info_json(State(page): State<Page>) -> Response {
    json(page.info.clone())
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
    let history = lock(&page.history);
    let mut out = String::with_capacity(history.iter().map(|s| s.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, s) in history.iter().enumerate() {
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

/// One viewer's stream state: the step, the page, and the last sample it got.
struct Viewer {
    step: Step,
    page: Page,
    latest: watch::Receiver<Option<(u64, Arc<str>)>>,
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
        match self.step {
            Step::Info => {
                self.step = Step::History;
                Some(Event::default().event("info").data(self.page.info.clone()))
            }
            Step::History => {
                // Samples kept so far; later ones arrive as `sample` events.
                self.seen = self
                    .latest
                    .borrow_and_update()
                    .as_ref()
                    .map_or(0, |(n, _)| *n);
                self.step = Step::Live;
                Some(
                    Event::default()
                        .event("history")
                        .data(history_array(&self.page)),
                )
            }
            Step::Done => None,
            Step::Live => loop {
                let next = self.latest.borrow_and_update().clone();
                if let Some((n, s)) = next
                    && n > self.seen
                {
                    self.seen = n;
                    return Some(Event::default().event("sample").data(&*s));
                }
                if let Some(s) = self.summary.borrow_and_update().clone() {
                    self.step = Step::Done;
                    return Some(Event::default().event("summary").data(&*s));
                }
                tokio::select! {
                    changed = self.latest.changed() => changed.ok()?,
                    changed = self.summary.changed() => changed.ok()?,
                }
            },
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
