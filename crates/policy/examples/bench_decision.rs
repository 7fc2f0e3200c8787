//! Per-decision latency of the three-layer MCP decision, side by side with OPA's own
//! evaluator in the same process and the same minute (measured, not asserted).
//!
//!     cargo run --release -p lockstep-policy --example bench_decision
//!     BENCH_OPA_LIB=$(scripts/fetch-opa-golib.sh) cargo run --release -p lockstep-policy --example bench_decision
//!
//! Every variant runs `BENCH_ROUNDS` rounds (default 9) of `BENCH_EVALS` evaluations
//! (default 4,000), inputs alternating allowed/denied; the rounds of all variants are
//! interleaved, so a noisy moment on this shared machine slows them all alike. The
//! result per variant is the median round (ns per eval), and each lockstep variant's
//! ratio to OPA is the median of its per-round ratios.
//!
//! Variants, per entrypoint:
//! - `opa`: OPA v1.20.2's topdown through `libopabridge.so` (the anchor of
//!   /work/shared/bench/opa-golib): JSON text in, JSON text out. Only with
//!   `BENCH_OPA_LIB`.
//! - `<evaluator>/<matchers>/<boundary>`: evaluator `interp` (regorus's interpreter)
//!   or `rvm` (its bytecode VM, when `decision_fn_rvm` accepts it on the inputs);
//!   matchers `builtin` (regorus's `regex.match`/`glob.match`, as before issue 10)
//!   or `shared` (lockstep's shared compiled matchers); boundary `json` (input JSON
//!   text parsed, decision serialised to JSON text: OPA's boundary) or `value`
//!   (input already converted, decision returned as a `serde_json::Value`).
//!
//! - `memo-hit/<boundary>`: the decision memo on a repeated footprint (the RVM behind
//!   it when verified): `json` = JSON text parsed to `serde_json`, memo lookup,
//!   decision serialised; `value` = converted input; `serde-value` = a
//!   `serde_json::Value` input (`DecisionFn::eval_json`, never converted on a hit).
//!   The variants above run with the memo off.
//!
//! `BENCH_ENTRYPOINTS=data.a.b,data.c` times other entrypoints; `BENCH_RVM_ONLY=1`
//! skips the interpreter.
// A benchmark program, not library code: it stops at the first failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::time::Instant;

use lockstep_bundle::Module;
use lockstep_policy::{Backend, CompileOptions, DecisionFn, Input, MemoOptions, PolicySet};
use serde_json::{Value, json};

const INPUTS: [&str; 2] = [
    r#"{"agent":{"role":"analyst"},"request":{"tool":"read_database","params":{"target":"orders","operation":"read","database":"analytics"}}}"#,
    r#"{"agent":{"role":"analyst"},"request":{"tool":"write_database","params":{"target":"orders","operation":"write","database":"payroll"}}}"#,
];

const LAYERS: [&str; 4] = [
    "tool_access",
    "command_scope",
    "resource_access",
    "decision",
];
const DATA: [&str; 3] = ["roles", "commands", "resources"];

fn root() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies/mcp").to_string()
}

fn load(opts: &CompileOptions) -> PolicySet {
    let root = root();
    let modules: Vec<Module> = LAYERS
        .iter()
        .map(|f| Module {
            path: format!("mcp/{f}.rego"),
            source: std::fs::read_to_string(format!("{root}/{f}.rego")).unwrap(),
            rego_version: 1,
        })
        .collect();
    let mut data = json!({"mcp": {}});
    for d in DATA {
        let text = std::fs::read_to_string(format!("{root}/{d}/data.json")).unwrap();
        data["mcp"][d] = serde_json::from_str(&text).unwrap();
    }
    PolicySet::compile(&modules, data, opts).unwrap()
}

/// OPA's evaluator, in process: the C ABI of `libopabridge.so` (see
/// /work/shared/bench/opa-golib/README.md).
type FreeFn = unsafe extern "C" fn(*mut c_char);
type EvalFn = unsafe extern "C" fn(u64, *const c_char, *const c_char, c_int, c_int) -> *mut c_char;

struct Opa {
    handle: u64,
    free: FreeFn,
    eval_document: EvalFn,
}

impl Opa {
    fn open(path: &str) -> Opa {
        let path = CString::new(path).unwrap();
        // SAFETY: dlopen/dlsym on a library with the documented C ABI; the symbols are
        // transmuted to exactly the signatures the bridge exports.
        unsafe {
            let lib = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            assert!(!lib.is_null(), "dlopen {path:?} failed");
            let sym = |name: &str| {
                let name = CString::new(name).unwrap();
                let p = libc::dlsym(lib, name.as_ptr());
                assert!(!p.is_null(), "no symbol {name:?}");
                p
            };
            let new = std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn() -> u64>(sym(
                "OpaNew",
            ));
            type Add = unsafe extern "C" fn(u64, *const c_char, *const c_char) -> *mut c_char;
            let add_policy = std::mem::transmute::<*mut libc::c_void, Add>(sym("OpaAddPolicy"));
            let add_data = std::mem::transmute::<*mut libc::c_void, Add>(sym("OpaAddData"));
            let opa = Opa {
                handle: new(),
                free: std::mem::transmute::<*mut libc::c_void, FreeFn>(sym("OpaFreeString")),
                eval_document: std::mem::transmute::<*mut libc::c_void, EvalFn>(sym(
                    "OpaEvalDocument",
                )),
            };
            let root = root();
            for f in LAYERS {
                let path = CString::new(format!("mcp/{f}.rego")).unwrap();
                let src =
                    CString::new(std::fs::read_to_string(format!("{root}/{f}.rego")).unwrap())
                        .unwrap();
                opa.check(add_policy(opa.handle, path.as_ptr(), src.as_ptr()));
            }
            for d in DATA {
                let dotted = CString::new(format!("mcp.{d}")).unwrap();
                let src =
                    CString::new(std::fs::read_to_string(format!("{root}/{d}/data.json")).unwrap())
                        .unwrap();
                opa.check(add_data(opa.handle, dotted.as_ptr(), src.as_ptr()));
            }
            opa
        }
    }

    /// Takes ownership of an envelope; panics on an error envelope.
    unsafe fn take(&self, env: *mut c_char) -> String {
        assert!(!env.is_null());
        // SAFETY: the bridge returns a NUL-terminated malloc'd string, freed once here.
        let s = unsafe { CStr::from_ptr(env) }
            .to_string_lossy()
            .into_owned();
        unsafe { (self.free)(env) };
        s
    }

    unsafe fn check(&self, env: *mut c_char) {
        let s = unsafe { self.take(env) };
        assert!(!s.contains("\"error\":{"), "{s}");
    }

    /// One decision: `doc` like `mcp.decision`, input JSON text; the envelope text.
    fn eval(&self, doc: &CStr, input: &CStr) -> String {
        // SAFETY: valid C strings; the envelope is taken (and freed) at once.
        unsafe {
            self.take((self.eval_document)(
                self.handle,
                doc.as_ptr(),
                input.as_ptr(),
                0,
                0,
            ))
        }
    }

    /// The decision's value, as lockstep returns it.
    fn value(&self, doc: &CStr, input: &CStr) -> Option<Value> {
        let env: Value = serde_json::from_str(&self.eval(doc, input)).unwrap();
        env["result"][0]["expressions"][0].get("value").cloned()
    }
}

type Run<'a> = Box<dyn Fn(usize) + 'a>;

struct Variant<'a> {
    name: String,
    run: Run<'a>,
    rounds: Vec<f64>,
}

fn lockstep_variant<'a>(
    name: String,
    f: &'a DecisionFn,
    json_boundary: bool,
    values: &'a [Input],
) -> Variant<'a> {
    let run: Run<'a> = if json_boundary {
        Box::new(move |i| {
            let input = Input::parse_json(INPUTS[i & 1]).unwrap();
            let out = f.eval(&input).unwrap();
            std::hint::black_box(serde_json::to_string(&out).unwrap());
        })
    } else {
        Box::new(move |i| {
            std::hint::black_box(f.eval(&values[i & 1]).unwrap());
        })
    };
    Variant {
        name,
        run,
        rounds: Vec::new(),
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let evals = env_usize("BENCH_EVALS", 4_000);
    let rounds = env_usize("BENCH_ROUNDS", 9);
    let t = Instant::now();
    let no_memo = MemoOptions {
        enabled: false,
        ..MemoOptions::default()
    };
    let shared = load(&CompileOptions {
        memo: no_memo.clone(),
        ..CompileOptions::default()
    });
    println!("compile (4 modules + data, prepared): {:?}", t.elapsed());
    let builtin = load(&CompileOptions {
        shared_matchers: false,
        memo: no_memo,
        ..CompileOptions::default()
    });
    let memoized = load(&CompileOptions::default());
    let values: Vec<Input> = INPUTS
        .iter()
        .map(|t| Input::parse_json(t).unwrap())
        .collect();
    let opa = std::env::var("BENCH_OPA_LIB").ok().map(|p| Opa::open(&p));
    if opa.is_none() {
        println!("(no BENCH_OPA_LIB: OPA's evaluator is not timed)");
    }
    let custom = std::env::var("BENCH_ENTRYPOINTS").unwrap_or_default();
    let entrypoints: Vec<&str> = if custom.is_empty() {
        vec![
            "data.mcp.decision",
            "data.mcp.decision.allow",
            "data.mcp.tool_access.allow",
        ]
    } else {
        custom.split(',').collect()
    };
    let rvm_only = std::env::var("BENCH_RVM_ONLY").is_ok();
    let json_inputs: Vec<Value> = INPUTS
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();

    let c_inputs: Vec<CString> = INPUTS.iter().map(|t| CString::new(*t).unwrap()).collect();

    for ep in entrypoints {
        let doc = CString::new(ep.trim_start_matches("data.")).unwrap();
        // Every lockstep variant first: same answers as OPA, or the numbers mean nothing.
        let mut fns: Vec<(String, DecisionFn)> = Vec::new();
        for (matchers, policy) in [("builtin", &builtin), ("shared", &shared)] {
            if !rvm_only {
                fns.push((format!("interp/{matchers}"), policy.decision_fn(ep)));
            }
            let rvm = policy.decision_fn_rvm(ep, &values);
            match rvm.backend() {
                Backend::Rvm => fns.push((format!("rvm/{matchers}"), rvm)),
                Backend::Interpreter { reason } => {
                    println!("{ep}: rvm/{matchers} refused ({reason})")
                }
            }
        }
        // The memo, on the RVM when it is verified: after the first evaluation of
        // each input, every decision is a repeated footprint.
        let memo_fn = memoized.decision_fn_rvm(ep, &values);
        println!("{ep}: memo {:?}", memo_fn.memo_status());
        for (name, f) in &fns {
            for (i, v) in values.iter().enumerate() {
                let got = f.eval(v).unwrap();
                assert_eq!(got, f.eval_interpreter(v).unwrap(), "{ep} {name}");
                if let Some(opa) = &opa {
                    assert_eq!(got, opa.value(&doc, &c_inputs[i]), "{ep} {name} vs OPA");
                }
            }
        }

        let mut variants: Vec<Variant> = Vec::new();
        if let Some(opa) = &opa {
            let (doc, c_inputs) = (&doc, &c_inputs);
            variants.push(Variant {
                name: "opa (json)".to_string(),
                run: Box::new(move |i| {
                    std::hint::black_box(opa.eval(doc, &c_inputs[i & 1]));
                }),
                rounds: Vec::new(),
            });
        }
        for (name, f) in &fns {
            variants.push(lockstep_variant(format!("{name}/json"), f, true, &values));
            variants.push(lockstep_variant(format!("{name}/value"), f, false, &values));
        }
        for (i, v) in json_inputs.iter().enumerate() {
            assert_eq!(
                memo_fn.eval_json(v).unwrap(),
                memo_fn.eval_interpreter(&values[i]).unwrap()
            );
        }
        {
            let f = &memo_fn;
            variants.push(Variant {
                name: "memo-hit/json".to_string(),
                run: Box::new(move |i| {
                    let input: Value = serde_json::from_str(INPUTS[i & 1]).unwrap();
                    let out = f.eval_json(&input).unwrap();
                    std::hint::black_box(serde_json::to_string(&out).unwrap());
                }),
                rounds: Vec::new(),
            });
            let values = &values;
            variants.push(Variant {
                name: "memo-hit/value".to_string(),
                run: Box::new(move |i| {
                    std::hint::black_box(f.eval(&values[i & 1]).unwrap());
                }),
                rounds: Vec::new(),
            });
            let json_inputs = &json_inputs;
            variants.push(Variant {
                name: "memo-hit/serde-value".to_string(),
                run: Box::new(move |i| {
                    std::hint::black_box(f.eval_json(&json_inputs[i & 1]).unwrap());
                }),
                rounds: Vec::new(),
            });
        }
        for v in &variants {
            for i in 0..evals / 4 {
                (v.run)(i);
            }
        }
        for _ in 0..rounds {
            for v in &mut variants {
                let t = Instant::now();
                for i in 0..evals {
                    (v.run)(i);
                }
                v.rounds.push(t.elapsed().as_nanos() as f64 / evals as f64);
            }
        }
        println!(
            "{ep}: median of {rounds} rounds x {evals} evals, inputs alternating allowed/denied"
        );
        let opa_rounds = opa.as_ref().map(|_| variants[0].rounds.clone());
        for v in &variants {
            let ratio = opa_rounds.as_ref().map(|o| {
                let r: Vec<f64> = o.iter().zip(&v.rounds).map(|(o, l)| o / l).collect();
                median(&r)
            });
            match ratio {
                Some(r) if !v.name.starts_with("opa") => println!(
                    "  {:28} {:>9.0} ns/eval   OPA/this {:>6.1}x",
                    v.name,
                    median(&v.rounds),
                    r
                ),
                _ => println!("  {:28} {:>9.0} ns/eval", v.name, median(&v.rounds)),
            }
        }
    }
}
