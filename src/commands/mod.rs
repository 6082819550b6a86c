//! Reading what people write to Repobox on GitHub and GitLab.
//!
//! * [`parser`] finds the command in a comment body: `/repobox [instructions]`
//!   starts a job, `/repobox cancel`, `/repobox retry` and `/repobox help` are
//!   keyword commands, and a mistyped keyword such as `/repobox cancle` is a
//!   [`ParseError::NearMiss`] with a suggestion. Commands inside code blocks,
//!   block quotes and HTML blocks are ignored, only the first command in a
//!   body counts, and edited comments only trigger when the edit adds a
//!   command line ([`parse_edited_command`]). [`help_text`] is the usage reply.
//! * [`sanitize`] cleans forge text (issue bodies, comments, instructions)
//!   before it is stored or shown to an AI agent: it removes HTML comments,
//!   hidden HTML elements and invisible or bidirectional-control characters
//!   ([`sanitize_untrusted`]).
//!
//! Both are pure functions over `&str`; neither performs I/O nor decides who
//! may run commands (that is the caller's permission check).

pub mod parser;
pub mod sanitize;

pub use parser::{Command, ParseError, help_text, parse_command, parse_edited_command};
pub use sanitize::sanitize_untrusted;
