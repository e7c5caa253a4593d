//! The reference iPaaS: consumes stimuli, republishes each as an action with the stamp
//! copied unchanged, optionally after a fixed processing delay.
//!
//! It is the baseline a real integration layer (Node-RED, Snaplogic, Losant, Kafka
//! Streams, ...) is compared against: same workload, two runs, the difference is what the
//! iPaaS adds. The action topic is derived from the request topic: `{device}` in `--to` is
//! the part of the request topic matched by the first wildcard of `--from`.

mod route;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use iotload_core::args::BrokerArgs;
use iotload_core::plan::{PlanError, Template, parse_duration};
use iotload_core::transport::{
    ClientIdentity, Incoming, Outgoing, Publisher, Subscriber, Transport, TransportError,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use route::Route;

/// Where requests come from and where actions go.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// Request topic filter to consume (wildcards allowed); repeat for several.
    #[arg(
        long = "from",
        env = "IOTLOAD_FROM",
        value_name = "FILTER",
        default_value = "iot/+/telemetry",
        value_delimiter = ','
    )]
    pub from: Vec<String>,

    /// Action topic template; `{device}` is the request topic's part matched by the first
    /// wildcard of --from.
    #[arg(
        long = "to",
        env = "IOTLOAD_TO",
        value_name = "TEMPLATE",
        default_value = "iot/{device}/action"
    )]
    pub to: String,

    /// Processing time to emulate before each action is published (e.g. 50ms).
    #[arg(long, env = "IOTLOAD_DELAY", value_name = "DURATION", default_value = "0s",
          value_parser = parse_duration)]
    pub delay: Duration,

    /// Client id prefix of the iPaaS's two connections (`-in`, `-out` are appended);
    /// unique per process by default (`iotload-echo-HOST-PID`).
    #[arg(long, env = "IOTLOAD_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,
}

/// A checked description of the echo.
#[derive(Debug, Clone)]
pub struct EchoPlan {
    /// Request filters.
    pub from: Vec<String>,
    /// Request topic → action topic.
    pub route: Route,
    /// Processing delay.
    pub delay: Duration,
    /// Identity of the consuming connection.
    pub consumer: ClientIdentity,
    /// Identity of the publishing connection.
    pub producer: ClientIdentity,
}

impl EchoArgs {
    /// Checks the values and builds the plan.
    pub fn resolve(&self, broker: &BrokerArgs) -> Result<EchoPlan, PlanError> {
        let from: Vec<String> = self.from.iter().map(|f| f.trim().to_string()).collect();
        if from.iter().any(String::is_empty) || from.is_empty() {
            return Err(PlanError::BadValue {
                option: "--from",
                reason: "give a request topic filter, e.g. iot/+/telemetry".into(),
            });
        }
        let to = Template::parse(&self.to)?;
        let route = Route::new(from.clone(), to)?;
        let credentials = broker.credentials()?;
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| format!("iotload-echo-{}", iotload_core::args::default_instance()));
        Ok(EchoPlan {
            from,
            route,
            delay: self.delay,
            consumer: credentials.identity(format!("{client_id}-in"), 0),
            producer: credentials.identity(format!("{client_id}-out"), 0),
        })
    }
}

impl EchoPlan {
    /// The action topic template, as written.
    pub fn route_text(&self) -> &str {
        self.route.template()
    }
}

/// Counters of the echo, readable while it runs.
#[derive(Debug, Default)]
pub struct EchoStats {
    /// Requests received.
    pub received: AtomicU64,
    /// Actions published.
    pub published: AtomicU64,
    /// Actions that failed to publish or had no route.
    pub errors: AtomicU64,
}

/// The echo's two connections, opened and subscribed: requests come from broker `F`,
/// actions go to broker `T` (the same broker family and server in most runs; different
/// ones when the echo bridges, e.g. MQTT devices into Kafka).
pub struct Connections<F: Transport, T: Transport> {
    subscriber: F::Subscriber,
    publisher: T::Publisher,
}

/// Opens the publishing connection on `to` and subscribes to the requests on `from`.
pub async fn connect<F: Transport, T: Transport>(
    from: &F,
    to: &T,
    plan: &EchoPlan,
) -> Result<Connections<F, T>, TransportError> {
    let publisher = to.publisher(&plan.producer).await?;
    let subscriber = from.subscriber(&plan.consumer, &plan.from).await?;
    Ok(Connections {
        subscriber,
        publisher,
    })
}

/// Echoes requests as actions until `stop` fires; delayed actions still due are sent first.
pub async fn serve<F: Transport, T: Transport>(
    connections: Connections<F, T>,
    plan: &EchoPlan,
    stats: Arc<EchoStats>,
    stop: CancellationToken,
) {
    let Connections {
        mut subscriber,
        mut publisher,
    } = connections;
    // All delays are equal, so a FIFO queue keeps due times in order.
    let mut delayed: VecDeque<(Instant, Incoming)> = VecDeque::new();
    loop {
        let next_due = delayed.front().map(|(due, _)| *due);
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = sleep_until_opt(next_due) => {
                while let Some((due, _)) = delayed.front() {
                    if *due > Instant::now() {
                        break;
                    }
                    if let Some((_, m)) = delayed.pop_front() {
                        respond(&mut publisher, plan, &stats, &m).await;
                    }
                }
            }
            message = subscriber.recv() => {
                let Ok(message) = message else { continue };
                stats.received.fetch_add(1, Ordering::Relaxed);
                if plan.delay.is_zero() {
                    respond(&mut publisher, plan, &stats, &message).await;
                } else {
                    delayed.push_back((Instant::now() + plan.delay, message));
                }
            }
        }
    }
    let _ = subscriber.close().await;
    let _ = publisher.close().await;
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn respond<P: Publisher>(
    publisher: &mut P,
    plan: &EchoPlan,
    stats: &EchoStats,
    m: &Incoming,
) {
    let Some(topic) = plan.route.action_topic(&m.topic) else {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let action = Outgoing {
        topic: &topic,
        payload: &m.payload,
        headers: &m.headers,
    };
    match publisher.publish(action).await {
        Ok(()) => stats.published.fetch_add(1, Ordering::Relaxed),
        Err(_) => stats.errors.fetch_add(1, Ordering::Relaxed),
    };
}
