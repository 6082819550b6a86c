//! `str_replace_based_edit_tool` (to be written).
