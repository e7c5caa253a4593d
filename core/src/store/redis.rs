//! Placeholder: the redis backend is being written.

use std::time::Duration;

use super::{
    Advertisement, Batch, Coordinator, RawRecord, RunRecord, Store, StoreError, TopicSecond,
};

/// The redis backend.
pub struct RedisStore {
    url: String,
}

impl RedisStore {
    /// Opens the store.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Err(StoreError::BadUrl {
            url: url.to_string(),
            reason: "not built yet".into(),
        })
    }
}

fn missing(url: &str) -> StoreError {
    StoreError::Io {
        url: url.to_string(),
        reason: "not built yet".into(),
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    fn url(&self) -> &str {
        &self.url
    }
    async fn put_run(&self, _: &RunRecord) -> Result<(), StoreError> {
        Err(missing(&self.url))
    }
    async fn write(&self, _: &Batch) -> Result<(), StoreError> {
        Err(missing(&self.url))
    }
    async fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        Err(missing(&self.url))
    }
    async fn seconds(&self, _: &str) -> Result<Vec<TopicSecond>, StoreError> {
        Err(missing(&self.url))
    }
    async fn raw(&self, _: &str) -> Result<Vec<(String, RawRecord)>, StoreError> {
        Err(missing(&self.url))
    }
}

#[async_trait::async_trait]
impl Coordinator for RedisStore {
    async fn advertise(&self, _: &[String], _: &str, _: Duration) -> Result<(), StoreError> {
        Err(missing(&self.url))
    }
    async fn withdraw(&self, _: &[String], _: &str) -> Result<(), StoreError> {
        Err(missing(&self.url))
    }
    async fn claim(&self, _: usize, _: &str, _: Duration) -> Result<Vec<String>, StoreError> {
        Err(missing(&self.url))
    }
    async fn renew_claims(
        &self,
        _: &[String],
        _: &str,
        _: Duration,
    ) -> Result<Vec<String>, StoreError> {
        Err(missing(&self.url))
    }
    async fn release(&self, _: &[String], _: &str) -> Result<(), StoreError> {
        Err(missing(&self.url))
    }
    async fn advertisements(&self) -> Result<Vec<Advertisement>, StoreError> {
        Err(missing(&self.url))
    }
    async fn join_barrier(&self, _: &str, _: &str) -> Result<u64, StoreError> {
        Err(missing(&self.url))
    }
    async fn barrier_size(&self, _: &str) -> Result<u64, StoreError> {
        Err(missing(&self.url))
    }
}
