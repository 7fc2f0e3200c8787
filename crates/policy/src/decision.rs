//! [`DecisionFn`]: the hot path for one entrypoint (e.g. `data.mcp.decision`).
//!
//! regorus has two evaluators. The tree-walking interpreter supports all of Rego
//! (including `with`) and costs a few µs per decision. The RVM compiles an
//! entrypoint to bytecode and runs it in well under a microsecond, but does not
//! support `with` and some rule shapes. A `DecisionFn` tries the RVM once, at
//! construction, and keeps the interpreter otherwise. If the RVM fails while
//! evaluating (an unsupported instruction, its instruction budget), that decision
//! is re-evaluated with the interpreter, so a result is never weaker than the
//! interpreter's; the RVM is only ever a faster route to the same answer
//! (checked on generated inputs in the tests).

use std::sync::{Arc, Mutex, PoisonError};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::RegoVM;
use regorus::rvm::program::Program;
use serde_json::Value as Json;

use crate::error::{Diagnostic, EvalError};
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
    rvm: Option<Rvm>,
    backend: Backend,
}

struct Rvm {
    program: Arc<Program>,
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
    pub(crate) fn new(policy: PolicySet, entrypoint: &str) -> Self {
        let (rvm, backend) = match compile_rvm(&policy, entrypoint) {
            Ok(rvm) => (Some(rvm), Backend::Rvm),
            Err(reason) => (None, Backend::Interpreter { reason }),
        };
        Self {
            policy,
            entrypoint: entrypoint.to_string(),
            rvm,
            backend,
        }
    }

    /// Build an interpreter-only decision function (for comparisons and for
    /// callers that want the reference evaluator).
    pub fn interpreter_only(policy: PolicySet, entrypoint: &str) -> Self {
        Self {
            policy,
            entrypoint: entrypoint.to_string(),
            rvm: None,
            backend: Backend::Interpreter {
                reason: "requested".to_string(),
            },
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn entrypoint(&self) -> &str {
        &self.entrypoint
    }

    /// The entrypoint's value for `input`; `None` when undefined.
    pub fn eval(&self, input: &Input) -> Result<Option<Json>, EvalError> {
        if let Some(rvm) = &self.rvm
            && let Ok(value) = rvm.eval(self.policy.data(), input)
        {
            return to_json(value);
        }
        self.policy
            .eval_data_path_input(&self.entrypoint, Some(input))
    }

    /// [`Self::eval`] for a JSON input.
    pub fn eval_json(&self, input: &Json) -> Result<Option<Json>, EvalError> {
        self.eval(&Input::from_json(input)?)
    }

    /// The same decision through the interpreter alone.
    pub fn eval_interpreter(&self, input: &Input) -> Result<Option<Json>, EvalError> {
        self.policy
            .eval_data_path_input(&self.entrypoint, Some(input))
    }
}

fn compile_rvm(policy: &PolicySet, entrypoint: &str) -> Result<Rvm, String> {
    let mut engine = policy.engine_with(None);
    let compiled = engine
        .compile_with_entrypoint(&entrypoint.into())
        .map_err(|e| Diagnostic::from_regorus(&e, "rvm_error").message)?;
    let program =
        Compiler::compile_from_policy(&compiled, &[entrypoint]).map_err(|e| e.to_string())?;
    let rvm = Rvm {
        program,
        pool: Mutex::new(Vec::new()),
    };
    // Fail at construction rather than on the first request if the data or
    // program cannot be loaded.
    let vm = rvm.new_vm(policy.data())?;
    rvm.release(vm);
    Ok(rvm)
}

impl Rvm {
    fn new_vm(&self, data: &regorus::Value) -> Result<RegoVM, String> {
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_max_instructions(MAX_INSTRUCTIONS);
        vm.set_data(data.clone()).map_err(|e| e.to_string())?;
        Ok(vm)
    }

    fn acquire(&self, data: &regorus::Value) -> Result<RegoVM, String> {
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

    fn eval(&self, data: &regorus::Value, input: &Input) -> Result<regorus::Value, String> {
        let mut vm = self.acquire(data)?;
        vm.set_input(input.0.clone());
        let result = vm.execute().map_err(|e| e.to_string());
        // Drop the input reference before pooling the VM.
        vm.set_input(regorus::Value::Null);
        self.release(vm);
        result
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
