//! How a pattern subscription finds its topics: every refresh interval the namespace's
//! topics are listed and matched against the pattern, and a consumer is created for each
//! match that has none yet.
//!
//! Each attempt runs in a task of its own and always runs to the end: a receive that is
//! abandoned, or a refresh that comes round while consumers are still being created, never
//! cuts it short, and at most one attempt is under way at a time. (The `pulsar` crate's
//! own pattern consumer starts its attempt over at every refresh: on a broker so busy that
//! creating the consumers takes longer than the interval, new topics were never consumed,
//! and an abandoned attempt could keep an exclusive subscription that the next one was then
//! refused.) A topic counts as consumed only once its consumer exists; a topic whose
//! consumer could not be created is logged and tried again at the next refresh.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::join_all;
use pulsar::proto::command_get_topics_of_namespace::Mode;
use pulsar::{ConsumerBuilder, Pulsar, TokioExecutor};
use regex::Regex;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::subscriber::PulsarConsumer;

/// What one attempt came back with, for each new matching topic: its consumer, or why it
/// could not be created.
type Found = Vec<(String, Result<PulsarConsumer, pulsar::Error>)>;

/// The topic discovery of one pattern subscription.
pub(super) struct Discovery {
    client: Pulsar<TokioExecutor>,
    /// `tenant/namespace`, whose topics are listed.
    namespace: String,
    /// The anchored pattern over full topic names.
    pattern: Regex,
    /// The subscription every consumer joins (name, type, consumer name and options):
    /// each consumer adds its one topic.
    template: ConsumerBuilder<TokioExecutor>,
    /// The topics (and partitions) that have a consumer. Shared with the attempt under
    /// way, which only reads it, so starting one copies nothing.
    consumed: Arc<HashSet<String>>,
    refresh: Interval,
    /// The attempt under way, if any.
    attempt: Option<JoinHandle<Result<Found, pulsar::Error>>>,
}

impl Discovery {
    /// A discovery that lists the topics every `every`, the first time one interval from
    /// now (or from the end of [`Discovery::first`]).
    pub(super) fn new(
        client: Pulsar<TokioExecutor>,
        namespace: String,
        pattern: Regex,
        template: ConsumerBuilder<TokioExecutor>,
        every: Duration,
    ) -> Self {
        let mut refresh = tokio::time::interval_at(Instant::now() + every, every);
        refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            client,
            namespace,
            pattern,
            template,
            consumed: Arc::new(HashSet::new()),
            refresh,
            attempt: None,
        }
    }

    /// The first discovery, awaited: a consumer for every topic that matches now, or the
    /// first error (a subscriber that cannot subscribe fails at once).
    pub(super) async fn first(&mut self) -> Result<Vec<PulsarConsumer>, pulsar::Error> {
        let found = find(
            self.client.clone(),
            self.namespace.clone(),
            self.pattern.clone(),
            self.template.clone(),
            Arc::clone(&self.consumed),
        )
        .await?;
        let mut consumers = Vec::with_capacity(found.len());
        for (topic, consumer) in found {
            consumers.push(consumer?);
            Arc::make_mut(&mut self.consumed).insert(topic);
        }
        self.refresh.reset();
        Ok(consumers)
    }

    /// The consumers of topics found since the last call (often none). Takes in a finished
    /// attempt and starts one at each refresh unless one is still under way; `cx` is woken
    /// when the attempt finishes or the next refresh is due.
    pub(super) fn poll_new_consumers(&mut self, cx: &mut Context<'_>) -> Vec<PulsarConsumer> {
        let mut consumers = Vec::new();
        loop {
            if let Some(attempt) = &mut self.attempt
                && let Poll::Ready(outcome) = Pin::new(attempt).poll(cx)
            {
                self.attempt = None;
                match outcome {
                    Ok(Ok(found)) => consumers.extend(self.take_in(found)),
                    Ok(Err(e)) => tracing::warn!(
                        "pulsar: listing the topics of {} failed (tried again at the next \
                         refresh): {e}",
                        self.namespace
                    ),
                    Err(e) => tracing::warn!(
                        "pulsar: looking for new topics in {} stopped (tried again at the next \
                         refresh): {e}",
                        self.namespace
                    ),
                }
            }
            if self.refresh.poll_tick(cx).is_pending() {
                return consumers;
            }
            if self.attempt.is_none() {
                self.attempt = Some(tokio::spawn(find(
                    self.client.clone(),
                    self.namespace.clone(),
                    self.pattern.clone(),
                    self.template.clone(),
                    Arc::clone(&self.consumed),
                )));
            }
        }
    }

    /// Marks the topics whose consumer was created as consumed and returns those
    /// consumers; the others are logged, to be tried again at the next refresh.
    fn take_in(&mut self, found: Found) -> Vec<PulsarConsumer> {
        let mut consumers = Vec::with_capacity(found.len());
        for (topic, consumer) in found {
            match consumer {
                Ok(consumer) => {
                    tracing::debug!("pulsar: consuming the new topic {topic}");
                    Arc::make_mut(&mut self.consumed).insert(topic);
                    consumers.push(consumer);
                }
                Err(e) => tracing::warn!(
                    "pulsar: subscribing to the new topic {topic} failed (tried again at the \
                     next refresh): {e}"
                ),
            }
        }
        consumers
    }

    /// Forgets a topic whose consumer failed, so the next refresh subscribes to it again.
    pub(super) fn forget(&mut self, topic: &str) {
        Arc::make_mut(&mut self.consumed).remove(topic);
    }

    /// Stops looking: aborts the attempt under way and returns the consumers it had
    /// already created if it finished first, so they can be closed with the others.
    pub(super) async fn stop(&mut self) -> Vec<PulsarConsumer> {
        let Some(attempt) = self.attempt.take() else {
            return Vec::new();
        };
        attempt.abort();
        match attempt.await {
            Ok(Ok(found)) => found
                .into_iter()
                .filter_map(|(_, consumer)| consumer.ok())
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        if let Some(attempt) = &self.attempt {
            attempt.abort();
        }
    }
}

/// One attempt: lists the namespace's topics and creates a consumer for each match not
/// in `consumed`, all at once; one topic's failure does not stop the others.
async fn find(
    client: Pulsar<TokioExecutor>,
    namespace: String,
    pattern: Regex,
    template: ConsumerBuilder<TokioExecutor>,
    consumed: Arc<HashSet<String>>,
) -> Result<Found, pulsar::Error> {
    let listed = client.get_topics_of_namespace(namespace, Mode::All).await?;
    let new = unconsumed(listed, &pattern, &consumed);
    drop(consumed);
    Ok(join_all(new.into_iter().map(|topic| {
        let builder = template.clone().with_topic(topic.clone());
        async move { (topic, builder.build::<Vec<u8>>().await) }
    }))
    .await)
}

/// The listed topics that match `pattern` and have no consumer yet, sorted, each once.
fn unconsumed(listed: Vec<String>, pattern: &Regex, consumed: &HashSet<String>) -> Vec<String> {
    let mut new: Vec<String> = listed
        .into_iter()
        .filter(|topic| pattern.is_match(topic) && !consumed.contains(topic))
        .collect();
    new.sort_unstable();
    new.dedup();
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_matching_topics_without_a_consumer_are_new() {
        let pattern = Regex::new(r"^persistent://public/default/iot\.[^.]*\.a$").unwrap();
        let consumed: HashSet<String> = ["persistent://public/default/iot.1.a".to_string()]
            .into_iter()
            .collect();
        let listed = [
            "persistent://public/default/iot.2.a",
            "persistent://public/default/iot.1.a",
            "persistent://public/default/iot.1.b",
            "persistent://public/default/iot.0.a",
            "persistent://public/default/iot.2.a",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            unconsumed(listed, &pattern, &consumed),
            [
                "persistent://public/default/iot.0.a",
                "persistent://public/default/iot.2.a"
            ]
        );
    }
}
