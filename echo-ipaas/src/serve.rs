//! The echo's loop: takes each request, applies the plan's delay and faults, and publishes
//! the action with the stamp copied.

use std::cmp::{Ordering as Order, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iotload_core::timer::PreciseTimer;
use iotload_core::transport::{Incoming, Outgoing, Publisher, Subscriber, Transport};
use tokio_util::sync::CancellationToken;

use crate::{Connections, EchoPlan, EchoStats};

/// How long a request held back for `--reorder` waits for a later one on its topic before
/// it is answered anyway (in order, so not counted as reordered).
const HOLD_LIMIT: Duration = Duration::from_millis(500);

/// Echoes requests as actions until `stop` fires; what is still delayed or held back is
/// then answered at once, in order, so nothing taken is lost.
pub async fn serve<F: Transport, T: Transport>(
    connections: Connections<F, T>,
    plan: &EchoPlan,
    stats: Arc<EchoStats>,
    stop: CancellationToken,
) {
    let Connections {
        mut subscriber,
        publisher,
    } = connections;
    let mut echo = Echo::new(publisher, plan, &stats);
    // The delay is kept to the microsecond: tokio's timer would add up to 1 ms to each.
    let mut timer = PreciseTimer::new().ok();
    let capacity = usize::try_from(plan.faults.max_delayed).unwrap_or(usize::MAX);
    let mut full = false;
    loop {
        let next_due = echo.next_due();
        let room = echo.waiting < capacity;
        if !room && !full {
            EchoStats::count(&stats.delay_queue_full, 1);
        }
        full = !room;
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = wait_until(&mut timer, next_due) => echo.answer_due(Instant::now()).await,
            message = subscriber.recv(), if room => {
                let Ok(message) = message else { continue };
                echo.take(message).await;
            }
        }
    }
    echo.finish().await;
    let _ = subscriber.close().await;
    let _ = echo.publisher.close().await;
}

async fn wait_until(timer: &mut Option<PreciseTimer>, due: Option<Instant>) {
    let Some(due) = due else {
        return std::future::pending().await;
    };
    let precise = match timer {
        Some(t) => t.sleep_until(due).await.is_ok(),
        None => false,
    };
    if !precise {
        tokio::time::sleep_until(due.into()).await;
    }
}

/// Something due at a time: an answer after its delay, or the end of a hold.
enum Due {
    Answer { message: Incoming, copies: u8 },
    HoldEnds { topic: String, hold: u64 },
}

struct Pending {
    due: Instant,
    /// Arrival order, so equal due times keep it.
    order: u64,
    what: Due,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Order> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Order {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

/// A request held back for `--reorder`, waiting for a later answer on its topic.
struct Held {
    message: Incoming,
    copies: u8,
    hold: u64,
}

/// The echo's state between requests.
struct Echo<'a, P: Publisher> {
    publisher: P,
    plan: &'a EchoPlan,
    stats: &'a EchoStats,
    rng: fastrand::Rng,
    /// Answers and hold ends, earliest first.
    queue: BinaryHeap<Reverse<Pending>>,
    /// Answers in `queue` (what `--max-delayed` bounds).
    waiting: usize,
    order: u64,
    /// The latest due time per request topic, so jitter never reorders a topic.
    last_due: HashMap<String, Instant>,
    held: HashMap<String, Held>,
    /// Whether answers are held at all (a delay, a capacity or reordering), so their time
    /// is recorded.
    timed: bool,
    /// With `--capacity`: one request's service time, and when the simulated server is
    /// free again.
    service: Option<(Duration, Instant)>,
}

impl<'a, P: Publisher> Echo<'a, P> {
    fn new(publisher: P, plan: &'a EchoPlan, stats: &'a EchoStats) -> Self {
        Self {
            publisher,
            plan,
            stats,
            rng: fastrand::Rng::with_seed(plan.seed),
            queue: BinaryHeap::new(),
            waiting: 0,
            order: 0,
            last_due: HashMap::new(),
            held: HashMap::new(),
            timed: !plan.faults.delay.is_zero()
                || plan.faults.reorder > 0.0
                || plan.faults.capacity.is_some(),
            service: plan
                .faults
                .capacity
                .map(|n| (Duration::from_secs_f64(1.0 / n), Instant::now())),
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(p)| p.due)
    }

    fn draw(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.rng.f64() < probability
    }

    fn push(&mut self, due: Instant, what: Due) {
        self.order += 1;
        if matches!(what, Due::Answer { .. }) {
            self.waiting += 1;
        }
        self.queue.push(Reverse(Pending {
            due,
            order: self.order,
            what,
        }));
    }

    /// One request: dropped, or answered (once or twice) now or after its delay.
    async fn take(&mut self, message: Incoming) {
        EchoStats::count(&self.stats.received, 1);
        let faults = &self.plan.faults;
        if self.draw(faults.drop) {
            // SeqCst: a drain reads it after waking on `drops_changed`.
            self.stats
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.stats.drops_changed.notify_waiters();
            return;
        }
        let copies = if self.draw(faults.duplicate) {
            // SeqCst: a drain reads it once every answer arrived, to wait for the copies.
            self.stats
                .duplicated
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            2
        } else {
            1
        };
        if faults.delay.is_zero() && self.service.is_none() {
            return self.answer(message, copies).await;
        }
        let now = Instant::now();
        // A single server: service starts when the request arrives or the previous one
        // is done, whichever is later.
        let served = match &mut self.service {
            Some((each, free_at)) => {
                *free_at = (*free_at).max(now) + *each;
                *free_at
            }
            None => now,
        };
        let mut due = served + faults.delay.sample(self.rng.f64());
        match self.last_due.get_mut(&message.topic) {
            Some(last) => {
                due = due.max(*last);
                *last = due;
            }
            None => {
                self.last_due.insert(message.topic.clone(), due);
            }
        }
        self.push(due, Due::Answer { message, copies });
    }

    /// Publishes an answer, unless `--reorder` holds it back; an answer releases the
    /// request held back on its topic right after it.
    async fn answer(&mut self, message: Incoming, copies: u8) {
        if let Some(held) = self.held.remove(&message.topic) {
            self.publish(&message, copies).await;
            self.publish(&held.message, held.copies).await;
            EchoStats::count(&self.stats.reordered, 1);
            return;
        }
        if self.draw(self.plan.faults.reorder) {
            let (topic, hold) = (message.topic.clone(), self.order);
            self.held.insert(
                topic.clone(),
                Held {
                    message,
                    copies,
                    hold,
                },
            );
            self.push(Instant::now() + HOLD_LIMIT, Due::HoldEnds { topic, hold });
            return;
        }
        self.publish(&message, copies).await;
    }

    /// Answers everything due by `now`.
    async fn answer_due(&mut self, now: Instant) {
        while self.next_due().is_some_and(|due| due <= now) {
            if let Some(Reverse(p)) = self.queue.pop() {
                self.settle(p.what).await;
            }
        }
    }

    async fn settle(&mut self, what: Due) {
        match what {
            Due::Answer { message, copies } => {
                self.waiting -= 1;
                self.answer(message, copies).await;
            }
            Due::HoldEnds { topic, hold } => {
                if self.held.get(&topic).is_some_and(|h| h.hold == hold)
                    && let Some(held) = self.held.remove(&topic)
                {
                    self.publish(&held.message, held.copies).await;
                }
            }
        }
    }

    /// Answers everything still delayed, in due order, then everything held back.
    async fn finish(&mut self) {
        while let Some(Reverse(p)) = self.queue.pop() {
            self.settle(p.what).await;
        }
        let mut held: Vec<Held> = self.held.drain().map(|(_, h)| h).collect();
        held.sort_unstable_by_key(|h| h.hold);
        for h in held {
            self.publish(&h.message, h.copies).await;
        }
    }

    async fn publish(&mut self, m: &Incoming, copies: u8) {
        let Some(topic) = self.plan.route.action_topic(&m.topic) else {
            EchoStats::count(&self.stats.errors, u64::from(copies));
            return;
        };
        if self.timed {
            // What the echo added: from the request's arrival to its answer, delay and
            // any hold for --reorder included.
            let held_us = iotload_core::stamp::now_us().saturating_sub(m.received_us);
            if let Ok(mut delays) = self.stats.delays.lock() {
                delays.record(held_us);
            }
        }
        for _ in 0..copies {
            let action = Outgoing {
                topic: &topic,
                payload: &m.payload,
                headers: &m.headers,
                // The request's record time travels on, as Kafka Streams forwards it.
                record_time_us: m.record_time_us,
            };
            match self.publisher.publish(action).await {
                Ok(()) => EchoStats::count(&self.stats.published, 1),
                Err(_) => EchoStats::count(&self.stats.errors, 1),
            }
        }
    }
}
