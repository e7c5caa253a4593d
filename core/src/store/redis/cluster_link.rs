//! The store's Redis Cluster connection, replaced by a fresh one when a command times
//! out: after a master fails over, the cluster client can stay stuck with every command
//! timing out (measured here: 5 runs in 14 with a master killed mid-write), while a new
//! connection reads the topology anew and works at once.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::RoutingInfo;
use redis::{Cmd, Pipeline, RedisResult, Value};

use super::connection::ping;
use super::map_error;
use crate::store::StoreError;

/// How long joining a cluster (reaching a node, reading the slots, connecting to every
/// master) may take; the client itself does not bound it.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);

/// A cluster connection shared by its clones; the one in use has a generation number, so
/// that callers that saw the same one time out replace it once.
#[derive(Clone)]
pub(super) struct ClusterLink {
    client: Arc<ClusterClient>,
    redacted: Arc<str>,
    current: Arc<Mutex<(u64, ClusterConnection)>>,
    replacing: Arc<tokio::sync::Mutex<()>>,
}

impl ClusterLink {
    /// Joins the cluster `client` describes and checks it answers; `redacted` is the URL
    /// errors show.
    pub(super) async fn open(client: ClusterClient, redacted: &str) -> Result<Self, StoreError> {
        let mut con = join(&client).await.map_err(|e| map_error(redacted, &e))?;
        ping(&mut con, redacted).await?;
        Ok(Self {
            client: Arc::new(client),
            redacted: redacted.into(),
            current: Arc::new(Mutex::new((0, con))),
            replacing: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Sends `cmd` to the node `routing` names.
    pub(super) async fn route_command(&self, cmd: Cmd, routing: RoutingInfo) -> RedisResult<Value> {
        let (generation, mut con) = self.current();
        let result = con.route_command(cmd, routing).await;
        self.after(generation, result).await
    }

    /// Sends one command to the shard owning its keys.
    pub(super) async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (generation, mut con) = self.current();
        let result = con.req_packed_command(cmd).await;
        self.after(generation, result).await
    }

    /// Sends `count` commands of `pipeline` from `offset` to the shard owning their keys.
    pub(super) async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (generation, mut con) = self.current();
        let result = con.req_packed_commands(pipeline, offset, count).await;
        self.after(generation, result).await
    }

    /// The connection in use and its generation.
    fn current(&self) -> (u64, ClusterConnection) {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Passes `result` on, after replacing connection `generation` if it timed out.
    async fn after<T>(&self, generation: u64, result: RedisResult<T>) -> RedisResult<T> {
        if result.as_ref().is_err_and(redis::RedisError::is_timeout) {
            self.replace(generation).await;
        }
        result
    }

    /// Replaces connection `generation` with a fresh one, unless a caller already did.
    /// A failed attempt leaves it in place: the next timeout tries again.
    async fn replace(&self, generation: u64) {
        let _one_at_a_time = self.replacing.lock().await;
        if self.current().0 != generation {
            return;
        }
        match join(&self.client).await {
            Ok(con) => {
                tracing::warn!(
                    "results store {}: a command timed out; connected to the cluster anew",
                    self.redacted
                );
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
                    (generation + 1, con);
            }
            Err(e) => tracing::warn!(
                "results store {}: a command timed out and connecting anew failed (tried \
                 again at the next timeout): {e}",
                self.redacted
            ),
        }
    }
}

/// A new connection to the cluster `client` describes, within [`JOIN_TIMEOUT`].
async fn join(client: &ClusterClient) -> RedisResult<ClusterConnection> {
    tokio::time::timeout(JOIN_TIMEOUT, client.get_async_connection())
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from the cluster in {JOIN_TIMEOUT:?}"),
            )
            .into())
        })
}
