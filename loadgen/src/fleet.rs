//! The loadgen's part in a fleet, through the results store: advertising its action topics
//! for collectors to claim (R9), the start barrier and start time, and per-topic,
//! per-second sent counts.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use iotload_core::stamp::now_us;
use iotload_core::store::writer::{Record, RecordSender};
use iotload_core::store::{ALL_TOPICS, Backend, StoreError, TopicSecond};
use tokio_util::sync::CancellationToken;

use crate::{LoadPlan, LoadStats};

/// What the loadgen needs from its fleet.
#[derive(Clone, Default)]
pub struct Fleet {
    /// The results store, when there is one.
    pub store: Option<Arc<dyn Backend>>,
    /// Where per-second records go.
    pub records: Option<RecordSender>,
    /// Run id of stored records.
    pub run_id: String,
    /// This instance's name.
    pub instance: String,
    /// Lease of advertisements.
    pub lease: Duration,
    /// Store one row per second for all topics (topic `*`) instead of one per topic.
    pub by_instance: bool,
}

impl Fleet {
    /// Advertises every device's action topic and keeps renewing until `stop`; withdraws
    /// them when it ends. Returns once the first advertisement is stored.
    pub(crate) async fn advertise(
        &self,
        plan: &LoadPlan,
        stop: CancellationToken,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, StoreError> {
        let Some(store) = self.store.clone() else {
            return Ok(None);
        };
        let topics = plan.action_topics();
        store.advertise(&topics, &self.instance, self.lease).await?;
        let (owner, lease) = (self.instance.clone(), self.lease);
        Ok(Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(lease / 3);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = store.advertise(&topics, &owner, lease).await {
                            tracing::warn!("renewing advertised topics failed: {e}");
                        }
                    }
                }
            }
            if let Err(e) = store.withdraw(&topics, &owner).await {
                tracing::warn!("withdrawing advertised topics failed: {e}");
            }
        })))
    }

    /// Stores this instance's clock against the store's, so collectors on other hosts can
    /// tell how far their clocks are from this one (a failure only warns).
    pub(crate) async fn publish_clock(&self) {
        let Some(store) = &self.store else { return };
        let published = async {
            let clock = iotload_core::clock_offset::estimate(store.as_ref(), 16).await?;
            store.put_clock(&self.run_id, &self.instance, clock).await
        };
        if let Err(e) = published.await {
            tracing::warn!("storing this loadgen's clock estimate failed: {e}");
        }
    }

    /// Joins the start barrier and waits for `members`, then for `start_at`.
    pub(crate) async fn wait_for_start(
        &self,
        members: Option<u64>,
        start_at: Option<SystemTime>,
        stop: &CancellationToken,
    ) -> Result<(), StoreError> {
        if let (Some(n), Some(store)) = (members, &self.store) {
            let mut have = store.join_barrier(&self.run_id, &self.instance).await?;
            let mut said = 0;
            while have < n {
                if have != said {
                    eprintln!(
                        "waiting for {n} instances of run {} ({have} joined)",
                        self.run_id
                    );
                    said = have;
                }
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                have = store.barrier_size(&self.run_id).await?;
            }
        }
        if let Some(at) = start_at
            && let Ok(wait) = at.duration_since(SystemTime::now())
        {
            eprintln!("starting in {:.1} s (--start-at)", wait.as_secs_f64());
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        Ok(())
    }

    /// Every second, stores how many messages each device sent, under its action topic.
    pub(crate) fn report_sent(
        &self,
        plan: &LoadPlan,
        stats: Arc<LoadStats>,
        stop: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let records = self.records.clone()?;
        let topics = plan.action_topics();
        let (run_id, instance) = (self.run_id.clone(), self.instance.clone());
        let by_instance = self.by_instance;
        Some(tokio::spawn(async move {
            let mut last = vec![0u64; topics.len()];
            // Tick just after each whole second, so a tick's counts belong to the second
            // that just ended.
            let into_second = Duration::from_micros(now_us() % 1_000_000);
            let first = tokio::time::Instant::now() + (Duration::from_millis(1010) - into_second);
            let mut tick = tokio::time::interval_at(first, Duration::from_secs(1));
            let mut done = false;
            while !done {
                tokio::select! {
                    _ = stop.cancelled() => done = true,
                    _ = tick.tick() => {}
                }
                let second = now_us() / 1_000_000 - u64::from(!done);
                let row = |topic: &str, sent: u64| {
                    Record::Second(TopicSecond {
                        run_id: run_id.clone(),
                        topic: topic.to_owned(),
                        second,
                        instance: instance.clone(),
                        sent,
                        ..TopicSecond::default()
                    })
                };
                let mut all_sent = 0;
                for (i, topic) in topics.iter().enumerate() {
                    let now = stats.per_device[i].load(Ordering::Relaxed);
                    if now > last[i] {
                        if by_instance {
                            all_sent += now - last[i];
                        } else {
                            records.offer(row(topic, now - last[i]));
                        }
                        last[i] = now;
                    }
                }
                if all_sent > 0 {
                    records.offer(row(ALL_TOPICS, all_sent));
                }
            }
        }))
    }
}
