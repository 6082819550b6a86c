//! Repobox: a self-hosted GitHub App and GitLab bot. A `/repobox …` comment (or the
//! `repobox` label) becomes a job in Redis streams; runners turn jobs into pull/merge
//! requests. See `docs/architecture.md` for the data flow.
//!
//! Layout: `webhooks` (verify, parse, enqueue) → `store` (Redis) → `ack` (authorize,
//! react, progress comment, dispatch) → `runner`. `forges` holds everything
//! GitHub/GitLab-specific; `commands` is the pure comment parser.
#![deny(unsafe_code)]

pub mod ack;
pub mod agent;
pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod doctor;
pub mod event;
pub mod failpoint;
pub mod forges;
pub mod git;
pub mod job;
pub mod model;
pub mod progress;
pub mod reconcile;
pub mod runner;
pub mod sandbox;
pub mod secret;
pub mod settings;
pub mod setup_secrets;
pub mod store;
pub mod task;
pub mod telemetry;
pub mod web;
pub mod webhooks;
