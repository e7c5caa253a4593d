//! The names of a store's keys: today's flat names on one Redis server, the same names
//! with hash tags on a Redis Cluster, so that what a Lua script or a transaction touches
//! together lives in one slot.
//!
//! On a cluster the keys of one run share the tag `{run:R}`, the keys of one topic of a
//! run `{run:R:topic:T}` (so a run's topics spread over the shards) and the topic
//! advertisements and claims `{fleet}` (claiming walks them in one script). The run
//! index, barriers, device blocks and clock records are single keys and keep their
//! names. `docs/store.md` lists both layouts.

/// Prefix of every key.
const PREFIX: &str = "iotload:";

/// Which layout a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KeyLayout {
    /// Hash tags for a Redis Cluster.
    cluster: bool,
}

impl KeyLayout {
    /// The layout for one server (`cluster: false`) or a Redis Cluster.
    pub(super) fn new(cluster: bool) -> Self {
        Self { cluster }
    }

    /// The runs, by start time (a sorted set).
    pub(super) fn runs(self) -> String {
        format!("{PREFIX}runs")
    }

    /// A run's instance records (a hash of `component/instance` → JSON).
    pub(super) fn instances(self, run: &str) -> String {
        self.of_run(run, "instances")
    }

    /// A run's topics (a set).
    pub(super) fn topics(self, run: &str) -> String {
        self.of_run(run, "topics")
    }

    /// A topic's `seconds` (counters), `hdr` (histograms) or `raw` (records) key.
    pub(super) fn topic(self, run: &str, topic: &str, what: &str) -> String {
        if self.cluster {
            format!("{PREFIX}{{run:{run}:topic:{topic}}}:{what}")
        } else {
            format!("{PREFIX}run:{run}:topic:{topic}:{what}")
        }
    }

    /// The marker of a written batch. On a cluster a batch is written per topic, each
    /// part with its marker in its topic's slot.
    pub(super) fn written(self, id: u64, run: &str, topic: &str) -> String {
        if self.cluster {
            format!("{PREFIX}{{run:{run}:topic:{topic}}}:written:{id:016x}")
        } else {
            format!("{PREFIX}written:{id:016x}")
        }
    }

    /// The advertised topics (a set).
    pub(super) fn ads(self) -> String {
        format!("{}ads", self.fleet())
    }

    /// Prefix of an advertisement key (followed by the topic).
    pub(super) fn ad_prefix(self) -> String {
        format!("{}ad:", self.fleet())
    }

    /// Prefix of a claim key (followed by the topic).
    pub(super) fn claim_prefix(self) -> String {
        format!("{}claim:", self.fleet())
    }

    /// A barrier (a set of members).
    pub(super) fn barrier(self, name: &str) -> String {
        format!("{PREFIX}barrier:{name}")
    }

    /// The next free device number of a run.
    pub(super) fn devices(self, run: &str) -> String {
        format!("{PREFIX}devices:{run}")
    }

    /// A run's clock estimates (a hash of instance → "offset_us bound_us").
    pub(super) fn clocks(self, run: &str) -> String {
        format!("{PREFIX}clocks:{run}")
    }

    fn of_run(self, run: &str, what: &str) -> String {
        if self.cluster {
            format!("{PREFIX}{{run:{run}}}:{what}")
        } else {
            format!("{PREFIX}run:{run}:{what}")
        }
    }

    fn fleet(self) -> &'static str {
        if self.cluster {
            "iotload:{fleet}:"
        } else {
            PREFIX
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot a cluster gives a key: the CRC16 of its hash tag (or of the whole key).
    fn tag(key: &str) -> &str {
        match key.find('{') {
            Some(open) => match key[open + 1..].find('}') {
                Some(len) if len > 0 => &key[open + 1..open + 1 + len],
                _ => key,
            },
            None => key,
        }
    }

    #[test]
    fn one_server_keeps_the_documented_names() {
        let k = KeyLayout::new(false);
        assert_eq!(k.runs(), "iotload:runs");
        assert_eq!(k.instances("r1"), "iotload:run:r1:instances");
        assert_eq!(k.topics("r1"), "iotload:run:r1:topics");
        assert_eq!(k.topic("r1", "a/b", "hdr"), "iotload:run:r1:topic:a/b:hdr");
        assert_eq!(
            k.written(255, "r1", "t"),
            "iotload:written:00000000000000ff"
        );
        assert_eq!(k.ads(), "iotload:ads");
        assert_eq!(k.ad_prefix(), "iotload:ad:");
        assert_eq!(k.claim_prefix(), "iotload:claim:");
        assert_eq!(k.barrier("b"), "iotload:barrier:b");
    }

    #[test]
    fn on_a_cluster_what_is_used_together_shares_a_slot() {
        let k = KeyLayout::new(true);
        let topic_keys = [
            k.topic("r1", "a/b", "seconds"),
            k.topic("r1", "a/b", "hdr"),
            k.topic("r1", "a/b", "raw"),
            k.written(7, "r1", "a/b"),
        ];
        for key in &topic_keys {
            assert_eq!(tag(key), "run:r1:topic:a/b", "{key}");
        }
        assert_ne!(tag(&k.topic("r1", "a/c", "hdr")), tag(&topic_keys[0]));
        assert_eq!(tag(&k.topics("r1")), tag(&k.instances("r1")));
        let fleet = [
            k.ads(),
            format!("{}t1", k.ad_prefix()),
            format!("{}t2", k.claim_prefix()),
        ];
        for key in &fleet {
            assert_eq!(tag(key), "fleet", "{key}");
        }
        // A brace in a topic ends the tag early, but the same way for all its keys.
        let odd = [
            k.topic("r1", "x}y", "seconds"),
            k.topic("r1", "x}y", "hdr"),
            k.written(1, "r1", "x}y"),
        ];
        assert!(odd.iter().all(|key| tag(key) == tag(&odd[0])));
    }
}
