//! [`SteeringStore`] on Redis: `job:{id}:steer` (a list of JSON entries) and
//! `job:{id}:steered-from` (the provisional jobs already given to it), in the job's slot;
//! the job hash's `steerable` field holds the attempt whose agent takes instructions.

use async_trait::async_trait;

use super::{RedisStore, unavailable};
use crate::job::{Job, JobId};
use crate::store::steering::{Steer, Steered, SteeringStore};
use crate::store::{Lease, StoreError};

#[async_trait]
impl SteeringStore for RedisStore {
    async fn steer(&self, job: JobId, steer: &Steer) -> Result<Steered, StoreError> {
        let entry = serde_json::to_string(steer)
            .map_err(|e| StoreError::Corrupt(format!("a steering entry: {e}")))?;
        let mut inv = self.scripts.steer.prepare_invoke();
        inv.key(self.keys.job(job))
            .key(self.keys.job_steer(job))
            .key(self.keys.job_steered_from(job))
            .arg(steer.from_job.to_string())
            .arg(entry);
        Ok(match self.run::<i64>(&inv).await? {
            1 => Steered::Now,
            2 => Steered::Already,
            _ => Steered::NotSteerable,
        })
    }

    async fn discard_job(&self, job: &Job) -> Result<(), StoreError> {
        let id = job.id.to_string();
        let mut conn = self.conn.clone();
        // Keys of several slots: a plain pipeline; each step is safe to repeat.
        redis::pipe()
            .zrem(self.keys.jobs_all(), &id)
            .zrem(self.keys.jobs_by_user(job), &id)
            .zrem(self.keys.jobs_by_repo(&job.repo), &id)
            .zrem(self.keys.jobs_by_thread(&job.repo, job.thread), &id)
            .zrem(self.keys.jobs_active(), &id)
            .del(self.keys.job(job.id))
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn open_steering(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut inv = self.queue_script(&self.scripts.open_steering);
        inv.key(self.keys.job(lease.job))
            .arg(&lease.runner)
            .arg(lease.attempt);
        match self.run::<i64>(&inv).await? {
            1 => Ok(()),
            _ => Err(StoreError::LeaseLost),
        }
    }

    async fn steering(&self, job: JobId, from: usize) -> Result<Vec<Steer>, StoreError> {
        let mut conn = self.conn.clone();
        let entries: Vec<String> = redis::cmd("LRANGE")
            .arg(self.keys.job_steer(job))
            .arg(from)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        crate::store::steering::decode(entries)
    }

    async fn close_steering(&self, lease: &Lease, from: usize) -> Result<Vec<Steer>, StoreError> {
        let mut inv = self.queue_script(&self.scripts.close_steering);
        inv.key(self.keys.job(lease.job))
            .key(self.keys.job_steer(lease.job))
            .arg(&lease.runner)
            .arg(lease.attempt)
            .arg(from);
        match self.run::<Option<Vec<String>>>(&inv).await? {
            Some(entries) => crate::store::steering::decode(entries),
            None => Err(StoreError::LeaseLost),
        }
    }
}
