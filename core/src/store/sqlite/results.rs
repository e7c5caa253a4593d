//! The SqliteStore as a results store: batches of per-second records in, runs and records out.

use super::*;

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn url(&self) -> &str {
        &self.url
    }

    async fn put_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let config = serde_json::to_string(&run.config).map_err(|e| StoreError::Io {
            url: self.url.clone(),
            reason: format!("cannot serialise the configuration: {e}"),
        })?;
        *self.last_run.lock().unwrap_or_else(PoisonError::into_inner) = Some(run.run_id.clone());
        let run = run.clone();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT INTO runs (run_id, component, instance, started_us, ended_us, \
                 tool_version, broker, config_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (run_id, component, instance) DO UPDATE SET \
                 started_us = excluded.started_us, ended_us = excluded.ended_us, \
                 tool_version = excluded.tool_version, broker = excluded.broker, \
                 config_json = excluded.config_json",
            )?
            .execute(params![
                run.run_id,
                run.component,
                run.instance,
                run.started_us,
                run.ended_us,
                run.tool_version,
                run.broker,
                config,
            ])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.seconds.is_empty() && batch.raw.is_empty() {
            return Ok(());
        }
        let raw_run = if batch.raw.is_empty() {
            None
        } else {
            self.raw_run_id(batch)
        };
        // spawn_blocking needs owned data; a clone costs far less than the disk write.
        let batch = batch.clone();
        self.call(move |conn| write_batch(conn, &batch, raw_run.as_deref()))
            .await
    }

    async fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT run_id, component, instance, started_us, ended_us, tool_version, \
                 broker, config_json FROM runs \
                 ORDER BY started_us DESC, run_id, component, instance",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    RunRecord {
                        run_id: r.get(0)?,
                        component: r.get(1)?,
                        instance: r.get(2)?,
                        started_us: r.get(3)?,
                        ended_us: r.get(4)?,
                        tool_version: r.get(5)?,
                        broker: r.get(6)?,
                        config: serde_json::Value::Null,
                    },
                    r.get::<_, String>(7)?,
                ))
            })?;
            let mut runs = Vec::new();
            for row in rows {
                let (mut run, config) = row?;
                run.config = serde_json::from_str(&config).map_err(|e| {
                    Failure::Corrupt(format!(
                        "configuration of run `{}` ({} on {}) is not JSON: {e}",
                        run.run_id, run.component, run.instance
                    ))
                })?;
                runs.push(run);
            }
            Ok(runs)
        })
        .await
    }

    async fn seconds(&self, run_id: &str) -> Result<Vec<TopicSecond>, StoreError> {
        self.rows_of_run(run_id, |tx, run| {
            tx.prepare_cached(&format!(
                "SELECT {SECOND_COLUMNS} FROM seconds WHERE run_id = ?1 \
                 ORDER BY topic, second, instance"
            ))?
            .query_map([run], read_second)?
            .collect()
        })
        .await
    }

    async fn extent(&self, run_id: &str) -> Result<Option<RunExtent>, StoreError> {
        let mut found = self
            .rows_of_run(run_id, |tx, run| {
                let span: (Option<u64>, Option<u64>) = tx
                    .prepare_cached(
                        "SELECT MIN(second), MAX(second) FROM seconds WHERE run_id = ?1",
                    )?
                    .query_row([run], |r| Ok((r.get(0)?, r.get(1)?)))?;
                let (Some(first), Some(last)) = span else {
                    return Ok(Vec::new());
                };
                // Each topic found by one index seek past the previous one, so a long run's
                // rows are not walked to list its topics.
                let topics = tx
                    .prepare_cached(
                        "WITH RECURSIVE t(topic) AS ( \
                           SELECT MIN(topic) FROM seconds WHERE run_id = ?1 \
                           UNION ALL \
                           SELECT (SELECT MIN(topic) FROM seconds \
                                   WHERE run_id = ?1 AND topic > t.topic) \
                           FROM t WHERE t.topic IS NOT NULL) \
                         SELECT topic FROM t WHERE topic IS NOT NULL",
                    )?
                    .query_map([run], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                Ok(vec![RunExtent {
                    topics,
                    first,
                    last,
                }])
            })
            .await?;
        Ok(found.pop())
    }

    async fn seconds_between(
        &self,
        run_id: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<TopicSecond>, StoreError> {
        let (from, to) = (sql_second(from), sql_second(to));
        self.rows_of_run(run_id, move |tx, run| {
            tx.prepare_cached(&format!(
                "SELECT {SECOND_COLUMNS} FROM seconds \
                 WHERE run_id = ?1 AND second BETWEEN ?2 AND ?3"
            ))?
            .query_map(rusqlite::params![run, from, to], read_second)?
            .collect()
        })
        .await
    }

    async fn raw(&self, run_id: &str) -> Result<Vec<(String, RawRecord)>, StoreError> {
        self.rows_of_run(run_id, |tx, run| {
            tx.prepare_cached(
                "SELECT topic, device, seq, intended_us, sent_us, received_us \
                 FROM raw WHERE run_id = ?1 ORDER BY topic, received_us, rowid",
            )?
            .query_map([run], |r| {
                Ok((
                    r.get(0)?,
                    RawRecord {
                        device: r.get(1)?,
                        seq: r.get(2)?,
                        intended_us: r.get(3)?,
                        sent_us: r.get(4)?,
                        received_us: r.get(5)?,
                    },
                ))
            })?
            .collect()
        })
        .await
    }
}

impl SqliteStore {
    /// The rows `read` gives for run `run_id`, read in one transaction so the check that
    /// the run exists and the rows see one snapshot; `NoSuchRun` when it does not.
    async fn rows_of_run<T, F>(&self, run_id: &str, read: F) -> Result<Vec<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>, &str) -> rusqlite::Result<Vec<T>> + Send + 'static,
    {
        let run = run_id.to_string();
        let found = self
            .call(move |conn| {
                let tx = conn.transaction()?;
                if !run_exists(&tx, &run)? {
                    return Ok(None);
                }
                Ok(Some(read(&tx, &run)?))
            })
            .await?;
        found.ok_or_else(|| StoreError::NoSuchRun {
            url: self.url.clone(),
            run: run_id.to_string(),
        })
    }
}

/// A second as SQLite stores it (a signed integer).
fn sql_second(second: u64) -> i64 {
    i64::try_from(second).unwrap_or(i64::MAX)
}
