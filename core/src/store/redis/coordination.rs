//! The RedisStore as a coordinator: topic claims and leases, barriers, device blocks and
//! clock estimates shared by the instances of a run.

use super::*;

/// Lists live advertisements as (topic, owner, claimer or '') triples, ordered by topic,
/// dropping expired ones from the set `KEYS[1]`; `ARGV[1]`, `ARGV[2]`: key prefixes.
static ADS_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/ads.lua")));

/// Withdraws advertisements: `KEYS[1]` the advertised set, `KEYS[i+1]` the
/// advertisement key of topic `ARGV[i+1]`, `ARGV[1]` the owner. Keys owned by someone
/// else stay; expired ones leave the set.
static WITHDRAW_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/withdraw.lua")));

/// Deletes every key in `KEYS` whose value is `ARGV[1]`; returns how many.
static RELEASE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/release.lua")));

/// Extends the lease (`ARGV[2]` ms) of every claim key in `KEYS` held by `ARGV[1]`, and
/// takes back those whose lease ran out while nobody else claimed them (the key is gone);
/// returns 1 (held) or 0 per key.
static RENEW_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/renew.lua")));

/// Claims up to `ARGV[1]` advertised topics for `ARGV[2]` with lease `ARGV[3]` ms.
/// `KEYS[1]`: the advertised set; `ARGV[4]`, `ARGV[5]`: the advertisement and claim key
/// prefixes. Walks the topics in order, drops those whose advertisement expired.
static CLAIM_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/claim.lua")));

#[async_trait::async_trait]
impl Coordinator for RedisStore {
    async fn advertise(
        &self,
        topics: &[String],
        owner: &str,
        lease: Duration,
    ) -> Result<(), StoreError> {
        if topics.is_empty() {
            return Ok(());
        }
        let ms = lease_ms(lease);
        self.idempotent(|mut con| async move {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for topic in topics {
                pipe.cmd("SET")
                    .arg(format!("{}{topic}", self.keys.ad_prefix()))
                    .arg(owner)
                    .arg("PX")
                    .arg(ms)
                    .ignore();
            }
            pipe.cmd("SADD").arg(self.keys.ads()).arg(topics).ignore();
            pipe.exec_async(&mut con).await
        })
        .await
    }

    async fn withdraw(&self, topics: &[String], owner: &str) -> Result<(), StoreError> {
        if topics.is_empty() {
            return Ok(());
        }
        self.idempotent(|mut con| async move {
            let mut invocation = WITHDRAW_SCRIPT.key(self.keys.ads());
            invocation.arg(owner);
            for topic in topics {
                invocation
                    .key(format!("{}{topic}", self.keys.ad_prefix()))
                    .arg(topic);
            }
            invocation.invoke_async::<i64>(&mut con).await
        })
        .await
        .map(drop)
    }

    async fn claim(
        &self,
        n: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        // Not retried: a lost answer would leave claims nobody knows of until the lease
        // ends.
        let mut con = self.con.clone();
        CLAIM_SCRIPT
            .key(self.keys.ads())
            .arg(n)
            .arg(owner)
            .arg(lease_ms(lease))
            .arg(self.keys.ad_prefix())
            .arg(self.keys.claim_prefix())
            .invoke_async(&mut con)
            .await
            .map_err(|e| self.error(&e))
    }

    async fn renew_claims(
        &self,
        topics: &[String],
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let ms = lease_ms(lease);
        let held: Vec<i64> = self
            .idempotent(|mut con| async move {
                let mut invocation = RENEW_SCRIPT.arg(owner);
                invocation.arg(ms);
                for topic in topics {
                    invocation.key(format!("{}{topic}", self.keys.claim_prefix()));
                }
                invocation.invoke_async(&mut con).await
            })
            .await?;
        Ok(topics
            .iter()
            .zip(held)
            .filter(|(_, held)| *held == 1)
            .map(|(topic, _)| topic.clone())
            .collect())
    }

    async fn release(&self, topics: &[String], owner: &str) -> Result<(), StoreError> {
        if topics.is_empty() {
            return Ok(());
        }
        self.idempotent(|mut con| async move {
            let mut invocation = RELEASE_SCRIPT.arg(owner);
            for topic in topics {
                invocation.key(format!("{}{topic}", self.keys.claim_prefix()));
            }
            invocation.invoke_async::<i64>(&mut con).await
        })
        .await
        .map(drop)
    }

    async fn advertisements(&self) -> Result<Vec<Advertisement>, StoreError> {
        let flat: Vec<String> = self
            .idempotent(|mut con| async move {
                ADS_SCRIPT
                    .key(self.keys.ads())
                    .arg(self.keys.ad_prefix())
                    .arg(self.keys.claim_prefix())
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        flat.chunks(3)
            .map(|triple| match triple {
                [topic, owner, claimer] => Ok(Advertisement {
                    topic: topic.clone(),
                    owner: owner.clone(),
                    claimed_by: (!claimer.is_empty()).then(|| claimer.clone()),
                }),
                _ => Err(self.corrupt("unexpected reply of the listing script".into())),
            })
            .collect()
    }

    async fn join_barrier(&self, name: &str, member: &str) -> Result<u64, StoreError> {
        let key = self.keys.barrier(name);
        let (size,): (u64,) = self
            .idempotent(|mut con| {
                let key = &key;
                async move {
                    redis::pipe()
                        .atomic()
                        .cmd("SADD")
                        .arg(key)
                        .arg(member)
                        .ignore()
                        .cmd("SCARD")
                        .arg(key)
                        .query_async(&mut con)
                        .await
                }
            })
            .await?;
        Ok(size)
    }

    async fn barrier_size(&self, name: &str) -> Result<u64, StoreError> {
        let key = self.keys.barrier(name);
        self.idempotent(|mut con| {
            let key = &key;
            async move { redis::cmd("SCARD").arg(key).query_async(&mut con).await }
        })
        .await
    }

    async fn allocate_devices(&self, run: &str, count: u32) -> Result<u32, StoreError> {
        let key = self.keys.devices(run);
        // Retried after a lost reply, INCRBY may reserve a block twice: the first one is
        // then left unused, which costs nothing but a gap in the device numbers.
        let end: u64 = self
            .idempotent(|mut con| {
                let key = &key;
                async move {
                    redis::cmd("INCRBY")
                        .arg(key)
                        .arg(count)
                        .query_async(&mut con)
                        .await
                }
            })
            .await?;
        crate::store::block_start(end, count).ok_or_else(|| StoreError::Io {
            url: self.url.clone(),
            reason: format!("run {run} has used up the device numbers (next free: {end})"),
        })
    }

    async fn server_time_us(&self) -> Result<u64, StoreError> {
        self.idempotent(|mut con| async move { con.server_time_us().await })
            .await
    }

    async fn put_clock(
        &self,
        run: &str,
        instance: &str,
        clock: ClockEstimate,
    ) -> Result<(), StoreError> {
        let key = self.keys.clocks(run);
        let value = format!("{} {}", clock.offset_us, clock.bound_us);
        self.idempotent(|mut con| {
            let (key, value) = (&key, &value);
            async move {
                redis::cmd("HSET")
                    .arg(key)
                    .arg(instance)
                    .arg(value)
                    .query_async::<()>(&mut con)
                    .await
            }
        })
        .await
    }

    async fn clocks(&self, run: &str) -> Result<Vec<(String, ClockEstimate)>, StoreError> {
        let key = self.keys.clocks(run);
        let all: std::collections::BTreeMap<String, String> = self
            .idempotent(|mut con| {
                let key = &key;
                async move { redis::cmd("HGETALL").arg(key).query_async(&mut con).await }
            })
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(instance, text)| parse_clock(&text).map(|c| (instance, c)))
            .collect())
    }
}

/// Parses a stored "offset_us bound_us" clock estimate.
fn parse_clock(text: &str) -> Option<ClockEstimate> {
    let (offset, bound) = text.split_once(' ')?;
    Some(ClockEstimate {
        offset_us: offset.parse().ok()?,
        bound_us: bound.parse().ok()?,
    })
}
