//! [`SteeringStore`] on the embedded store: `job:{id}:steer` (a list of JSON entries)
//! and `job:{id}:steered-from` (the provisional jobs already given to it, kept as a
//! scored set); the job record's `steerable` field holds the attempt whose agent takes
//! instructions.

use async_trait::async_trait;

use super::EmbeddedStore;
use super::data::{self, holds};
use crate::job::{Job, JobId};
use crate::store::{Lease, Steer, Steered, SteeringStore, StoreError};

#[async_trait]
impl SteeringStore for EmbeddedStore {
    async fn steer(&self, job: JobId, steer: &Steer) -> Result<Steered, StoreError> {
        let entry = serde_json::to_string(steer)
            .map_err(|e| StoreError::Corrupt(format!("a steering entry: {e}")))?;
        let from = steer.from_job.to_string();
        self.write(move |c, keys| {
            let (key, given) = (keys.job(job), keys.job_steered_from(job));
            if data::zscore(c, &given, &from)?.is_some() {
                return Ok(Steered::Already);
            }
            if data::hget(c, &key, "status")?.as_deref() != Some("running")
                || data::hget(c, &key, "steerable")?.is_none()
            {
                return Ok(Steered::NotSteerable);
            }
            data::zadd(c, &given, &from, data::now_ms())?;
            data::rpush(c, &keys.job_steer(job), &entry)?;
            Ok(Steered::Now)
        })
        .await
    }

    async fn discard_job(&self, job: &Job) -> Result<(), StoreError> {
        let job = job.clone();
        self.write(move |c, keys| {
            let id = job.id.to_string();
            for index in [
                keys.jobs_all(),
                keys.jobs_by_user(&job),
                keys.jobs_by_repo(&job.repo),
                keys.jobs_by_thread(&job.repo, job.thread),
                keys.jobs_active(),
            ] {
                data::zrem(c, &index, &id)?;
            }
            Ok(data::hclear(c, &keys.job(job.id))?)
        })
        .await
    }

    async fn open_steering(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        let held = self
            .write(move |c, keys| {
                let key = keys.job(lease.job);
                if !holds(c, &key, &lease)? {
                    return Ok(false);
                }
                data::hset(c, &key, &[("steerable", lease.attempt.to_string())])?;
                Ok(true)
            })
            .await?;
        if held {
            Ok(())
        } else {
            Err(StoreError::LeaseLost)
        }
    }

    async fn steering(&self, job: JobId, from: usize) -> Result<Vec<Steer>, StoreError> {
        let entries = self
            .read(move |c, keys| Ok(data::lrange_from(c, &keys.job_steer(job), from)?))
            .await?;
        crate::store::steering::decode(entries)
    }

    async fn close_steering(&self, lease: &Lease, from: usize) -> Result<Vec<Steer>, StoreError> {
        let lease = lease.clone();
        let entries = self
            .write(move |c, keys| {
                let key = keys.job(lease.job);
                if !holds(c, &key, &lease)? {
                    return Ok(None);
                }
                let steer = keys.job_steer(lease.job);
                if data::llen(c, &steer)? > from {
                    return Ok(Some(data::lrange_from(c, &steer, from)?));
                }
                data::hdel(c, &key, "steerable")?;
                Ok(Some(Vec::new()))
            })
            .await?;
        match entries {
            Some(entries) => crate::store::steering::decode(entries),
            None => Err(StoreError::LeaseLost),
        }
    }
}
