//! `bash` tool (stub until the tools branch lands).
use super::ToolOutput;
use crate::sandbox::SandboxSpec;
use std::time::Duration;

pub struct BashSession;

impl BashSession {
    pub fn new(_sandbox: SandboxSpec, _command_timeout: Duration) -> BashSession {
        BashSession
    }
    pub async fn run(
        &mut self,
        _input: &serde_json::Value,
        _log: &crate::agent::LogSink,
        _cancel: &tokio_util::sync::CancellationToken,
    ) -> ToolOutput {
        ToolOutput::error("not yet")
    }
    pub async fn close(&mut self) {}
    pub fn describe(input: &serde_json::Value) -> String {
        input.to_string()
    }
}
