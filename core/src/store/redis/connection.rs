//! The store's connection: one self-reconnecting connection to a server, or a cluster
//! connection that routes each command to the shard owning its keys (and is replaced
//! when stuck, `cluster_link`); both answer commands, pipelines and scripts the same way.

use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisResult, Value};

use super::cluster_link::ClusterLink;
use super::tls::Client;
use super::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT, map_error};
use crate::store::StoreError;

/// A connection to the store's server or cluster; cheap to clone, all clones share it.
#[derive(Clone)]
pub(super) enum Connection {
    /// One server, reconnecting by itself after it went away.
    Single(ConnectionManager),
    /// A Redis Cluster: follows slot moves and fail-overs by itself, and is replaced by
    /// a fresh connection when it gets stuck.
    Cluster(ClusterLink),
}

impl Connection {
    /// Connects as `client` says; `redacted` is the URL errors show.
    pub(super) async fn open(client: Client, redacted: &str) -> Result<Self, StoreError> {
        match client {
            Client::Single(client) => open_single(client, redacted).await,
            Client::Cluster(client) => ClusterLink::open(client, redacted).await.map(Self::Cluster),
        }
    }

    /// Whether this is a cluster connection (keys then carry hash tags).
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The server's `TIME`, in µs since the epoch. On a cluster always the same node's
    /// (the one serving slot 0), so that clock offsets measured against it agree.
    pub(super) async fn server_time_us(&mut self) -> RedisResult<u64> {
        let mut cmd = redis::cmd("TIME");
        let (secs, micros): (u64, u64) = match self {
            Self::Single(con) => cmd.query_async(con).await?,
            Self::Cluster(link) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(0, SlotAddr::Master));
                let value = link
                    .route_command(std::mem::take(&mut cmd), RoutingInfo::SingleNode(route))
                    .await?;
                redis::from_redis_value(value)?
            }
        };
        Ok(secs * 1_000_000 + micros)
    }
}

/// Connects to one server: one plain attempt first (the manager retries every failure
/// with backoff, which would only delay a clear answer: refused, wrong password), then
/// the self-reconnecting manager.
async fn open_single(client: redis::Client, redacted: &str) -> Result<Connection, StoreError> {
    let probe_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let mut probe = client
        .get_multiplexed_async_connection_with_config(&probe_config)
        .await
        .map_err(|e| map_error(redacted, &e))?;
    ping(&mut probe, redacted).await?;
    drop(probe);
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_with_config(client, config)
        .await
        .map(Connection::Single)
        .map_err(|e| map_error(redacted, &e))
}

/// Checks that the server answers `PING` on `con`.
pub(super) async fn ping(con: &mut impl ConnectionLike, redacted: &str) -> Result<(), StoreError> {
    redis::cmd("PING")
        .query_async::<String>(con)
        .await
        .map(drop)
        .map_err(|e| map_error(redacted, &e))
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> BoxFuture<'a, RedisResult<Value>> {
        match self {
            Self::Single(con) => con.req_packed_command(cmd),
            Self::Cluster(link) => {
                let link = link.clone();
                Box::pin(async move { link.command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> BoxFuture<'a, RedisResult<Vec<Value>>> {
        match self {
            Self::Single(con) => con.req_packed_commands(pipeline, offset, count),
            Self::Cluster(link) => {
                let link = link.clone();
                Box::pin(async move { link.pipeline(pipeline, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(con) => con.get_db(),
            Self::Cluster(_) => 0,
        }
    }
}
