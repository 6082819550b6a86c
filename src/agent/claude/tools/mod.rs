//! The client tools the model may call. Each call returns a [`ToolOutput`]; a failure is
//! an `is_error` result for the model to read and react to, never an error of the job.
//!
//! - [`edit`]: Anthropic's text editor tool (`text_editor_20250728`, named
//!   `str_replace_based_edit_tool`), working on the job's work tree from the runner,
//!   with every path resolved beneath the work tree by the kernel.
//! - [`bash`]: Anthropic's bash tool (`bash_20250124`): one persistent shell per job,
//!   inside the job's sandbox.

pub mod bash;
pub mod edit;

/// What a tool call gives back to the model (a `tool_result` block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
}

impl ToolOutput {
    pub fn ok(content: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: content.into(),
            is_error: false,
        }
    }

    pub fn error(content: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: content.into(),
            is_error: true,
        }
    }
}
