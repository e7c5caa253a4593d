//! The collector's part in a fleet (R10): claiming advertised topics one to one through
//! the results store, keeping the claims alive, and releasing them at the end.

use std::sync::Arc;
use std::time::Duration;

use iotload_core::store::{Backend, StoreError};
use tokio_util::sync::CancellationToken;

/// Claims up to `n` topics, retrying every 200 ms until `n` are held or `timeout` passes.
/// Returns what it holds (possibly fewer than `n`, never none unless stopped).
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
        if held.len() < n {
            let more = store.claim(n - held.len(), owner, lease).await?;
            held.extend(more);
        }
        if held.len() >= n || (tokio::time::Instant::now() >= deadline && !held.is_empty()) {
            held.sort();
            return Ok(held);
        }
        if !held.is_empty() {
            // Keep what we have alive while waiting for more.
            held = store.renew_claims(&held, owner, lease).await?;
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(held),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
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
                    match store.renew_claims(&topics, &owner, lease).await {
                        Ok(still) if still.len() < topics.len() => tracing::warn!(
                            "lost {} of {} claimed topics: their leases ran out and other collectors claimed them",
                            topics.len() - still.len(),
                            topics.len()
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!("renewing claimed topics failed: {e}"),
                    }
                }
            }
        }
        if let Err(e) = store.release(&topics, &owner).await {
            tracing::warn!("releasing claimed topics failed: {e}");
        }
    })
}
