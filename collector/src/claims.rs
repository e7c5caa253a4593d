//! The collector's part in a fleet (R10): claiming advertised topics one to one through
//! the results store, keeping the claims alive, and releasing them at the end.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use iotload_core::store::{Backend, StoreError};
use tokio_util::sync::CancellationToken;

/// How long one claim or renewal may wait for the store's answer before it is given up
/// and asked again: less than the store's own response timeout (10 s), so a store that
/// stops answering for a while is asked again instead of failing the collector. A claim
/// whose answer was lost holds its topics only until its lease runs out, so asking again
/// loses nothing. (Once seen: a few of twenty collectors starting at once against a Redis
/// Cluster waited for minutes on a claim whose answer never came, and the fleet never
/// started.)
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Claims up to `n` topics, retrying every 200 ms until `n` are held, `timeout` passes or
/// `stop` is cancelled. Returns what it holds then: possibly fewer than `n`, possibly none
/// (nothing was advertised in time, or it was stopped).
pub async fn claim_topics(
    store: &Arc<dyn Backend>,
    n: usize,
    owner: &str,
    lease: Duration,
    timeout: Duration,
    stop: &CancellationToken,
) -> Result<Vec<String>, StoreError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut held: Vec<String> = Vec::new();
    loop {
        if held.len() < n
            && let Some(more) =
                answered("claiming topics", store.claim(n - held.len(), owner, lease)).await
        {
            held.extend(more?);
        }
        if held.len() >= n || tokio::time::Instant::now() >= deadline {
            held.sort();
            return Ok(held);
        }
        if !held.is_empty() {
            // Keep what we have alive while waiting for more.
            let renewal = store.renew_claims(&held, owner, lease);
            if let Some(still) = answered("renewing the claimed topics", renewal).await {
                held = still?;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(held),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// The store's answer to `call`, or `None` (logged: it is asked again) when none came
/// within [`CALL_TIMEOUT`].
async fn answered<T>(doing: &str, call: impl Future<Output = T>) -> Option<T> {
    let answer = tokio::time::timeout(CALL_TIMEOUT, call).await.ok();
    if answer.is_none() {
        tracing::warn!(
            "{doing}: the results store did not answer within {} s; trying again",
            CALL_TIMEOUT.as_secs()
        );
    }
    answer
}

/// Renews the claims every third of the lease until `stop`, then releases them.
pub fn keep_claims(
    store: Arc<dyn Backend>,
    topics: Vec<String>,
    owner: String,
    lease: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(lease / 3);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    let renewal = store.renew_claims(&topics, &owner, lease);
                    match answered("renewing the claimed topics", renewal).await {
                        None => {}
                        Some(Ok(still)) if still.len() < topics.len() => tracing::warn!(
                            "lost {} of {} claimed topics: their leases ran out and other collectors claimed them",
                            topics.len() - still.len(),
                            topics.len()
                        ),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => tracing::warn!("renewing claimed topics failed: {e}"),
                    }
                }
            }
        }
        if let Err(e) = store.release(&topics, &owner).await {
            tracing::warn!("releasing claimed topics failed: {e}");
        }
    })
}
