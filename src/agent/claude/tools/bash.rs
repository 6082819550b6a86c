//! `bash` tool (to be written).
