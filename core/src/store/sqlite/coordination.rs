//! The SqliteStore as a coordinator: topic claims and leases, barriers, device blocks and
//! clock estimates shared by the instances of a run.

use super::*;

#[async_trait::async_trait]
impl Coordinator for SqliteStore {
    /// Upserts one advertisement per topic; a topic another loadgen advertised is taken
    /// over (the last advertiser wins).
    async fn advertise(
        &self,
        topics: &[String],
        owner: &str,
        lease: Duration,
    ) -> Result<(), StoreError> {
        if topics.is_empty() {
            return Ok(());
        }
        let (topics, owner) = (topics.to_vec(), owner.to_string());
        self.call(move |conn| {
            let expires = lease_end(now_ms(), lease);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            put_leases(&tx, Lease::Advertisement, &topics, &owner, expires)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn withdraw(&self, topics: &[String], owner: &str) -> Result<(), StoreError> {
        if topics.is_empty() {
            return Ok(());
        }
        self.drop_leases(Lease::Advertisement, topics, owner).await
    }

    /// Claims, in topic order, up to `n` live advertisements without a live claim. Topics
    /// `owner` already holds are not returned again; renew them with `renew_claims`.
    async fn claim(
        &self,
        n: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let owner = owner.to_string();
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        self.call(move |conn| {
            // IMMEDIATE takes the write lock before reading, so no other process can claim
            // between our select and our insert.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_ms();
            let expires = lease_end(now, lease);
            tx.prepare_cached("DELETE FROM claims WHERE expires_ms <= ?1")?
                .execute([now])?;
            tx.prepare_cached("DELETE FROM advertisements WHERE expires_ms <= ?1")?
                .execute([now])?;
            let topics = tx
                .prepare_cached(
                    "SELECT a.topic FROM advertisements a \
                     LEFT JOIN claims c ON c.topic = a.topic AND c.expires_ms > ?1 \
                     WHERE a.expires_ms > ?1 AND c.topic IS NULL \
                     ORDER BY a.topic LIMIT ?2",
                )?
                .query_map(params![now, limit], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            put_leases(&tx, Lease::Claim, &topics, &owner, expires)?;
            tx.commit()?;
            Ok(topics)
        })
        .await
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
        let (topics, owner) = (topics.to_vec(), owner.to_string());
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_ms();
            let expires = lease_end(now, lease);
            let mut held = Vec::new();
            {
                let mut renew = tx.prepare_cached(
                    // Also takes back a claim whose lease ran out while nobody
                    // else claimed it (its row gone, or expired under any owner).
                    "INSERT INTO claims (topic, owner, expires_ms) VALUES (?2, ?3, ?1) \
                     ON CONFLICT (topic) DO UPDATE SET \
                     owner = excluded.owner, expires_ms = excluded.expires_ms \
                     WHERE claims.owner = excluded.owner OR claims.expires_ms <= ?4",
                )?;
                let mut seen = BTreeSet::new();
                for topic in &topics {
                    if seen.insert(topic.as_str())
                        && renew.execute(params![expires, topic, owner, now])? > 0
                    {
                        held.push(topic.clone());
                    }
                }
            }
            tx.commit()?;
            Ok(held)
        })
        .await
    }

    async fn release(&self, topics: &[String], owner: &str) -> Result<(), StoreError> {
        if topics.is_empty() {
            return Ok(());
        }
        self.drop_leases(Lease::Claim, topics, owner).await
    }

    async fn advertisements(&self) -> Result<Vec<Advertisement>, StoreError> {
        self.call(|conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT a.topic, a.owner, c.owner FROM advertisements a \
                     LEFT JOIN claims c ON c.topic = a.topic AND c.expires_ms > ?1 \
                     WHERE a.expires_ms > ?1 ORDER BY a.topic",
                )?
                .query_map([now_ms()], |r| {
                    Ok(Advertisement {
                        topic: r.get(0)?,
                        owner: r.get(1)?,
                        claimed_by: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn join_barrier(&self, name: &str, member: &str) -> Result<u64, StoreError> {
        let (name, member) = (name.to_string(), member.to_string());
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached("INSERT OR IGNORE INTO barriers (name, member) VALUES (?1, ?2)")?
                .execute([&name, &member])?;
            let size = barrier_count(&tx, &name)?;
            tx.commit()?;
            Ok(size)
        })
        .await
    }

    async fn barrier_size(&self, name: &str) -> Result<u64, StoreError> {
        let name = name.to_string();
        self.call(move |conn| Ok(barrier_count(conn, &name)?)).await
    }

    async fn allocate_devices(&self, run: &str, count: u32) -> Result<u32, StoreError> {
        let run = run.to_string();
        let end: u64 = self
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let end = tx
                    .prepare_cached(
                        "INSERT INTO device_blocks (run_id, next) VALUES (?1, ?2)
                         ON CONFLICT (run_id) DO UPDATE SET next = next + ?2
                         RETURNING next",
                    )?
                    .query_row(rusqlite::params![run, count], |r| r.get(0))?;
                tx.commit()?;
                Ok(end)
            })
            .await?;
        crate::store::block_start(end, count).ok_or_else(|| StoreError::Io {
            url: self.url.clone(),
            reason: format!("the device numbers are used up (next free: {end})"),
        })
    }

    async fn server_time_us(&self) -> Result<u64, StoreError> {
        // A local file: every process that opens it shares this host's clock.
        Ok(crate::stamp::now_us())
    }

    async fn put_clock(
        &self,
        run: &str,
        instance: &str,
        clock: ClockEstimate,
    ) -> Result<(), StoreError> {
        let (run, instance) = (run.to_string(), instance.to_string());
        self.call(move |conn| {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO clocks (run_id, instance, offset_us, bound_us)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(rusqlite::params![
                run,
                instance,
                clock.offset_us,
                i64::try_from(clock.bound_us).unwrap_or(i64::MAX)
            ])?;
            Ok(())
        })
        .await
    }

    async fn clocks(&self, run: &str) -> Result<Vec<(String, ClockEstimate)>, StoreError> {
        let run = run.to_string();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT instance, offset_us, bound_us FROM clocks WHERE run_id = ?1
                 ORDER BY instance",
            )?;
            let rows = stmt
                .query_map([&run], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        ClockEstimate {
                            offset_us: r.get(1)?,
                            bound_us: r.get::<_, i64>(2)?.max(0) as u64,
                        },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}

/// How many members the barrier `name` has.
fn barrier_count(conn: &Connection, name: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT COUNT(*) FROM barriers WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
}

/// Inserts or renews `owner`'s leases on `topics` until `expires_ms`.
fn put_leases(
    tx: &rusqlite::Transaction<'_>,
    kind: Lease,
    topics: &[String],
    owner: &str,
    expires_ms: i64,
) -> rusqlite::Result<()> {
    let sql = match kind {
        Lease::Advertisement => {
            "INSERT INTO advertisements (topic, owner, expires_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (topic) DO UPDATE SET \
             owner = excluded.owner, expires_ms = excluded.expires_ms"
        }
        Lease::Claim => {
            "INSERT INTO claims (topic, owner, expires_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (topic) DO UPDATE SET \
             owner = excluded.owner, expires_ms = excluded.expires_ms"
        }
    };
    let mut put = tx.prepare_cached(sql)?;
    for topic in topics {
        put.execute(params![topic, owner, expires_ms])?;
    }
    Ok(())
}
