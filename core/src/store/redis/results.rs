//! The RedisStore as a results store: batches of per-second records in, runs and records out.

use super::*;

#[async_trait::async_trait]
impl Store for RedisStore {
    fn url(&self) -> &str {
        &self.url
    }

    async fn put_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(run).map_err(|e| StoreError::Io {
            url: self.url.clone(),
            reason: format!("cannot encode the run record: {e}"),
        })?;
        let field = format!("{}/{}", run.component, run.instance);
        let mut instance = redis::cmd("HSET");
        instance
            .arg(self.keys.instances(&run.run_id))
            .arg(field)
            .arg(json);
        let mut listed = redis::cmd("ZADD");
        listed
            .arg(self.keys.runs())
            .arg("LT")
            .arg(run.started_us)
            .arg(&run.run_id);
        if self.con.is_cluster() {
            // Two slots: the instance first, so a listed run always has one; both
            // commands may be repeated.
            self.query_one::<redis::Value>(&instance).await?;
            self.query_one::<redis::Value>(&listed).await?;
        } else {
            self.idempotent(|mut con| {
                let (instance, listed) = (&instance, &listed);
                async move {
                    redis::pipe()
                        .atomic()
                        .add_command(listed.clone())
                        .ignore()
                        .add_command(instance.clone())
                        .ignore()
                        .exec_async(&mut con)
                        .await
                }
            })
            .await?;
        }
        let mut current = self
            .current_run
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = Some(run.run_id.clone());
        Ok(())
    }

    async fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.seconds.is_empty() && batch.raw.is_empty() {
            return Ok(());
        }
        let merged = self.merge_duplicates(batch)?;
        let raw_run = if batch.raw.is_empty() {
            None
        } else {
            Some(self.batch_run(batch).ok_or_else(|| {
                StoreError::Io {
                    url: self.url.clone(),
                    reason: "raw records without a run: call put_run first or send them with the \
                         run's aggregates"
                        .into(),
                }
            })?)
        };
        let mut raw_by_topic: BTreeMap<&str, Vec<&RawRecord>> = BTreeMap::new();
        for (topic, r) in &batch.raw {
            raw_by_topic.entry(topic.as_str()).or_default().push(r);
        }

        // One server takes the batch in one script call; a cluster one call per topic
        // (a script's keys must share a slot), after the run's topic sets.
        let cluster = self.con.is_cluster();
        let mut parts: BTreeMap<(&str, &str), Part<'_>> = BTreeMap::new();
        let mut new_topics: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for ((run, topic, _, _), s) in &merged {
            let part = parts.entry(if cluster { (run, topic) } else { ("", "") });
            part.or_default().seconds.push(s);
            new_topics.entry(run).or_default().insert(topic);
        }
        if let Some(run) = raw_run.as_deref() {
            for (topic, records) in raw_by_topic {
                let part = parts.entry(if cluster { (run, topic) } else { ("", "") });
                part.or_default().raw.push((topic, records));
                new_topics.entry(run).or_default().insert(topic);
            }
        }
        if cluster {
            let adds: Vec<redis::Cmd> = new_topics
                .iter()
                .map(|(run, topics)| {
                    let mut add = redis::cmd("SADD");
                    add.arg(self.keys.topics(run)).arg(topics);
                    add
                })
                .collect();
            self.query_each::<redis::Value>(&adds).await?;
            let no_topics = BTreeMap::new();
            futures_util::future::try_join_all(parts.iter().map(|((run, topic), part)| {
                let marker = (batch.id != 0).then(|| self.keys.written(batch.id, run, topic));
                self.write_part(part, raw_run.as_deref(), &no_topics, marker)
            }))
            .await?;
            Ok(())
        } else {
            let Some(part) = parts.values().next() else {
                return Ok(());
            };
            let marker = (batch.id != 0).then(|| self.keys.written(batch.id, "", ""));
            self.write_part(part, raw_run.as_deref(), &new_topics, marker)
                .await
        }
    }

    async fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut listed = redis::cmd("ZREVRANGE");
        listed.arg(self.keys.runs()).arg(0).arg(-1);
        let ids: Vec<String> = self.query_one(&listed).await?;
        let instances: Vec<redis::Cmd> = ids
            .iter()
            .map(|id| {
                let mut values = redis::cmd("HVALS");
                values.arg(self.keys.instances(id));
                values
            })
            .collect();
        let values: Vec<Vec<String>> = self.query_each(&instances).await?;
        let mut records = Vec::new();
        for json in values.into_iter().flatten() {
            let record: RunRecord = serde_json::from_str(&json)
                .map_err(|e| self.corrupt(format!("bad run record: {e}")))?;
            records.push(record);
        }
        records.sort_by(|a, b| {
            b.started_us
                .cmp(&a.started_us)
                .then_with(|| a.run_id.cmp(&b.run_id))
                .then_with(|| a.component.cmp(&b.component))
                .then_with(|| a.instance.cmp(&b.instance))
        });
        Ok(records)
    }

    async fn seconds(&self, run_id: &str) -> Result<Vec<TopicSecond>, StoreError> {
        let topics = self.run_topics(run_id).await?;
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let reads: Vec<redis::Cmd> = topics
            .iter()
            .flat_map(|topic| {
                ["seconds", "hdr"].map(|what| {
                    let mut all = redis::cmd("HGETALL");
                    all.arg(self.keys.topic(run_id, topic, what));
                    all
                })
            })
            .collect();
        let hashes: Vec<Vec<(String, Vec<u8>)>> = self.query_each(&reads).await?;
        let mut out = Vec::new();
        for (topic, pair) in topics.iter().zip(hashes.chunks(2)) {
            let [counters, hdrs] = pair else {
                return Err(self.corrupt("short reply".into()));
            };
            out.extend(self.rows_of_topic(run_id, topic, counters, hdrs)?);
        }
        Ok(out)
    }

    async fn extent(&self, run_id: &str) -> Result<Option<RunExtent>, StoreError> {
        let topics = self.run_topics(run_id).await?;
        let Some(spans) = self.writer_spans(run_id, &topics).await? else {
            // Written before the writers' spans were kept: read the whole run.
            return Ok(RunExtent::of(&self.seconds(run_id).await?));
        };
        let first = spans.iter().flatten().map(|(_, (a, _))| *a).min();
        let last = spans.iter().flatten().map(|(_, (_, b))| *b).max();
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(None);
        };
        Ok(Some(RunExtent {
            topics,
            first,
            last,
        }))
    }

    async fn seconds_between(
        &self,
        run_id: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<TopicSecond>, StoreError> {
        let topics = self.run_topics(run_id).await?;
        let Some(spans) = self.writer_spans(run_id, &topics).await? else {
            let mut rows = self.seconds(run_id).await?;
            rows.retain(|r| (from..=to).contains(&r.second));
            return Ok(rows);
        };
        // The fields of the slice, by name: every second each writer of a topic may have
        // written, six counters and two histograms each. HMGET needs at least one field,
        // so a topic with nothing in the slice is not asked.
        let mut asked: Vec<(usize, Vec<String>)> = Vec::with_capacity(topics.len() * 2);
        for (i, writers) in spans.iter().enumerate() {
            let (mut counters, mut hdrs) = (Vec::new(), Vec::new());
            for (writer, (first, last)) in writers {
                for second in from.max(*first)..=to.min(*last) {
                    for name in COUNTER_FIELDS {
                        counters.push(format!("{second}/{writer}/{name}"));
                    }
                    for name in [HDR_RAW, HDR_CORRECTED] {
                        hdrs.push(format!("{second}/{writer}/{name}"));
                    }
                }
            }
            if !counters.is_empty() {
                asked.push((2 * i, counters));
                asked.push((2 * i + 1, hdrs));
            }
        }
        let reads: Vec<redis::Cmd> = asked
            .iter()
            .map(|(k, fields)| {
                let what = if k % 2 == 0 { "seconds" } else { "hdr" };
                let mut some = redis::cmd("HMGET");
                some.arg(self.keys.topic(run_id, &topics[k / 2], what))
                    .arg(fields);
                some
            })
            .collect();
        let replies: Vec<Vec<Option<Vec<u8>>>> = self.query_each(&reads).await?;
        let mut out = Vec::new();
        for (pair, values) in asked.chunks(2).zip(replies.chunks(2)) {
            let ([(k, counter_names), (_, hdr_names)], [counter_values, hdr_values]) =
                (pair, values)
            else {
                return Err(self.corrupt("short reply".into()));
            };
            let present = |names: &[String], values: &[Option<Vec<u8>>]| {
                names
                    .iter()
                    .zip(values)
                    .filter_map(|(n, v)| Some((n.clone(), v.clone()?)))
                    .collect::<Vec<_>>()
            };
            let counters = present(counter_names, counter_values);
            let hdrs = present(hdr_names, hdr_values);
            out.extend(self.rows_of_topic(run_id, &topics[k / 2], &counters, &hdrs)?);
        }
        Ok(out)
    }

    async fn raw(&self, run_id: &str) -> Result<Vec<(String, RawRecord)>, StoreError> {
        let topics = self.run_topics(run_id).await?;
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let reads: Vec<redis::Cmd> = topics
            .iter()
            .map(|topic| {
                let mut all = redis::cmd("LRANGE");
                all.arg(self.keys.topic(run_id, topic, "raw"))
                    .arg(0)
                    .arg(-1);
                all
            })
            .collect();
        let lists: Vec<Vec<String>> = self.query_each(&reads).await?;
        let mut out = Vec::with_capacity(lists.iter().map(Vec::len).sum());
        for (topic, list) in topics.iter().zip(lists) {
            let mut records = list
                .iter()
                .map(|text| {
                    decode_raw(text).ok_or_else(|| {
                        self.corrupt(format!("bad raw record `{text}` of topic {topic}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            records.sort_by_key(|r| r.received_us);
            out.extend(records.into_iter().map(|r| (topic.clone(), r)));
        }
        Ok(out)
    }
}

/// What one script call of a write applies: on one server the whole batch, on a cluster
/// one topic's share.
#[derive(Default)]
struct Part<'a> {
    /// Aggregates, duplicates merged.
    seconds: Vec<&'a TopicSecond>,
    /// Raw records by topic (of the batch's run).
    raw: Vec<(&'a str, Vec<&'a RawRecord>)>,
}

/// A batch's aggregates by (run, topic, second, instance), duplicates added up.
type Merged<'a> = BTreeMap<(&'a str, &'a str, u64, &'a str), TopicSecond>;

impl RedisStore {
    /// The rows of one topic from its hashes' fields: `counters` (`second/instance/name`
    /// → decimal count) and `hdrs` (`second/instance/raw|corrected` → histogram).
    fn rows_of_topic(
        &self,
        run_id: &str,
        topic: &str,
        counters: &[(String, Vec<u8>)],
        hdrs: &[(String, Vec<u8>)],
    ) -> Result<Vec<TopicSecond>, StoreError> {
        let mut rows: BTreeMap<(u64, &str), TopicSecond> = BTreeMap::new();
        let row = |second: u64, instance: &'_ str| -> TopicSecond {
            TopicSecond {
                run_id: run_id.to_owned(),
                topic: topic.to_owned(),
                second,
                instance: instance.to_owned(),
                ..TopicSecond::default()
            }
        };
        for (field, value) in counters {
            let bad = || self.corrupt(format!("bad counter field `{field}` of topic {topic}"));
            let (second, instance, name) = split_field(field).ok_or_else(bad)?;
            let value: u64 = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad)?;
            let r = rows
                .entry((second, instance))
                .or_insert_with(|| row(second, instance));
            match name {
                "sent" => r.sent = value,
                "received" => r.received = value,
                "lost" => r.gaps = value,
                "duplicates" => r.duplicates = value,
                "reordered" => r.reordered = value,
                "undecodable" => r.undecodable = value,
                _ => return Err(bad()),
            }
        }
        for (field, value) in hdrs {
            let bad = || self.corrupt(format!("bad histogram field `{field}` of topic {topic}"));
            let (second, instance, name) = split_field(field).ok_or_else(bad)?;
            let r = rows
                .entry((second, instance))
                .or_insert_with(|| row(second, instance));
            match name {
                HDR_RAW => r.latency_hdr.clone_from(value),
                HDR_CORRECTED => r.corrected_hdr.clone_from(value),
                _ => return Err(bad()),
            }
        }
        Ok(rows.into_values().collect())
    }

    /// Per topic of `topics`, each writer's first and last second; `None` when a topic
    /// that has rows has no such record (written by a version that did not keep one).
    pub(super) async fn writer_spans(
        &self,
        run_id: &str,
        topics: &[String],
    ) -> Result<Option<Vec<Vec<(String, (u64, u64))>>>, StoreError> {
        let reads: Vec<redis::Cmd> = topics
            .iter()
            .map(|topic| {
                let mut all = redis::cmd("HGETALL");
                all.arg(self.keys.topic(run_id, topic, "writers"));
                all
            })
            .collect();
        let hashes: Vec<Vec<(String, String)>> = self.query_each(&reads).await?;
        let mut spans = Vec::with_capacity(hashes.len());
        for (topic, hash) in topics.iter().zip(hashes) {
            if hash.is_empty() {
                let mut exists = redis::cmd("EXISTS");
                exists.arg(self.keys.topic(run_id, topic, "seconds"));
                if self.query_one::<bool>(&exists).await? {
                    return Ok(None);
                }
            }
            let mut writers = Vec::with_capacity(hash.len());
            for (writer, span) in hash {
                let parsed = span
                    .split_once('/')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                let Some(span) = parsed else {
                    return Err(self.corrupt(format!(
                        "bad writer span `{span}` of {writer} on topic {topic}"
                    )));
                };
                writers.push((writer, span));
            }
            spans.push(writers);
        }
        Ok(Some(spans))
    }

    /// Adds up the aggregates of `batch` that share (run, topic, second, instance): the
    /// script checks every histogram before writing any, so two writes of one field in
    /// one call would clash.
    fn merge_duplicates<'a>(&self, batch: &'a Batch) -> Result<Merged<'a>, StoreError> {
        let mut merged = Merged::new();
        for s in &batch.seconds {
            let id = (
                s.run_id.as_str(),
                s.topic.as_str(),
                s.second,
                s.instance.as_str(),
            );
            match merged.get_mut(&id) {
                None => {
                    merged.insert(id, s.clone());
                }
                Some(m) => {
                    m.sent += s.sent;
                    m.received += s.received;
                    m.gaps += s.gaps;
                    m.duplicates += s.duplicates;
                    m.reordered += s.reordered;
                    m.undecodable += s.undecodable;
                    m.latency_hdr =
                        merge_hdr(&m.latency_hdr, &s.latency_hdr).map_err(|e| self.corrupt(e))?;
                    m.corrected_hdr = merge_hdr(&m.corrected_hdr, &s.corrected_hdr)
                        .map_err(|e| self.corrupt(e))?;
                }
            }
        }
        Ok(merged)
    }

    /// Applies `part` in one call of the write script: its aggregates, its raw records
    /// (of run `raw_run`), `new_topics` (run → topics) added to the runs' topic sets, and
    /// `marker` set (a part already marked is not applied again). Histograms are written
    /// compare-and-set: on a conflict the part is merged with what the server holds and
    /// tried again.
    async fn write_part(
        &self,
        part: &Part<'_>,
        raw_run: Option<&str>,
        new_topics: &BTreeMap<&str, BTreeSet<&str>>,
        marker: Option<String>,
    ) -> Result<(), StoreError> {
        let mut keys = Keys::default();
        let mut counter_args: Vec<Vec<u8>> = Vec::with_capacity(part.seconds.len() * 8);
        let mut hdr_ops: Vec<HdrOp> = Vec::new();
        for s in &part.seconds {
            let prefix = format!("{}/{}", s.second, s.instance);
            let seconds_key = keys.of(self.keys.topic(&s.run_id, &s.topic, "seconds"));
            counter_args.push(seconds_key.to_string().into_bytes());
            counter_args.push(prefix.clone().into_bytes());
            for v in [
                s.sent,
                s.received,
                s.gaps,
                s.duplicates,
                s.reordered,
                s.undecodable,
            ] {
                counter_args.push(increment(v).to_string().into_bytes());
            }
            let hdr_key = keys.of(self.keys.topic(&s.run_id, &s.topic, "hdr"));
            for (suffix, bytes) in [(HDR_RAW, &s.latency_hdr), (HDR_CORRECTED, &s.corrected_hdr)] {
                if !bytes.is_empty() {
                    hdr_ops.push(HdrOp {
                        key: hdr_key,
                        field: format!("{prefix}/{suffix}"),
                        own: bytes.clone(),
                        expected: None,
                        value: bytes.clone(),
                    });
                }
            }
        }
        let mut set_args: Vec<Vec<u8>> = Vec::new();
        let mut sets = 0_usize;
        for (run, topics) in new_topics {
            let k = keys.of(self.keys.topics(run));
            for topic in topics {
                set_args.push(k.to_string().into_bytes());
                set_args.push(topic.as_bytes().to_vec());
                sets += 1;
            }
        }
        let mut raw_args: Vec<Vec<u8>> = Vec::new();
        if let Some(run) = raw_run {
            for (topic, records) in &part.raw {
                raw_args.push(
                    keys.of(self.keys.topic(run, topic, "raw"))
                        .to_string()
                        .into_bytes(),
                );
                raw_args.push(records.len().to_string().into_bytes());
                raw_args.extend(records.iter().map(|r| encode_raw(r).into_bytes()));
            }
        }
        let mut spans: BTreeMap<(usize, &str), (u64, u64)> = BTreeMap::new();
        for s in &part.seconds {
            let k = keys.of(self.keys.topic(&s.run_id, &s.topic, "writers"));
            let span = spans
                .entry((k, s.instance.as_str()))
                .or_insert((s.second, s.second));
            span.0 = span.0.min(s.second);
            span.1 = span.1.max(s.second);
        }
        let mut writer_args: Vec<Vec<u8>> = vec![spans.len().to_string().into_bytes()];
        for ((k, instance), (first, last)) in &spans {
            writer_args.push(k.to_string().into_bytes());
            writer_args.push(instance.as_bytes().to_vec());
            writer_args.push(first.to_string().into_bytes());
            writer_args.push(last.to_string().into_bytes());
        }
        let marker = marker.map_or(0, |key| keys.of(key));

        for attempt in 0..CAS_ATTEMPTS {
            if attempt > 1 {
                // Several writers of one field keep overtaking each other: spread out.
                tokio::time::sleep(jitter(attempt)).await;
            }
            let mut invocation = WRITE_SCRIPT.prepare_invoke();
            for key in &keys.list {
                invocation.key(key);
            }
            invocation
                .arg(part.seconds.len())
                .arg(hdr_ops.len())
                .arg(sets)
                .arg(part.raw.len())
                .arg(marker);
            for a in &counter_args {
                invocation.arg(a);
            }
            for op in &hdr_ops {
                invocation
                    .arg(op.key)
                    .arg(&op.field)
                    .arg(if op.expected.is_some() { "1" } else { "0" })
                    .arg(op.expected.as_deref().unwrap_or_default())
                    .arg(&op.value);
            }
            for a in set_args.iter().chain(&raw_args).chain(&writer_args) {
                invocation.arg(a);
            }
            let mut con = self.con.clone();
            let conflicts: Vec<Vec<u8>> = invocation
                .invoke_async(&mut con)
                .await
                .map_err(|e| self.error(&e))?;
            if conflicts.is_empty() {
                return Ok(());
            }
            for triple in conflicts.chunks(3) {
                let [index, state, current] = triple else {
                    return Err(self.corrupt("unexpected reply of the write script".into()));
                };
                let op = std::str::from_utf8(index)
                    .ok()
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| hdr_ops.get_mut(i))
                    .ok_or_else(|| self.corrupt("unexpected reply of the write script".into()))?;
                if state.as_slice() == b"1" {
                    op.value = merge_hdr(current, &op.own).map_err(|e| self.corrupt(e))?;
                    op.expected = Some(current.clone());
                } else {
                    op.value = op.own.clone();
                    op.expected = None;
                }
            }
        }
        Err(StoreError::Io {
            url: self.url.clone(),
            reason: format!(
                "histograms kept changing under {CAS_ATTEMPTS} write attempts; \
                 are several writers using the same instance name?"
            ),
        })
    }
}
