//! [`DecisionFn`]: the hot path for one entrypoint (e.g. `data.mcp.decision`).
//!
//! regorus has two evaluators. The tree-walking interpreter supports all of Rego
//! (including `with`) and costs a few µs per decision. The RVM compiles an
//! entrypoint to bytecode and runs it several times faster, but in regorus 0.14.1
//! it does not always agree with the interpreter (and OPA). Measured on our own
//! policies (tests/eval.rs): a body continues after `x := <undefined>` instead of
//! failing, `else` branches are skipped, partial-object rules store the string
//! "<undefined>", rule conflicts are undefined instead of errors.
//!
//! So the interpreter is the default ([`crate::PolicySet::decision_fn`]), and the
//! RVM is opt-in ([`crate::PolicySet::decision_fn_rvm`]): it is used only if the
//! entrypoint compiles, the bundle avoids the constructs above, and the RVM agrees
//! with the interpreter on every probe input the caller supplies (e.g. recorded
//! or generated requests). If the RVM fails while evaluating, that decision is
//! re-evaluated with the interpreter.

use std::sync::{Arc, Mutex, PoisonError};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::RegoVM;
use regorus::rvm::program::Program;
use serde_json::Value as Json;

use crate::error::{Diagnostic, EvalError, RvmError};
use crate::memo::{EntryMemo, MemoStats, MemoStatus};
use crate::policy::{Input, PolicySet, to_json};

/// Which evaluator a [`DecisionFn`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Rvm,
    /// With the reason the RVM was not used.
    Interpreter {
        reason: String,
    },
}

/// RVMs are not `Clone`, and building one per call (load program, set data)
/// costs about as much as the evaluation; a small pool keeps them warm.
const MAX_POOLED_VMS: usize = 64;

/// RVM instruction budget per decision. regorus's default (25,000) is small for
/// real bundles; running out falls back to the interpreter anyway.
const MAX_INSTRUCTIONS: usize = 5_000_000;

pub struct DecisionFn {
    policy: PolicySet,
    entrypoint: String,
    rvm: Option<Arc<Rvm>>,
    backend: Backend,
    /// The policy set's memo for this entrypoint, shared with
    /// [`PolicySet::eval_data_path`] (`None` past the set's limit of memos).
    memo: Option<Arc<EntryMemo>>,
}

pub(crate) struct Rvm {
    strict_builtin_errors: bool,
    program: Arc<Program>,
    /// What to execute: one rule (`key` None), or each rule of a package,
    /// assembled into the package's object.
    entries: Vec<(Option<String>, String)>,
    pool: Mutex<Vec<RegoVM>>,
}

impl std::fmt::Debug for DecisionFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionFn")
            .field("entrypoint", &self.entrypoint)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl DecisionFn {
    /// Use the RVM only if it compiles the entrypoint *and* agrees with the
    /// interpreter (results and errors) on every probe input.
    pub(crate) fn with_rvm(policy: PolicySet, entrypoint: &str, probes: &[Input]) -> Self {
        let (rvm, backend) = match verified_rvm(&policy, entrypoint, probes) {
            Ok(rvm) => (Some(Arc::new(rvm)), Backend::Rvm),
            Err(reason) => (
                None,
                Backend::Interpreter {
                    reason: reason.to_string(),
                },
            ),
        };
        let memo = policy.memo(entrypoint);
        Self {
            policy,
            entrypoint: entrypoint.to_string(),
            rvm,
            backend,
            memo,
        }
    }

    /// The interpreter: all of Rego, OPA's semantics.
    pub fn interpreter_only(policy: PolicySet, entrypoint: &str) -> Self {
        let memo = policy.memo(entrypoint);
        Self {
            policy,
            entrypoint: entrypoint.to_string(),
            rvm: None,
            backend: Backend::Interpreter {
                reason: "the RVM was not requested".to_string(),
            },
            memo,
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn entrypoint(&self) -> &str {
        &self.entrypoint
    }

    /// The entrypoint's value for `input`; `None` when undefined. Through the memo
    /// when it is on ([`Self::memo_status`]), then the RVM when verified, then the
    /// interpreter.
    pub fn eval(&self, input: &Input) -> Result<Option<Json>, EvalError> {
        let key = self.memo.as_ref().and_then(|m| m.key(&input.0));
        if let (Some(memo), Some(key)) = (&self.memo, &key)
            && let Some(hit) = memo.get(key)
        {
            return Ok(hit);
        }
        let value = self.eval_uncached(input)?;
        if let (Some(memo), Some(key)) = (&self.memo, key) {
            memo.insert(key, &value);
        }
        Ok(value)
    }

    /// [`Self::eval`] without the memo.
    pub fn eval_uncached(&self, input: &Input) -> Result<Option<Json>, EvalError> {
        if let Some(rvm) = &self.rvm
            && let Ok(value) = rvm.eval(self.policy.data(), input)
        {
            return to_json(value);
        }
        self.policy
            .eval_data_path_uncached(&self.entrypoint, Some(input))
    }

    /// [`Self::eval`] for a JSON input: on a memo hit, the input is never converted.
    pub fn eval_json(&self, input: &Json) -> Result<Option<Json>, EvalError> {
        let key = self.memo.as_ref().and_then(|m| m.key_json(input));
        if let (Some(memo), Some(key)) = (&self.memo, &key)
            && let Some(hit) = memo.get(key)
        {
            return Ok(hit);
        }
        let value = self.eval_uncached(&Input::from_json(input)?)?;
        if let (Some(memo), Some(key)) = (&self.memo, key) {
            memo.insert(key, &value);
        }
        Ok(value)
    }

    /// The same decision through the interpreter alone (no memo, no RVM).
    pub fn eval_interpreter(&self, input: &Input) -> Result<Option<Json>, EvalError> {
        self.policy
            .eval_data_path_uncached(&self.entrypoint, Some(input))
    }

    /// Whether this entrypoint's decisions are memoized, on which input paths, or why not.
    pub fn memo_status(&self) -> MemoStatus {
        self.policy.memo_status(&self.entrypoint)
    }

    /// The memo's hit, miss and eviction counts.
    pub fn memo_stats(&self) -> MemoStats {
        self.memo.as_ref().map(|m| m.stats()).unwrap_or_default()
    }
}

/// The RVM for `entrypoint`, if it compiles and agrees with the interpreter
/// (results and errors) on every probe.
pub(crate) fn verified_rvm(
    policy: &PolicySet,
    entrypoint: &str,
    probes: &[Input],
) -> Result<Rvm, RvmError> {
    let rvm = compile_rvm(policy, entrypoint)?;
    for (i, probe) in probes.iter().enumerate() {
        let fast = rvm.eval(policy.data(), probe).map(to_json);
        let slow = policy.eval_data_path_uncached(entrypoint, Some(probe));
        let agree = match (&fast, &slow) {
            (Ok(Ok(a)), Ok(b)) => a == b,
            _ => false,
        };
        if !agree {
            let show = |r: Result<Option<Json>, String>| match r {
                Ok(Some(v)) => v.to_string(),
                Ok(None) => "undefined".to_string(),
                Err(e) => format!("error ({e})"),
            };
            let fast = fast
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            return Err(RvmError::Disagreed {
                probe: i,
                rvm: show(fast),
                interpreter: show(slow.map_err(|e| e.to_string())),
            });
        }
    }
    Ok(rvm)
}

pub(crate) fn compile_rvm(policy: &PolicySet, entrypoint: &str) -> Result<Rvm, RvmError> {
    // The RVM compiles rules, not packages: a package entrypoint
    // (`data.mcp.decision`) becomes one entry per rule, assembled after.
    if let Some(blocker) = policy.rvm_blockers().first() {
        return Err(RvmError::Construct(blocker.to_string()));
    }
    let entries: Vec<(Option<String>, String)> = if policy.is_rule_path(entrypoint) {
        vec![(None, entrypoint.to_string())]
    } else if let Some(rules) = policy.flat_package(entrypoint) {
        rules
            .iter()
            .map(|(k, p)| (Some(k.clone()), p.clone()))
            .collect()
    } else {
        return Err(RvmError::NotCompilable(entrypoint.to_string()));
    };
    let Some((_, first)) = entries.first() else {
        return Err(RvmError::NoRules);
    };
    let mut engine = policy.rvm_engine()?;
    let compiled = engine
        .compile_with_entrypoint(&first.as_str().into())
        .map_err(|e| RvmError::Load(Diagnostic::from_regorus(&e, "rvm_error").message))?;
    let paths: Vec<&str> = entries.iter().map(|(_, p)| p.as_str()).collect();
    let mut program = Compiler::compile_from_policy(&compiled, &paths)
        .map_err(|e| RvmError::Load(e.to_string()))?;
    // The same shared matchers as the interpreter's extensions (the RVM does not
    // call extensions; it calls the function pointers the program resolved).
    if policy.shared_matchers() {
        crate::matchers::patch_program(Arc::make_mut(&mut program));
    }
    let rvm = Rvm {
        strict_builtin_errors: policy.strict_builtin_errors(),
        program,
        entries,
        pool: Mutex::new(Vec::new()),
    };
    // Fail at construction rather than on the first request if the data or
    // program cannot be loaded.
    let vm = rvm.new_vm(policy.data())?;
    rvm.release(vm);
    Ok(rvm)
}

impl Rvm {
    fn new_vm(&self, data: &regorus::Value) -> Result<RegoVM, RvmError> {
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_max_instructions(MAX_INSTRUCTIONS);
        vm.set_strict_builtin_errors(self.strict_builtin_errors);
        vm.set_data(data.clone())
            .map_err(|e| RvmError::Load(e.to_string()))?;
        Ok(vm)
    }

    fn acquire(&self, data: &regorus::Value) -> Result<RegoVM, RvmError> {
        // A panic elsewhere while holding the lock leaves only idle VMs behind:
        // they are reset before every run, so the pool stays usable.
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match pooled {
            Some(vm) => Ok(vm),
            None => self.new_vm(data),
        }
    }

    fn release(&self, vm: RegoVM) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < MAX_POOLED_VMS {
            pool.push(vm);
        }
    }

    pub(crate) fn eval(
        &self,
        data: &regorus::Value,
        input: &Input,
    ) -> Result<regorus::Value, RvmError> {
        let mut vm = self.acquire(data)?;
        vm.set_input(input.0.clone());
        let result = self.run(&mut vm);
        // Drop the input reference before pooling the VM.
        vm.set_input(regorus::Value::Null);
        self.release(vm);
        result
    }

    fn run(&self, vm: &mut RegoVM) -> Result<regorus::Value, RvmError> {
        let mut object = regorus::Value::new_object();
        for (key, path) in &self.entries {
            let value = vm
                .execute_entry_point_by_name(path)
                .map_err(|e| RvmError::Run(e.to_string()))?;
            let Some(key) = key else { return Ok(value) };
            // Undefined rules are absent from a package's document.
            if value != regorus::Value::Undefined {
                object
                    .as_object_mut()
                    .map_err(|e| RvmError::Run(e.to_string()))?
                    .insert(regorus::Value::from(key.as_str()), value);
            }
        }
        Ok(object)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn decision_fn_is_send_and_sync() {
        assert_send_sync::<DecisionFn>();
    }
}
