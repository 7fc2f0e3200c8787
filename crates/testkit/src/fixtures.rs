//! The guide's files, verbatim, as the tests of several crates use them.

/// The guide's `opa-config.yaml` (indentation restored; the article flattens it).
pub const GUIDE_OPA_CONFIG: &str = include_str!("../fixtures/guide-opa-config.yaml");
