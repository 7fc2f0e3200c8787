//! The decision memo (src/memo.rs): footprints, the cases that turn it off, its
//! bounds and counters, and a differential run (memo on, memo off, OPA's evaluator)
//! over 10,000+ generated requests, many of which share a footprint and differ
//! elsewhere.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::opa;
use lockstep_policy::{
    Backend, CompileOptions, Input, MemoOptions, MemoStatus, PolicySet, RvmOptions, Snapshot,
};
use serde_json::{Map, Value, json};

fn examples(opts: &CompileOptions) -> PolicySet {
    let (modules, data) = common::load_dir(&common::examples_dir());
    PolicySet::compile(&modules, data, opts).unwrap()
}

fn off() -> CompileOptions {
    CompileOptions {
        memo: MemoOptions {
            enabled: false,
            ..MemoOptions::default()
        },
        ..CompileOptions::default()
    }
}

/// The reference: every decision evaluated by the interpreter.
fn interpreter() -> CompileOptions {
    CompileOptions {
        rvm: RvmOptions {
            enabled: false,
            ..RvmOptions::default()
        },
        ..off()
    }
}

fn paths(status: &MemoStatus) -> Vec<String> {
    match status {
        MemoStatus::On { footprint } => footprint.iter().map(|p| p.join(".")).collect(),
        MemoStatus::Off { reason } => panic!("memo off: {reason}"),
    }
}

#[test]
fn the_example_decision_reads_five_input_paths() {
    let policy = examples(&CompileOptions::default());
    let want = [
        "agent.role",
        "agent.scope",
        "request.params",
        "request.tool",
    ];
    assert_eq!(paths(&policy.memo_status("data.mcp.decision")), want);
    assert_eq!(paths(&policy.memo_status("data.mcp.decision.allow")), want);
    // Layer 1 alone reads two.
    assert_eq!(
        paths(&policy.memo_status("data.mcp.tool_access.allow")),
        ["agent.role", "request.tool"]
    );
}

/// Deterministic xorshift.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// `n` requests: a few hundred distinct footprints (role, scope, tool, params), each
/// sent several times with different values outside the footprint (agent id,
/// method, session, trace id), in shuffled order.
fn generate(n: usize) -> Vec<Value> {
    let mut rng = Rng(0x51_7CC1_B727_220A);
    let roles = [
        json!("analyst"),
        json!("admin"),
        json!("auditor"),
        json!("intern"),
        Value::Null,
        json!(3),
    ];
    let scopes = [json!("read-only"), json!("read-write"), Value::Null];
    let tools = [
        json!("read_database"),
        json!("run_query"),
        json!("write_database"),
        json!("read_file"),
        json!("shell_exec"),
        Value::Null,
    ];
    let targets = [
        json!("orders"),
        json!("Orders"),
        json!("select 1"),
        json!("/var/log/audit/a.log"),
        json!("a; drop"),
        Value::Null,
    ];
    let ops = [json!("read"), json!("write"), json!("delete"), Value::Null];
    let dbs = [
        json!("analytics"),
        json!("payroll"),
        json!("audit_2026"),
        json!("reporting"),
        json!("prod"),
        Value::Null,
    ];
    let paths = [
        json!("/var/log/audit/x.log"),
        json!("/etc/shadow"),
        json!("/srv/db/x"),
        Value::Null,
    ];
    let hosts = [
        json!("db.internal.example.com"),
        json!("evil.com"),
        Value::Null,
    ];
    let set = |m: &mut Map<String, Value>, k: &str, v: &Value| {
        if !v.is_null() {
            m.insert(k.to_string(), v.clone());
        }
    };
    let mut footprints = Vec::new();
    for _ in 0..n / 8 {
        let mut agent = Map::new();
        set(&mut agent, "role", rng.pick(&roles));
        set(&mut agent, "scope", rng.pick(&scopes));
        let mut params = Map::new();
        set(&mut params, "target", rng.pick(&targets));
        set(&mut params, "operation", rng.pick(&ops));
        set(&mut params, "database", rng.pick(&dbs));
        set(&mut params, "path", rng.pick(&paths));
        set(&mut params, "host", rng.pick(&hosts));
        let mut request = Map::new();
        set(&mut request, "tool", rng.pick(&tools));
        request.insert("params".into(), Value::Object(params));
        footprints.push((agent, request));
    }
    // Requests that pass all three layers, so both outcomes are common.
    for (role, tool, params) in [
        (
            "analyst",
            "read_database",
            json!({"target": "orders", "operation": "read", "database": "analytics"}),
        ),
        (
            "analyst",
            "run_query",
            json!({"target": "select 1", "database": "reporting"}),
        ),
        (
            "auditor",
            "read_file",
            json!({"target": "/var/log/audit/a.log", "path": "/var/log/audit/a.log"}),
        ),
    ] {
        let agent = json!({"role": role}).as_object().unwrap().clone();
        let request = json!({"tool": tool, "params": params})
            .as_object()
            .unwrap()
            .clone();
        for _ in 0..n / 200 {
            footprints.push((agent.clone(), request.clone()));
        }
    }
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (agent, request) = rng.pick(&footprints).clone();
        let (mut agent, mut request) = (agent, request);
        // Outside the footprint: differs on almost every request.
        agent.insert("id".into(), json!(format!("agent-{}", rng.next() % 50)));
        request.insert("method".into(), json!("tools/call"));
        if rng.next().is_multiple_of(2) {
            request.insert("session".into(), json!(format!("s-{}", rng.next() % 1000)));
        }
        let mut input = json!({"agent": agent, "request": request});
        if rng.next().is_multiple_of(3) {
            input["meta"] = json!({"trace_id": format!("{:x}", rng.next())});
        }
        out.push(input);
    }
    out
}

#[test]
fn memo_on_memo_off_and_opa_agree_on_10000_requests() {
    const N: usize = 10_400;
    let queries = ["data.mcp.decision", "data.mcp.decision.allow"];
    let (modules, data) = common::load_dir(&common::examples_dir());
    let on = PolicySet::compile(&modules, data.clone(), &CompileOptions::default()).unwrap();
    // The production path without the memo: the RVM shadowing, then serving.
    let rvm = PolicySet::compile(&modules, data.clone(), &off()).unwrap();
    let off = PolicySet::compile(&modules, data.clone(), &interpreter()).unwrap();
    let inputs = generate(N);
    let probes: Vec<Input> = inputs[..100]
        .iter()
        .map(|i| Input::from_json(i).unwrap())
        .collect();
    let opa = opa::eval(&modules, &data, &queries, &inputs);
    assert_eq!(opa.len(), N);
    for (q, query) in queries.iter().enumerate() {
        // The fast path an embedder uses: RVM (verified on 100 probes) behind the memo.
        let fast = on.decision_fn_rvm(query, &probes);
        assert_eq!(fast.backend(), &Backend::Rvm, "{query}");
        let slow = off.decision_fn(query);
        let mut allowed = 0;
        for (input, row) in inputs.iter().zip(&opa) {
            let converted = Input::from_json(input).unwrap();
            // eval_data_path first: its memo misses reach `on`'s own RVM slot.
            let c = on.eval_data_path(query, Some(input)).unwrap();
            let a = fast.eval(&converted).unwrap();
            let b = fast.eval_json(input).unwrap();
            let d = slow.eval(&converted).unwrap();
            let e = rvm.eval_data_path(query, Some(input)).unwrap();
            let want = row[q].get("value").map(opa::normalise);
            assert!(row[q].get("error").is_none(), "OPA errored: {}", row[q]);
            let a = a.as_ref().map(opa::normalise);
            assert_eq!(
                a, want,
                "{query} memo on (DecisionFn::eval) vs OPA for {input}"
            );
            assert_eq!(b.as_ref().map(opa::normalise), want, "{query} eval_json");
            assert_eq!(
                c.as_ref().map(opa::normalise),
                want,
                "{query} eval_data_path"
            );
            assert_eq!(d.as_ref().map(opa::normalise), want, "{query} memo off");
            assert_eq!(
                e.as_ref().map(opa::normalise),
                want,
                "{query} shadow-verified RVM, memo off"
            );
            let allow = match &want {
                Some(Value::Bool(b)) => *b,
                Some(v) => v["allow"] == json!(true),
                None => false,
            };
            allowed += usize::from(allow);
        }
        assert!(
            allowed > N / 20 && allowed < N - N / 20,
            "{query}: {allowed} allowed"
        );
        let stats = fast.memo_stats();
        // Shared with eval_data_path: three lookups per request.
        assert_eq!(stats.hits + stats.misses, 3 * N as u64, "{stats:?}");
        assert!(
            stats.hits > 2 * N as u64,
            "few repeated footprints: {stats:?}"
        );
        assert_eq!(off.memo_stats(query).hits, 0);
        // The RVM passed its shadow phase on these requests and was never retired.
        assert_eq!(rvm.backend(query), Backend::Rvm, "{query}");
        assert_eq!(on.backend(query), Backend::Rvm, "{query}");
        assert!(matches!(off.backend(query), Backend::Interpreter { .. }));
    }
}

fn rvm_options(verify_first: u64, recheck_every: u64) -> CompileOptions {
    CompileOptions {
        rvm: RvmOptions {
            enabled: true,
            verify_first,
            recheck_every,
        },
        ..off()
    }
}

fn interpreted_because(b: Backend) -> String {
    match b {
        Backend::Interpreter { reason } => reason,
        Backend::Rvm => panic!("expected the interpreter"),
    }
}

#[test]
fn the_rvm_serves_only_after_agreeing_with_the_interpreter_on_real_requests() {
    let policy = examples(&rvm_options(50, 10));
    let query = "data.mcp.decision";
    assert!(interpreted_because(policy.backend(query)).contains("not evaluated"));
    let inputs = generate(120);
    for (i, input) in inputs.iter().enumerate() {
        policy.eval_data_path(query, Some(input)).unwrap();
        if i + 1 < 50 {
            let why = interpreted_because(policy.backend(query));
            assert!(why.contains(&format!("shadow: {} of 50", i + 1)), "{why}");
        }
    }
    assert_eq!(policy.backend(query), Backend::Rvm);
    let disabled = examples(&interpreter());
    disabled.eval_data_path(query, Some(&inputs[0])).unwrap();
    assert!(interpreted_because(disabled.backend(query)).contains("turned off"));
}

fn compile(src: &str, opts: &CompileOptions) -> PolicySet {
    PolicySet::compile(&[common::module("p.rego", src)], json!({}), opts).unwrap()
}

fn reason(policy: &PolicySet, entrypoint: &str) -> String {
    match policy.memo_status(entrypoint) {
        MemoStatus::Off { reason } => reason,
        on => panic!("{entrypoint}: memo on: {on:?}"),
    }
}

#[test]
fn each_unboundable_dependency_turns_the_memo_off() {
    let unchecked = CompileOptions {
        check_calls: false,
        ..CompileOptions::default()
    };
    let cases: &[(&str, &str)] = &[
        ("r := x if x := input", "uses `input` as a whole"),
        ("r := json.marshal(input)", "uses `input` as a whole"),
        ("r if some x in input\n", "uses `input` as a whole"),
        ("r := input[k] if k := \"a\"", "computed key at its root"),
        ("r := time.now_ns()", "calls time.now_ns"),
        (
            "r := time.parse_rfc3339_ns(input.t)",
            "calls time.parse_rfc3339_ns",
        ),
        ("r := rand.intn(\"x\", 10)", "calls rand.intn"),
        ("r := uuid.rfc4122(\"x\")", "calls uuid.rfc4122"),
        ("r := opa.runtime()", "calls opa.runtime"),
        (
            "r := http.send({\"method\": \"get\", \"url\": input.u})",
            "calls http.send",
        ),
        (
            "r := net.lookup_ip_addr(input.h)",
            "calls net.lookup_ip_addr",
        ),
        ("r if print(input.x)", "calls print"),
        (
            "r := f(input.x)\n\nf(x) := time.now_ns() + x",
            "calls time.now_ns",
        ),
        ("r := s\n\ns := t if t := input", "uses `input` as a whole"),
        (
            "r if {\n\tq.x with input as {\"a\": 1}\n}\n\nq.x := input.a",
            "uses `with`",
        ),
    ];
    for (body, why) in cases {
        let src = format!("package p\n\n{body}\n");
        let policy = compile(&src, &unchecked);
        let got = reason(&policy, "data.p.r");
        assert!(got.contains(why), "{src}: {got}");
        // Evaluating still works, through the interpreter every time.
        let f = policy.decision_fn("data.p.r");
        let _ =
            f.eval_json(&json!({"x": 1, "t": "2026-01-01T00:00:00Z", "u": "http://x", "h": "x"}));
        assert_eq!(f.memo_stats().hits, 0, "{src}");
    }
    // The switch.
    let policy = compile("package p\n\nr := input.x\n", &off());
    assert!(reason(&policy, "data.p.r").contains("turned off"));
}

#[test]
fn unreachable_rules_do_not_matter_and_imports_are_followed() {
    let modules = [
        common::module(
            "a.rego",
            "package a\n\nimport data.b\n\nr if b.allowed\n\nclock := time.now_ns()\n",
        ),
        common::module(
            "b.rego",
            "package b\n\nallowed if input.user.name == \"x\"\n\nwhole := input\n",
        ),
    ];
    let policy = PolicySet::compile(&modules, json!({}), &CompileOptions::default()).unwrap();
    // `clock` and `whole` are not reached from data.a.r ...
    assert_eq!(paths(&policy.memo_status("data.a.r")), ["user.name"]);
    // ... but the package document reaches `clock`, and data.b reaches `whole`.
    assert!(reason(&policy, "data.a").contains("calls time.now_ns"));
    assert!(reason(&policy, "data.b").contains("as a whole"));
    let f = policy.decision_fn("data.a.r");
    for name in ["x", "y", "x", "x"] {
        f.eval_json(&json!({"user": {"name": name, "other": name.len()}}))
            .unwrap();
    }
    let stats = f.memo_stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.entries),
        (2, 2, 2),
        "{stats:?}"
    );
}

#[test]
fn a_memo_is_bounded_and_counts() {
    let opts = CompileOptions {
        memo: MemoOptions {
            max_entries: 3,
            ..MemoOptions::default()
        },
        ..CompileOptions::default()
    };
    let policy = compile("package p\n\nr := sprintf(\"%v\", [input.x])\n", &opts);
    let f = policy.decision_fn("data.p.r");
    for x in 0..5 {
        assert_eq!(
            f.eval_json(&json!({"x": x})).unwrap(),
            Some(json!(x.to_string()))
        );
    }
    let s = f.memo_stats();
    assert_eq!(
        (s.entries, s.evictions, s.misses, s.hits),
        (3, 2, 5, 0),
        "{s:?}"
    );
    // The newest three are kept.
    f.eval_json(&json!({"x": 4, "y": 1})).unwrap();
    f.eval_json(&json!({"x": 0})).unwrap();
    let s = f.memo_stats();
    assert_eq!((s.hits, s.misses), (1, 6), "{s:?}");

    let opts = CompileOptions {
        memo: MemoOptions {
            max_bytes: 64,
            ..MemoOptions::default()
        },
        ..CompileOptions::default()
    };
    let policy = compile(
        "package p\n\nr := concat(\"\", [input.x, input.x])\n",
        &opts,
    );
    let f = policy.decision_fn("data.p.r");
    for x in ["a", "b", "c", "d"].map(|c| c.repeat(10)) {
        f.eval_json(&json!({ "x": x })).unwrap();
    }
    let s = f.memo_stats();
    assert!(s.bytes <= 64, "{s:?}");
    assert!(s.evictions > 0, "{s:?}");
}

#[test]
fn a_new_revision_starts_with_an_empty_memo() {
    let src = "package p\n\nr := data.limit > input.n\n";
    let v1 = PolicySet::compile(
        &[common::module("p.rego", src)],
        json!({"limit": 5}),
        &CompileOptions::default(),
    )
    .unwrap();
    let first = Snapshot::new("v1", v1).with_entrypoints(&["data.p.r"]);
    let f = first.decision("data.p.r").unwrap();
    assert_eq!(f.eval_json(&json!({"n": 3})).unwrap(), Some(json!(true)));
    assert_eq!(f.eval_json(&json!({"n": 3})).unwrap(), Some(json!(true)));
    assert_eq!(f.memo_stats().hits, 1);
    // Same footprint, new data: the new revision's memo knows nothing of the old one.
    let v2 = PolicySet::compile(
        &[common::module("p.rego", src)],
        json!({"limit": 1}),
        &CompileOptions::default(),
    )
    .unwrap();
    let second = Snapshot::new("v2", v2).with_entrypoints(&["data.p.r"]);
    let g = second.decision("data.p.r").unwrap();
    assert_eq!(g.eval_json(&json!({"n": 3})).unwrap(), Some(json!(false)));
    assert_eq!((g.memo_stats().hits, g.memo_stats().misses), (0, 1));
    assert_eq!(
        second
            .policy
            .eval_data_path("data.p.r", Some(&json!({"n": 3})))
            .unwrap(),
        Some(json!(false))
    );
    assert_eq!(
        g.memo_stats().hits,
        1,
        "eval_data_path shares the entrypoint's memo"
    );
}

#[test]
fn errors_are_not_memoized() {
    let policy = compile(
        "package p\n\nr := 1 if input.a\n\nr := 2 if input.b\n",
        &CompileOptions::default(),
    );
    let f = policy.decision_fn("data.p.r");
    for _ in 0..2 {
        assert!(f.eval_json(&json!({"a": true, "b": true})).is_err());
    }
    assert_eq!(f.memo_stats().entries, 0);
}

#[test]
fn eval_data_path_runs_on_a_registered_rvm_behind_the_memo() {
    let policy = examples(&CompileOptions::default());
    let inputs = generate(300);
    let probes: Vec<Input> = inputs[..100]
        .iter()
        .map(|i| Input::from_json(i).unwrap())
        .collect();
    assert_eq!(policy.use_rvm("data.mcp.decision", &probes), Backend::Rvm);
    let reference = examples(&interpreter()).decision_fn("data.mcp.decision");
    for input in &inputs[100..] {
        let converted = Input::from_json(input).unwrap();
        assert_eq!(
            policy
                .eval_data_path("data.mcp.decision", Some(input))
                .unwrap(),
            reference.eval_interpreter(&converted).unwrap(),
            "{input}"
        );
    }
    // A construct the RVM gets wrong is refused and changes nothing.
    let p = compile(
        "package p\n\nr := m if {\n\tm := sprintf(\"%v\", [input.x])\n} else := \"b\"\n",
        &CompileOptions::default(),
    );
    let probe = Input::from_json(&json!({})).unwrap();
    assert!(matches!(
        p.use_rvm("data.p.r", std::slice::from_ref(&probe)),
        Backend::Interpreter { .. }
    ));
    assert_eq!(
        p.eval_data_path("data.p.r", Some(&json!({}))).unwrap(),
        Some(json!("b"))
    );
}
