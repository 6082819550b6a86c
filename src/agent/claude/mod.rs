//! The built-in `claude` agent (SPEC §7): a tool-use loop on the Anthropic Messages API.
//!
//! - [`tools`]: Anthropic's client-executed tools, run by the runner for the model:
//!   `str_replace_based_edit_tool` (confined to the work tree) and `bash` (a shell
//!   session inside the job's sandbox).

pub mod tools;
