//! `str_replace_based_edit_tool` (stub until the tools branch lands).
use super::ToolOutput;
use std::path::Path;

pub struct EditTool;

impl EditTool {
    pub fn new(_work_tree: &Path, _max_view_chars: usize) -> std::io::Result<EditTool> {
        Ok(EditTool)
    }
    pub fn run(&self, _input: &serde_json::Value) -> ToolOutput {
        ToolOutput::error("not yet")
    }
    pub fn describe(input: &serde_json::Value) -> String {
        input.to_string()
    }
}
