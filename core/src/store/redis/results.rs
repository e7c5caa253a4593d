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
        let key = instances_key(&run.run_id);
        self.idempotent(|mut con| {
            let (json, field, key) = (&json, &field, &key);
            async move {
                redis::pipe()
                    .atomic()
                    .cmd("ZADD")
                    .arg(RUNS_KEY)
                    .arg("LT")
                    .arg(run.started_us)
                    .arg(&run.run_id)
                    .ignore()
                    .cmd("HSET")
                    .arg(key)
                    .arg(field)
                    .arg(json)
                    .ignore()
                    .exec_async(&mut con)
                    .await
            }
        })
        .await?;
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
        // Merge duplicates within the batch first: the script checks every histogram
        // before writing any, so two writes of one field in one call would clash.
        let mut merged: BTreeMap<(&str, &str, u64, &str), TopicSecond> = BTreeMap::new();
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

        let mut keys = Keys::default();
        let mut counter_args: Vec<Vec<u8>> = Vec::with_capacity(merged.len() * 8);
        let mut hdr_ops: Vec<HdrOp> = Vec::new();
        let mut set_args: Vec<Vec<u8>> = Vec::new();
        let mut sets = 0_usize;
        let mut seen_topics: HashSet<(&str, &str)> = HashSet::new();
        for ((run, topic, second, instance), s) in &merged {
            if seen_topics.insert((run, topic)) {
                add_topic(&mut keys, run, topic, &mut set_args);
                sets += 1;
            }
            let prefix = format!("{second}/{instance}");
            let seconds_key = keys.of(topic_key(run, topic, "seconds"));
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
            let hdr_key = keys.of(topic_key(run, topic, "hdr"));
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

        let mut raw_args: Vec<Vec<u8>> = Vec::new();
        let mut raws = 0_usize;
        if !batch.raw.is_empty() {
            let Some(run) = self.batch_run(batch) else {
                return Err(StoreError::Io {
                    url: self.url.clone(),
                    reason: "raw records without a run: call put_run first or send them \
                             with the run's aggregates"
                        .into(),
                });
            };
            let mut by_topic: BTreeMap<&str, Vec<&RawRecord>> = BTreeMap::new();
            for (topic, r) in &batch.raw {
                by_topic.entry(topic.as_str()).or_default().push(r);
            }
            for (topic, records) in by_topic {
                if seen_topics.insert((run.as_str(), topic)) {
                    add_topic(&mut keys, &run, topic, &mut set_args);
                    sets += 1;
                }
                raw_args.push(
                    keys.of(topic_key(&run, topic, "raw"))
                        .to_string()
                        .into_bytes(),
                );
                raw_args.push(records.len().to_string().into_bytes());
                raw_args.extend(records.into_iter().map(|r| encode_raw(r).into_bytes()));
                raws += 1;
            }
        }

        let marker = match batch.id {
            0 => 0,
            id => keys.of(format!("{PREFIX}written:{id:016x}")),
        };
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
                .arg(merged.len())
                .arg(hdr_ops.len())
                .arg(sets)
                .arg(raws)
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
            for a in set_args.iter().chain(&raw_args) {
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

    async fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let ids: Vec<String> = self
            .idempotent(|mut con| async move {
                redis::cmd("ZREVRANGE")
                    .arg(RUNS_KEY)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Vec<String>> = self
            .idempotent(|mut con| {
                let ids = &ids;
                async move {
                    let mut pipe = redis::pipe();
                    for id in ids {
                        pipe.cmd("HVALS").arg(instances_key(id));
                    }
                    pipe.query_async(&mut con).await
                }
            })
            .await?;
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
        type Hash = Vec<(String, Vec<u8>)>;
        let hashes: Vec<Hash> = self
            .idempotent(|mut con| {
                let topics = &topics;
                async move {
                    let mut pipe = redis::pipe();
                    for topic in topics {
                        pipe.cmd("HGETALL")
                            .arg(topic_key(run_id, topic, "seconds"))
                            .cmd("HGETALL")
                            .arg(topic_key(run_id, topic, "hdr"));
                    }
                    pipe.query_async(&mut con).await
                }
            })
            .await?;
        let mut out = Vec::new();
        for (topic, pair) in topics.iter().zip(hashes.chunks(2)) {
            let [counters, hdrs] = pair else {
                return Err(self.corrupt("short reply".into()));
            };
            let mut rows: BTreeMap<(u64, &str), TopicSecond> = BTreeMap::new();
            let row = |second: u64, instance: &'_ str| -> TopicSecond {
                TopicSecond {
                    run_id: run_id.to_owned(),
                    topic: topic.clone(),
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
                let bad =
                    || self.corrupt(format!("bad histogram field `{field}` of topic {topic}"));
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
            out.extend(rows.into_values());
        }
        Ok(out)
    }

    async fn raw(&self, run_id: &str) -> Result<Vec<(String, RawRecord)>, StoreError> {
        let topics = self.run_topics(run_id).await?;
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let lists: Vec<Vec<String>> = self
            .idempotent(|mut con| {
                let topics = &topics;
                async move {
                    let mut pipe = redis::pipe();
                    for topic in topics {
                        pipe.cmd("LRANGE")
                            .arg(topic_key(run_id, topic, "raw"))
                            .arg(0)
                            .arg(-1);
                    }
                    pipe.query_async(&mut con).await
                }
            })
            .await?;
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
