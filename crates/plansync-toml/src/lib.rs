//! The files people write for plansync (rule files, the configuration) are TOML read with
//! every span kept: [`table`] walks a parsed document and collects every problem (unknown keys
//! with a "did you mean", wrong types, missing keys) instead of stopping at the first, and
//! [`diagnostic`] renders them as `file:line:column` with the text underlined and a hint.
//!
//! What a file means is its reader's business (`plansync::rules`, `plansync::config`): this
//! crate knows TOML and spans, not rules.

pub mod diagnostic;
pub mod table;
