//! The reference iPaaS: consumes stimuli, republishes each as an action with the stamp
//! copied unchanged, optionally after a processing delay and with injected faults
//! (drops, duplicates, reordering: the chaos echo, see [`faults`]).
//!
//! It is the baseline a real integration layer (Node-RED, Snaplogic, Losant, Kafka
//! Streams, ...) is compared against: same workload, two runs, the difference is what the
//! iPaaS adds. The action topic is derived from the request topic: `{device}` in `--to` is
//! the part of the request topic matched by the first wildcard of `--from`.

pub mod faults;
mod route;
mod serve;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Args;
use iotload_core::args::BrokerArgs;
use iotload_core::plan::{PlanError, Template};
use iotload_core::recorder::LatencyHistogram;
use iotload_core::transport::{ClientIdentity, Transport, TransportError};

pub use faults::{Delay, FaultArgs};
pub use route::Route;
pub use serve::serve;

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

    /// Delay and injected faults.
    #[command(flatten)]
    pub faults: FaultArgs,

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
    /// Delay and faults to inject.
    pub faults: FaultArgs,
    /// The seed of the fault draws (given or drawn at start).
    pub seed: u64,
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
            faults: self.faults.clone(),
            seed: self.faults.seed.unwrap_or_else(|| fastrand::u64(..)),
            consumer: credentials.identity(format!("{client_id}-in"), 0),
            producer: credentials.identity(format!("{client_id}-out"), 0),
        })
    }
}

impl EchoPlan {
    /// The action topic template, as written.
    pub fn route_text(&self) -> String {
        self.route.template()
    }
}

/// Counters of the echo, readable while it runs.
#[derive(Debug, Default)]
pub struct EchoStats {
    /// Requests received.
    pub received: AtomicU64,
    /// Actions published (both copies of a duplicated request included).
    pub published: AtomicU64,
    /// Actions that failed to publish or had no route.
    pub errors: AtomicU64,
    /// Requests dropped on purpose (`--drop`).
    pub dropped: AtomicU64,
    /// Requests answered twice on purpose (`--duplicate`).
    pub duplicated: AtomicU64,
    /// Requests answered after a later request of the same topic (`--reorder`).
    pub reordered: AtomicU64,
    /// Times the delay queue was full and the echo stopped taking requests until the
    /// oldest was due (`--max-delayed`).
    pub delay_queue_full: AtomicU64,
    /// Woken whenever `dropped` grows, so a drain can lower what it waits for.
    pub drops_changed: tokio::sync::Notify,
    /// How long each answer was held, from the request's arrival to its publication, µs
    /// (the delay plus any hold for `--reorder`; empty without either).
    pub delays: Mutex<LatencyHistogram>,
}

impl EchoStats {
    /// The delays applied so far.
    pub fn delays(&self) -> LatencyHistogram {
        match self.delays.lock() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
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
