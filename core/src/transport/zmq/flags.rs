//! The flags only ZeroMQ takes, and how they and the shared broker flags become
//! [`ZmqSettings`].

use super::{ZmqMode, ZmqSettings, ZmqTransport};
use crate::args::BrokerArgs;
use crate::plan::PlanError;
use crate::transport::{BrokerUrl, Registered, TransportError};

/// Options only ZeroMQ takes (`zmq+tcp://`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "ZeroMQ options (zmq+tcp://)")]
pub struct ZmqFlags {
    /// Topology: proxy (publishers connect to the URL's port and subscribers to the next
    /// one, where `iotload zmq-proxy` or another XSUB/XPUB forwarder listens) or peer (no
    /// proxy: each subscriber binds the URL's port and publishers connect to it).
    #[arg(
        long,
        env = "IOTLOAD_ZMQ_MODE",
        value_name = "MODE",
        default_value = "proxy"
    )]
    pub zmq_mode: ZmqMode,
}

impl ZmqFlags {
    /// The ZeroMQ settings; TLS and credential options are refused, since the transport
    /// has neither.
    pub fn settings(&self, broker: &BrokerArgs) -> Result<ZmqSettings, PlanError> {
        let tls = [
            ("--ca-file", broker.ca_file.is_some()),
            ("--cert-file", broker.cert_file.is_some()),
            ("--key-file", broker.key_file.is_some()),
            ("--insecure", broker.insecure),
        ];
        if let Some(&(option, _)) = tls.iter().find(|(_, given)| *given) {
            return Err(PlanError::BadValue {
                option,
                reason: "ZeroMQ (zmq+tcp://) has no TLS here (the zeromq crate has no CURVE); \
                         leave out the TLS options or use another broker"
                    .into(),
            });
        }
        let credentials = [
            ("--username", broker.username.is_some()),
            ("--password", broker.password.is_some()),
            ("--password-file", broker.password_file.is_some()),
            ("--credentials-file", broker.credentials_file.is_some()),
        ];
        if let Some(&(option, _)) = credentials.iter().find(|(_, given)| *given) {
            return Err(PlanError::BadValue {
                option,
                reason: "ZeroMQ (zmq+tcp://) has no authentication here; leave out the \
                         credentials"
                    .into(),
            });
        }
        Ok(ZmqSettings {
            mode: self.zmq_mode,
            connect_timeout: broker.connect_timeout,
            queue_capacity: broker.queue_capacity.max(1),
        })
    }
}

impl Registered for ZmqTransport {
    type Flags = ZmqFlags;

    fn open(url: BrokerUrl, broker: &BrokerArgs, flags: &ZmqFlags) -> Result<Self, TransportError> {
        Self::new(url, flags.settings(broker)?)
    }
}
