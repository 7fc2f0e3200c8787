//! lockstep-policy: compiling bundles into regorus engines and evaluating them
//! with OPA's semantics.
//!
//! This crate owns:
//! - **compiling** a bundle's modules and data into a [`PolicySet`] (one fresh
//!   regorus engine per bundle, configured for OPA parity, plus the compile-time
//!   checks OPA does and regorus does not: undefined functions, unsupported or
//!   stubbed builtins, rule/data path conflicts);
//! - **evaluation**: OPA result sets for queries, rule and data-path lookups, and
//!   [`DecisionFn`] for hot paths (bytecode VM with interpreter fallback);
//! - the **decision fast path** (issue 10): `regex.*`/`glob.match` on shared compiled
//!   matchers in both evaluators; a per-entrypoint decision memo keyed by the input
//!   paths the entrypoint reads ([`MemoStatus`], [`CompileOptions::memo`]), used by
//!   [`PolicySet::eval_data_path`] and [`DecisionFn`]; and regorus's bytecode VM
//!   behind it, compiled per entrypoint on first use and verified on the requests
//!   it serves ([`RvmOptions`]: shadowed, then rechecked, retired on any
//!   disagreement; [`PolicySet::backend`] says which evaluator decides and why).
//!   An embedder calls `policy.eval_data_path(entrypoint, Some(&input))` per
//!   request; [`PolicySet::use_rvm`] / [`PolicySet::decision_fn_rvm`] skip the
//!   shadow phase for an entrypoint verified in advance on recorded requests;
//! - the **`opa test`-compatible runner** ([`testing`]) and its pretty and JSON
//!   reports;
//! - the **active snapshot** type ([`PolicyHandle`], [`Snapshot`]) that an agent
//!   or gateway swaps atomically on activation.
//!
//! It must not fetch anything or parse archives: bundles arrive already read, as
//! [`lockstep_bundle::Module`]s and a JSON data document.
//!
//! Deliberate differences from OPA are listed in the crate README-level docs of
//! each module; the most visible ones: a bundle must use one Rego version for
//! all its modules, and OPA builtins regorus lacks or stubs (`http.send`,
//! `crypto.*`, `io.jwt.*`, ...) are refused at compile time.

#![forbid(unsafe_code)]

mod ast;
mod builtins;
mod checks;
mod data;
mod decision;
mod engine;
mod error;
mod matchers;
mod memo;
mod paths;
mod per_entrypoint;
mod policy;
mod result;
mod shadow;
mod snapshot;
mod sources;
pub mod testing;

pub use checks::unsupported_builtins;
pub use data::DataDocument;
pub use decision::{Backend, DecisionFn};
pub use engine::CompileOptions;
pub use error::{CompileError, Diagnostic, EvalError, RvmError, SourceLocation};
pub use memo::{MemoOptions, MemoStats, MemoStatus, MemoTotals};
pub use paths::{ModulePaths, module_paths};
pub use policy::{Input, PolicySet};
pub use result::{ExpressionValue, QueryLocation, QueryResult, ResultSet};
pub use shadow::RvmOptions;
pub use snapshot::{PolicyHandle, Snapshot};
