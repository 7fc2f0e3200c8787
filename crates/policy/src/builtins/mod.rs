//! OPA builtins regorus lacks, supplied by lockstep as regorus extensions (issue 15):
//! `crypto.*` digests and HMACs, `io.jwt.*` decoding and verification, and the
//! `net.cidr_*` functions regorus does not have. Each follows OPA's Go implementation
//! (`v1/topdown/crypto.go`, `tokens.go`, `cidr.go`): its argument types, its output
//! shapes, and which failures are builtin errors (undefined unless builtin errors are
//! strict, as in OPA) and which decide `false`.
//!
//! regorus's interpreter looks up extensions before builtins, so registering one
//! under the builtin's name is enough for calls; the compile-time check
//! (`checks::calls`) accepts what [`PROVIDED`] lists and still refuses the rest.
//! Signatures are checked with `lockstep_bundle`'s JWS primitives and key parsers,
//! the ones bundle signatures use, so there is one implementation of each algorithm.
//!
//! Must not: read the clock except where OPA does (`io.jwt.decode_verify` without a
//! `time` constraint), touch the network or the file system.

mod cidr;
mod crypto;
mod jwt;
pub(crate) mod mocks;
pub(crate) mod output_args;

use regorus::{Engine, Value};

/// A builtin lockstep provides: its OPA name, arity, and whether its result is a
/// function of its arguments alone (what the decision memo may cache).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Provided {
    pub name: &'static str,
    pub arity: u8,
    pub pure: bool,
}

const fn pure(name: &'static str, arity: u8) -> Provided {
    Provided {
        name,
        arity,
        pure: true,
    }
}

/// Every builtin provided here.
pub(crate) const PROVIDED: &[Provided] = &[
    pure("crypto.md5", 1),
    pure("crypto.sha1", 1),
    pure("crypto.sha256", 1),
    pure("crypto.hmac.md5", 2),
    pure("crypto.hmac.sha1", 2),
    pure("crypto.hmac.sha256", 2),
    pure("crypto.hmac.sha512", 2),
    pure("crypto.hmac.equal", 2),
    pure("io.jwt.decode", 1),
    pure("io.jwt.verify_rs256", 2),
    pure("io.jwt.verify_rs384", 2),
    pure("io.jwt.verify_rs512", 2),
    pure("io.jwt.verify_ps256", 2),
    pure("io.jwt.verify_ps384", 2),
    pure("io.jwt.verify_ps512", 2),
    pure("io.jwt.verify_es256", 2),
    pure("io.jwt.verify_es384", 2),
    pure("io.jwt.verify_es512", 2),
    pure("io.jwt.verify_hs256", 2),
    pure("io.jwt.verify_hs384", 2),
    pure("io.jwt.verify_hs512", 2),
    pure("io.jwt.verify_eddsa", 2),
    // Reads the clock when the constraints carry no `time`.
    Provided {
        name: "io.jwt.decode_verify",
        arity: 2,
        pure: false,
    },
    pure("net.cidr_intersects", 2),
    pure("net.cidr_merge", 1),
];

/// Whether lockstep provides `name`.
pub(crate) fn provides(name: &str) -> bool {
    PROVIDED.iter().any(|p| p.name == name)
}

/// The provided builtins whose result depends on their arguments alone.
pub(crate) fn is_pure(name: &str) -> bool {
    PROVIDED.iter().any(|p| p.name == name && p.pure)
}

/// Whether an evaluation error's message is a [`CallError`] of a provided builtin
/// (`net.cidr_merge: ...`).
pub(crate) fn is_builtin_error(message: &str) -> bool {
    message
        .split_once(": ")
        .is_some_and(|(name, _)| provides(name))
}

/// Why a call failed. Every failure here is a builtin error: undefined unless
/// builtin errors are strict (OPA's `topdown.Error` with code `eval_builtin_error`
/// or `eval_type_error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub(crate) struct CallError {
    pub name: &'static str,
    pub message: String,
}

pub(crate) type CallResult = Result<Value, CallError>;

/// Arguments of one call, with OPA's operand type errors.
pub(crate) struct Args<'a> {
    pub name: &'static str,
    pub values: &'a [Value],
}

impl<'a> Args<'a> {
    pub fn error(&self, message: impl Into<String>) -> CallError {
        CallError {
            name: self.name,
            message: message.into(),
        }
    }

    pub fn get(&self, i: usize) -> Result<&'a Value, CallError> {
        self.values
            .get(i)
            .ok_or_else(|| self.error(format!("missing operand {}", i + 1)))
    }

    /// OPA's `operand N must be T but got U`.
    pub fn type_error(&self, i: usize, want: &str) -> CallError {
        let got = self.values.get(i).map_or("undefined", type_name);
        self.error(format!("operand {} must be {want} but got {got}", i + 1))
    }

    pub fn string(&self, i: usize) -> Result<&'a str, CallError> {
        match self.get(i)? {
            Value::String(s) => Ok(s.as_ref()),
            _ => Err(self.type_error(i, "string")),
        }
    }
}

/// OPA's type names, as its errors print them.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Set(_) => "set",
        Value::Object(_) => "object",
        Value::Undefined => "undefined",
    }
}

/// Evaluate one of the [`PROVIDED`] builtins.
pub(crate) fn call(name: &'static str, values: &[Value]) -> CallResult {
    let args = Args { name, values };
    match name {
        n if n.starts_with("crypto.") => crypto::call(&args),
        n if n.starts_with("io.jwt.") => jwt::call(&args),
        n if n.starts_with("net.") => cidr::call(&args),
        _ => Err(args.error("not provided by lockstep")),
    }
}

/// What the interpreter sees: with non-strict builtin errors an error is undefined.
fn interpreter_result(name: &'static str, args: &[Value], strict: bool) -> anyhow::Result<Value> {
    match call(name, args) {
        Ok(v) => Ok(v),
        Err(e) if strict => Err(anyhow::Error::new(e)),
        Err(_) => Ok(Value::Undefined),
    }
}

/// Register every provided builtin on a fresh engine (before any module).
pub(crate) fn install(engine: &mut Engine, strict: bool) -> anyhow::Result<()> {
    for p in PROVIDED {
        let name = p.name;
        engine.add_extension(
            name.to_string(),
            p.arity,
            Box::new(move |a: Vec<Value>| interpreter_result(name, &a, strict)),
        )?;
    }
    Ok(())
}
