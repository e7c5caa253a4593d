//! `iotload zmq-proxy`: the XSUB/XPUB forwarder that stands in for a ZeroMQ broker, so
//! `--broker zmq+tcp://HOST:PORT` works like any other broker URL.

use anyhow::Context;
use clap::Args;
use iotload_core::shutdown::Shutdown;
use iotload_core::transport::zmq::ZmqProxy;

/// Options of `iotload zmq-proxy`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ZmqProxyArgs {
    /// Address the publishers' side binds (an XSUB socket); iotload publishers and any
    /// ZeroMQ PUB connect here. It is the PORT of --broker zmq+tcp://HOST:PORT.
    #[arg(
        long,
        env = "IOTLOAD_PUB_BIND",
        value_name = "HOST:PORT",
        default_value = "0.0.0.0:5559"
    )]
    pub(crate) pub_bind: String,

    /// Address the subscribers' side binds (an XPUB socket); iotload subscribers and any
    /// ZeroMQ SUB connect here. iotload expects the port after --pub-bind's.
    #[arg(
        long,
        env = "IOTLOAD_SUB_BIND",
        value_name = "HOST:PORT",
        default_value = "0.0.0.0:5560"
    )]
    pub(crate) sub_bind: String,
}

/// Runs the proxy until Ctrl-C or SIGTERM.
pub(crate) async fn execute(args: &ZmqProxyArgs, shutdown: &Shutdown) -> anyhow::Result<()> {
    let proxy = ZmqProxy::start(&args.pub_bind, &args.sub_bind)
        .await
        .context("starting the ZeroMQ proxy")?;
    let (publishers, subscribers) = (proxy.publisher_addr(), proxy.subscriber_addr());
    eprintln!(
        "zmq-proxy: listening: publishers connect to {publishers} (XSUB), subscribers to \
         {subscribers} (XPUB); Ctrl-C to stop"
    );
    if subscribers.port() == publishers.port().wrapping_add(1) {
        eprintln!(
            "zmq-proxy: use --broker zmq+tcp://HOST:{}",
            publishers.port()
        );
    } else {
        eprintln!(
            "zmq-proxy: warning: iotload expects subscribers on the port after the \
             publishers' ({}); other ZeroMQ clients can use these ports as they are",
            publishers.port().wrapping_add(1)
        );
    }
    shutdown.produce().cancelled().await;
    let forwarded = proxy.stop().await;
    eprintln!("zmq-proxy: stopped after forwarding {forwarded} messages");
    Ok(())
}
