//! Every function call must resolve, at compile time, to a builtin regorus really
//! implements or to a function defined in the bundle.
//!
//! Why: regorus resolves calls only when it evaluates them, so a call to an unknown
//! function on a branch no test reaches loads fine and fails in production. Worse,
//! `http.send` is registered but is a stub that returns undefined, silently turning
//! a decision into "undefined". OPA rejects unknown functions when compiling
//! (`rego_type_error: undefined function`); we do the same, and additionally refuse
//! OPA builtins regorus lacks or stubs, naming each call site: failing closed at
//! build time beats an undefined decision at request time.

use std::collections::HashSet;

use crate::ast::{ModuleInfo, RefPart, rule_path};
use crate::engine::Edit;
use crate::error::Diagnostic;

/// OPA builtins registered in regorus that do not behave like OPA's.
const STUBBED: &[&str] = &["http.send"];

/// OPA v1 builtin names (from OPA's capabilities). Used only to word the error:
/// a name listed here but missing from regorus is "unsupported", anything else
/// unknown is an "undefined function", as OPA would call it.
const OPA_BUILTINS: &[&str] = &[
    "abs",
    "all",
    "and",
    "any",
    "array.concat",
    "array.reverse",
    "array.slice",
    "assign",
    "base64.decode",
    "base64.encode",
    "base64.is_valid",
    "base64url.decode",
    "base64url.encode",
    "base64url.encode_no_pad",
    "bits.and",
    "bits.lsh",
    "bits.negate",
    "bits.or",
    "bits.rsh",
    "bits.xor",
    "cast_array",
    "cast_boolean",
    "cast_null",
    "cast_object",
    "cast_set",
    "cast_string",
    "ceil",
    "concat",
    "contains",
    "count",
    "crypto.hmac.equal",
    "crypto.hmac.md5",
    "crypto.hmac.sha1",
    "crypto.hmac.sha256",
    "crypto.hmac.sha512",
    "crypto.md5",
    "crypto.parse_private_keys",
    "crypto.sha1",
    "crypto.sha256",
    "crypto.x509.parse_and_verify_certificates",
    "crypto.x509.parse_and_verify_certificates_with_options",
    "crypto.x509.parse_certificate_request",
    "crypto.x509.parse_certificates",
    "crypto.x509.parse_keypair",
    "crypto.x509.parse_rsa_private_key",
    "div",
    "endswith",
    "eq",
    "equal",
    "floor",
    "format_int",
    "glob.match",
    "glob.quote_meta",
    "graph.reachable",
    "graph.reachable_paths",
    "graphql.is_valid",
    "graphql.parse",
    "graphql.parse_and_verify",
    "graphql.parse_query",
    "graphql.parse_schema",
    "graphql.schema_is_valid",
    "gt",
    "gte",
    "hex.decode",
    "hex.encode",
    "http.send",
    "indexof",
    "indexof_n",
    "internal.member_2",
    "internal.member_3",
    "internal.print",
    "internal.test_case",
    "intersection",
    "io.jwt.decode",
    "io.jwt.decode_verify",
    "io.jwt.encode_sign",
    "io.jwt.encode_sign_raw",
    "io.jwt.verify_eddsa",
    "io.jwt.verify_es256",
    "io.jwt.verify_es384",
    "io.jwt.verify_es512",
    "io.jwt.verify_hs256",
    "io.jwt.verify_hs384",
    "io.jwt.verify_hs512",
    "io.jwt.verify_ps256",
    "io.jwt.verify_ps384",
    "io.jwt.verify_ps512",
    "io.jwt.verify_rs256",
    "io.jwt.verify_rs384",
    "io.jwt.verify_rs512",
    "is_array",
    "is_boolean",
    "is_null",
    "is_number",
    "is_object",
    "is_set",
    "is_string",
    "json.filter",
    "json.is_valid",
    "json.marshal",
    "json.marshal_with_options",
    "json.match_schema",
    "json.patch",
    "json.remove",
    "json.unmarshal",
    "json.verify_schema",
    "lower",
    "lt",
    "lte",
    "max",
    "min",
    "minus",
    "mul",
    "neq",
    "net.cidr_contains",
    "net.cidr_contains_matches",
    "net.cidr_expand",
    "net.cidr_intersects",
    "net.cidr_is_valid",
    "net.cidr_merge",
    "net.cidr_overlap",
    "net.lookup_ip_addr",
    "numbers.range",
    "numbers.range_step",
    "object.filter",
    "object.get",
    "object.keys",
    "object.remove",
    "object.subset",
    "object.union",
    "object.union_n",
    "opa.runtime",
    "or",
    "plus",
    "print",
    "product",
    "providers.aws.sign_req",
    "rand.intn",
    "re_match",
    "regex.find_all_string_submatch_n",
    "regex.find_n",
    "regex.globs_match",
    "regex.is_valid",
    "regex.match",
    "regex.replace",
    "regex.split",
    "regex.template_match",
    "rego.metadata.chain",
    "rego.metadata.rule",
    "rego.parse_module",
    "rem",
    "replace",
    "round",
    "semver.compare",
    "semver.is_valid",
    "set_diff",
    "sort",
    "split",
    "sprintf",
    "startswith",
    "strings.any_prefix_match",
    "strings.any_suffix_match",
    "strings.count",
    "strings.render_template",
    "strings.replace_n",
    "strings.reverse",
    "substring",
    "sum",
    "time.add_date",
    "time.clock",
    "time.date",
    "time.diff",
    "time.format",
    "time.now_ns",
    "time.parse_duration_ns",
    "time.parse_ns",
    "time.parse_rfc3339_ns",
    "time.weekday",
    "to_number",
    "trace",
    "trim",
    "trim_left",
    "trim_prefix",
    "trim_right",
    "trim_space",
    "trim_suffix",
    "type_name",
    "union",
    "units.parse",
    "units.parse_bytes",
    "upper",
    "urlquery.decode",
    "urlquery.decode_object",
    "urlquery.encode",
    "urlquery.encode_object",
    "uuid.parse",
    "uuid.rfc4122",
    "walk",
    "yaml.is_valid",
    "yaml.marshal",
    "yaml.unmarshal",
];

/// Whether regorus implements `name` for real (print is handled by its interpreter),
/// or lockstep provides it (`crate::builtins`).
pub(crate) fn regorus_implements(name: &str) -> bool {
    crate::builtins::provides(name)
        || ((name == "print" || regorus::unstable::BUILTINS.contains_key(name))
            && !STUBBED.contains(&name))
}

/// OPA builtins that a policy may not call under lockstep.
pub fn unsupported_builtins() -> Vec<&'static str> {
    OPA_BUILTINS
        .iter()
        .copied()
        .filter(|n| !regorus_implements(n))
        .collect()
}

/// Check every call site; one diagnostic per offending call.
pub(crate) fn check_calls(modules: &[ModuleInfo]) -> Vec<Diagnostic> {
    let functions = user_functions(modules);
    let mut diags = Vec::new();
    for m in modules {
        for call in &m.calls {
            // A computed function reference cannot be resolved statically;
            // regorus rejects it at evaluation.
            let Some(name) = &call.name else { continue };
            if let Some(message) = problem(m, name, &functions) {
                diags.push(Diagnostic::new(
                    "rego_type_error",
                    message,
                    Some(call.location.clone()),
                ));
            }
        }
    }
    diags
}

/// Edits that qualify calls to functions of the caller's own package
/// (`greeting(x)` becomes `data.lib.greeting(x)`).
///
/// Why: regorus applies a function mock (`with data.lib.greeting as fake`) only
/// to calls written with the qualified or imported path, not to unqualified calls
/// inside the function's package, where OPA applies it everywhere. Qualifying
/// those calls makes regorus resolve them exactly as before while letting the
/// mock reach them.
pub(crate) fn qualify_local_calls(modules: &[ModuleInfo]) -> Vec<Edit> {
    let functions = user_functions(modules);
    let mut edits = Vec::new();
    for (idx, m) in modules.iter().enumerate() {
        for call in &m.calls {
            let (Some(name), Some(start)) = (&call.name, call.root_start) else {
                continue;
            };
            let Some(first) = name.first() else { continue };
            if first == "data" || m.imports.iter().any(|i| &i.alias == first) {
                continue;
            }
            let mut local = m.package.clone();
            local.extend(name.iter().cloned());
            if functions.contains(&local) {
                edits.push(Edit {
                    module: idx,
                    start,
                    end: start,
                    text: format!("{}.", rule_path(&m.package)),
                });
            }
        }
    }
    edits
}

/// Full paths (without `data`) of every function the bundle defines.
fn user_functions(modules: &[ModuleInfo]) -> HashSet<Vec<String>> {
    let mut set = HashSet::new();
    for m in modules {
        for r in m.rules.iter().filter(|r| r.is_function) {
            let mut path = m.package.clone();
            for part in &r.head {
                match part {
                    RefPart::Name(n) => path.push(n.clone()),
                    // Function heads are static in Rego; skip anything else.
                    RefPart::Dynamic => continue,
                }
            }
            set.insert(path);
        }
    }
    set
}

/// Why a call to `name` from module `m` is refused, if it is.
fn problem(m: &ModuleInfo, name: &[String], functions: &HashSet<Vec<String>>) -> Option<String> {
    let (first, rest) = name.split_first()?;
    let joined = name.join(".");
    // `data.x.f(...)`: an absolute reference to a user function.
    if first == "data" {
        return (!functions.contains(rest)).then(|| format!("undefined function {joined}"));
    }
    // An import alias shadows builtins of the same name (as in OPA and regorus).
    if let Some(imp) = m.imports.iter().find(|i| &i.alias == first)
        && imp.path.first().map(String::as_str) == Some("data")
    {
        let mut full: Vec<String> = imp.path.iter().skip(1).cloned().collect();
        full.extend(rest.iter().cloned());
        return (!functions.contains(&full)).then(|| format!("undefined function {joined}"));
    }
    // A function of the calling module's package.
    let mut local = m.package.clone();
    local.extend(name.iter().cloned());
    if functions.contains(&local) || regorus_implements(&joined) {
        return None;
    }
    if OPA_BUILTINS.contains(&joined.as_str()) {
        return Some(format!(
            "unsupported builtin {joined}: lockstep's evaluator (regorus) does not implement it \
             the way OPA does, so the bundle is refused rather than risk an undefined decision"
        ));
    }
    Some(format!("undefined function {joined}"))
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
    use crate::ast::read_modules;

    fn diags(sources: &[&str]) -> Vec<String> {
        let mut e = regorus::Engine::new();
        for (i, s) in sources.iter().enumerate() {
            e.add_policy(format!("m{i}.rego"), s.to_string()).unwrap();
        }
        check_calls(&read_modules(&e).unwrap())
            .into_iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn known_builtins_and_user_functions_pass() {
        let d = diags(&[
            "package lib\nf(x) := x\na.g(x) := x\n",
            "package p\nimport data.lib\nimport data.lib.f as ff\n\
             h(x) := x\n\
             x := [lib.f(1), ff(2), data.lib.a.g(3), h(4), count([]), regex.match(\"a\", \"a\")]\n\
             y if print(\"hi\")\n",
        ]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn unsupported_and_undefined_calls_are_located() {
        let d = diags(&[
            "package p\nimport data.lib\n\nx if {\n  input.a\n  crypto.x509.parse_certificates(\"a\") == \"b\"\n}\n\
             y := http.send({})\nz := foo.bar(1)\nw := lib.nope(1)\n",
        ]);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(
            d[0].starts_with(
                "m0.rego:6:3: rego_type_error: unsupported builtin crypto.x509.parse_certificates"
            ),
            "{}",
            d[0]
        );
        assert!(
            d[1].starts_with("m0.rego:8:6: rego_type_error: unsupported builtin http.send"),
            "{}",
            d[1]
        );
        assert_eq!(
            d[2],
            "m0.rego:9:6: rego_type_error: undefined function foo.bar"
        );
        assert_eq!(
            d[3],
            "m0.rego:10:6: rego_type_error: undefined function lib.nope"
        );
    }

    #[test]
    fn unsupported_list_names_the_known_gaps() {
        let list = unsupported_builtins();
        for name in [
            "http.send",
            "crypto.x509.parse_certificates",
            "io.jwt.encode_sign",
            "rego.metadata.rule",
            "regex.globs_match",
        ] {
            assert!(list.contains(&name), "{name} missing from {list:?}");
        }
        for name in [
            "count",
            "regex.match",
            "glob.match",
            "sprintf",
            "json.patch",
            "print",
            // Provided by lockstep (crate::builtins).
            "crypto.sha256",
            "io.jwt.decode",
            "io.jwt.decode_verify",
            "net.cidr_intersects",
            "net.cidr_merge",
        ] {
            assert!(!list.contains(&name), "{name} wrongly listed");
        }
    }
}
