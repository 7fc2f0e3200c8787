//! Several upstreams behind one MCP endpoint: the names clients see and the upstream
//! names they stand for.
//!
//! A prefixed upstream's tools and prompts are shown as `{prefix}{separator}{name}`
//! (`db__read_database` with the default separator `__`), and its resource URIs and URI
//! templates as `{prefix}+{uri}` (`db+file:///srv/a.txt`): a tool-name separator such as
//! `__` would make the URI's scheme invalid, while `db+file` is still a valid scheme, so
//! clients that parse URIs keep accepting them.
//!
//! Mapping back is exact: a byte-for-byte prefix match, no case folding, trimming or
//! Unicode normalisation, because the name the policy decides on must be the name the
//! upstream executes. A name that no configured upstream's prefix starts is refused, never
//! guessed. The configuration is refused when one upstream's `{prefix}{separator}` starts
//! another's (prefixes `a` and `a__x`, or `a` and `a_` with separator `__`): a visible
//! name could then belong to both. Prefixing can be off only when there is exactly one
//! upstream; the policy input always names the upstream and the original name.

use serde_json::{Map, Value};
use thiserror::Error;

use crate::jsonrpc::{INVALID_PARAMS, RawObject, Target};

pub const DEFAULT_SEPARATOR: &str = "__";
/// Between a prefix and a resource URI.
pub const URI_SEPARATOR: &str = "+";

/// What a visible name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The upstream's configured name (`input.request.server`).
    pub upstream: String,
    /// The tool or prompt name, or resource URI, as the upstream knows it.
    pub name: String,
}

/// Which namespace a name is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Tool,
    Prompt,
    /// A resource URI or URI template.
    Resource,
}

impl NameKind {
    fn noun(self) -> &'static str {
        match self {
            NameKind::Tool => "tool",
            NameKind::Prompt => "prompt",
            NameKind::Resource => "resource",
        }
    }
}

/// A list result whose entries carry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list`: `tools[].name`.
    Tools,
    /// `prompts/list`: `prompts[].name`.
    Prompts,
    /// `resources/list`: `resources[].uri`.
    Resources,
    /// `resources/templates/list`: `resourceTemplates[].uriTemplate`.
    ResourceTemplates,
}

impl ListKind {
    /// The method that uses one entry of this list: what a filtered list asks the
    /// policy about each entry.
    pub fn item_method(self) -> &'static str {
        match self {
            ListKind::Tools => crate::jsonrpc::methods::TOOLS_CALL,
            ListKind::Prompts => crate::jsonrpc::methods::PROMPTS_GET,
            ListKind::Resources | ListKind::ResourceTemplates => {
                crate::jsonrpc::methods::RESOURCES_READ
            }
        }
    }

    /// The result member holding the entries, the entry member holding the name, and
    /// the namespace.
    pub fn members(self) -> (&'static str, &'static str, NameKind) {
        match self {
            ListKind::Tools => ("tools", "name", NameKind::Tool),
            ListKind::Prompts => ("prompts", "name", NameKind::Prompt),
            ListKind::Resources => ("resources", "uri", NameKind::Resource),
            ListKind::ResourceTemplates => ("resourceTemplates", "uriTemplate", NameKind::Resource),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NamingError {
    #[error("no upstream is configured")]
    NoUpstreams,
    #[error("upstream name must not be empty")]
    EmptyUpstreamName,
    #[error("upstream {0:?} is configured twice")]
    DuplicateUpstream(String),
    #[error("upstream {0:?} needs a prefix: prefixing can be off only with a single upstream")]
    MissingPrefix(String),
    #[error(
        "upstream {upstream:?}: prefix {prefix:?} must start with a letter and contain only letters, digits, '-' and '.'"
    )]
    InvalidPrefix { upstream: String, prefix: String },
    #[error(
        "name separator {0:?} must be non-empty and use only letters, digits, '_', '-' and '.'"
    )]
    InvalidSeparator(String),
    #[error(
        "prefixes of upstreams {first:?} and {second:?} are ambiguous: a name starting with {shorter:?} could belong to either"
    )]
    AmbiguousPrefixes {
        first: String,
        second: String,
        shorter: String,
    },
    #[error("unknown upstream {0:?}")]
    UnknownUpstream(String),
    #[error("Unknown {}: {name}", kind.noun())]
    NoUpstreamFor { kind: NameKind, name: String },
    #[error("list result has no {0:?} array")]
    MissingList(&'static str),
    #[error("list entry {index} has no string {member:?}")]
    MalformedEntry { index: usize, member: &'static str },
}

impl NamingError {
    /// A client naming something no upstream serves gets `-32602`, like any unknown
    /// tool; the other errors are configuration or upstream faults.
    pub fn code(&self) -> i64 {
        match self {
            NamingError::NoUpstreamFor { .. } => INVALID_PARAMS,
            _ => crate::jsonrpc::INTERNAL_ERROR,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Upstream {
    name: String,
    prefix: Option<String>,
}

/// The naming of every configured upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    separator: String,
    upstreams: Vec<Upstream>,
}

fn valid_prefix(p: &str) -> bool {
    let mut bytes = p.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn valid_separator(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Naming {
    /// `upstreams`: (name, prefix) in configuration order; `None` turns prefixing off.
    pub fn new<I>(separator: &str, upstreams: I) -> Result<Naming, NamingError>
    where
        I: IntoIterator<Item = (String, Option<String>)>,
    {
        if !valid_separator(separator) {
            return Err(NamingError::InvalidSeparator(separator.to_string()));
        }
        let upstreams: Vec<Upstream> = upstreams
            .into_iter()
            .map(|(name, prefix)| Upstream { name, prefix })
            .collect();
        if upstreams.is_empty() {
            return Err(NamingError::NoUpstreams);
        }
        for (i, u) in upstreams.iter().enumerate() {
            if u.name.is_empty() {
                return Err(NamingError::EmptyUpstreamName);
            }
            if upstreams.iter().take(i).any(|o| o.name == u.name) {
                return Err(NamingError::DuplicateUpstream(u.name.clone()));
            }
            match &u.prefix {
                None if upstreams.len() > 1 => {
                    return Err(NamingError::MissingPrefix(u.name.clone()));
                }
                None => {}
                Some(p) if !valid_prefix(p) => {
                    return Err(NamingError::InvalidPrefix {
                        upstream: u.name.clone(),
                        prefix: p.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        for (i, a) in upstreams.iter().enumerate() {
            for b in upstreams.iter().skip(i + 1) {
                let (Some(pa), Some(pb)) = (&a.prefix, &b.prefix) else {
                    continue;
                };
                for sep in [separator, URI_SEPARATOR] {
                    let (fa, fb) = (format!("{pa}{sep}"), format!("{pb}{sep}"));
                    if fa.starts_with(&fb) || fb.starts_with(&fa) {
                        return Err(NamingError::AmbiguousPrefixes {
                            first: a.name.clone(),
                            second: b.name.clone(),
                            shorter: if fa.len() <= fb.len() { fa } else { fb },
                        });
                    }
                }
            }
        }
        Ok(Naming {
            separator: separator.to_string(),
            upstreams,
        })
    }

    /// One upstream, names passed through unchanged.
    pub fn single(upstream: impl Into<String>) -> Result<Naming, NamingError> {
        Naming::new(DEFAULT_SEPARATOR, [(upstream.into(), None)])
    }

    pub fn separator(&self) -> &str {
        &self.separator
    }

    /// Upstream names in configuration order.
    pub fn upstreams(&self) -> impl Iterator<Item = &str> {
        self.upstreams.iter().map(|u| u.name.as_str())
    }

    fn joint(&self, kind: NameKind) -> &str {
        match kind {
            NameKind::Resource => URI_SEPARATOR,
            NameKind::Tool | NameKind::Prompt => &self.separator,
        }
    }

    /// The name a client sees for `upstream`'s `name`.
    pub fn expose(
        &self,
        upstream: &str,
        kind: NameKind,
        name: &str,
    ) -> Result<String, NamingError> {
        let u = self
            .upstreams
            .iter()
            .find(|u| u.name == upstream)
            .ok_or_else(|| NamingError::UnknownUpstream(upstream.to_string()))?;
        Ok(match &u.prefix {
            None => name.to_string(),
            Some(p) => format!("{p}{}{name}", self.joint(kind)),
        })
    }

    /// The upstream and original name behind a client-visible name.
    pub fn resolve(&self, kind: NameKind, visible: &str) -> Result<Route, NamingError> {
        let unknown = || NamingError::NoUpstreamFor {
            kind,
            name: visible.to_string(),
        };
        for u in &self.upstreams {
            match &u.prefix {
                None => {
                    return Ok(Route {
                        upstream: u.name.clone(),
                        name: visible.to_string(),
                    });
                }
                Some(p) => {
                    if let Some(name) = visible
                        .strip_prefix(p.as_str())
                        .and_then(|rest| rest.strip_prefix(self.joint(kind)))
                    {
                        if name.is_empty() {
                            return Err(unknown());
                        }
                        return Ok(Route {
                            upstream: u.name.clone(),
                            name: name.to_string(),
                        });
                    }
                }
            }
        }
        Err(unknown())
    }

    /// [`Naming::resolve`] for what a request names.
    pub fn resolve_target(&self, target: Target<'_>) -> Result<Route, NamingError> {
        match target {
            Target::Tool(n) => self.resolve(NameKind::Tool, n),
            Target::Prompt(n) => self.resolve(NameKind::Prompt, n),
            Target::Resource(u) => self.resolve(NameKind::Resource, u),
        }
    }

    /// Rewrites the names in one upstream's list entries to the visible names.
    pub fn expose_entries(
        &self,
        upstream: &str,
        list: ListKind,
        entries: &mut [Value],
    ) -> Result<(), NamingError> {
        let (_, member, kind) = list.members();
        for (index, entry) in entries.iter_mut().enumerate() {
            let malformed = NamingError::MalformedEntry { index, member };
            let obj: &mut Map<String, Value> = entry.as_object_mut().ok_or(malformed.clone())?;
            let name = obj.get(member).and_then(Value::as_str).ok_or(malformed)?;
            let visible = self.expose(upstream, kind, name)?;
            obj.insert(member.to_string(), Value::String(visible));
        }
        Ok(())
    }

    /// One upstream's list result with its entries renamed; every other member of the
    /// result (`nextCursor`, `ttlMs`, `_meta` …) keeps its exact text.
    pub fn expose_list_result(
        &self,
        upstream: &str,
        list: ListKind,
        result: &RawObject,
    ) -> Result<RawObject, NamingError> {
        let (array, _, _) = list.members();
        let mut entries = result
            .get(array)
            .and_then(Value::as_array)
            .cloned()
            .ok_or(NamingError::MissingList(array))?;
        self.expose_entries(upstream, list, &mut entries)?;
        Ok(result.with_member(array, &Value::Array(entries)))
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;
    use serde_json::json;

    fn naming(pairs: &[(&str, &str)]) -> Result<Naming, NamingError> {
        Naming::new(
            DEFAULT_SEPARATOR,
            pairs
                .iter()
                .map(|(n, p)| (n.to_string(), Some(p.to_string()))),
        )
    }

    fn route(upstream: &str, name: &str) -> Route {
        Route {
            upstream: upstream.into(),
            name: name.into(),
        }
    }

    #[test]
    fn prefixed_names_map_back_exactly() {
        let n = naming(&[("db", "db"), ("files", "fs")]).unwrap();
        assert_eq!(
            n.expose("db", NameKind::Tool, "read_database").unwrap(),
            "db__read_database"
        );
        assert_eq!(
            n.resolve(NameKind::Tool, "db__read_database").unwrap(),
            route("db", "read_database")
        );
        assert_eq!(
            n.resolve(NameKind::Prompt, "fs__review").unwrap(),
            route("files", "review")
        );
        // The separator may occur in the original name.
        assert_eq!(
            n.resolve(NameKind::Tool, "db__a__b").unwrap(),
            route("db", "a__b")
        );
        for name in ["x", "with space", "Ünïcödé", "__lead", "trail__", ""] {
            let visible = n.expose("files", NameKind::Tool, name).unwrap();
            if name.is_empty() {
                assert!(n.resolve(NameKind::Tool, &visible).is_err());
            } else {
                assert_eq!(
                    n.resolve(NameKind::Tool, &visible).unwrap(),
                    route("files", name)
                );
            }
        }
    }

    #[test]
    fn no_folding_trimming_or_normalisation() {
        let n = naming(&[("db", "db"), ("files", "fs")]).unwrap();
        for visible in [
            "DB__read",
            "Db__read",
            " db__read",
            "db__ read",
            "db_read",
            "db-_read",
            "db\u{200b}__read",
            "ｄｂ__read",
            "db__",
            "unknown__read",
            "read",
        ] {
            let r = n.resolve(NameKind::Tool, visible);
            match r {
                Ok(Route { upstream, name }) => {
                    // Only an exact prefix is accepted, and the rest is kept as is.
                    assert_eq!(upstream, "db", "{visible:?}");
                    assert_eq!(format!("db__{name}"), visible);
                }
                Err(e) => {
                    assert!(
                        matches!(e, NamingError::NoUpstreamFor { .. }),
                        "{visible:?}: {e}"
                    );
                    assert_eq!(e.code(), INVALID_PARAMS);
                }
            }
        }
        assert_eq!(
            n.resolve(NameKind::Tool, "db__ read").unwrap().name,
            " read"
        );
        // Composed vs decomposed é are different names.
        let composed = n.expose("db", NameKind::Tool, "caf\u{e9}").unwrap();
        assert_eq!(
            n.resolve(NameKind::Tool, &composed).unwrap().name,
            "caf\u{e9}"
        );
        assert_ne!(
            n.resolve(NameKind::Tool, "db__cafe\u{301}").unwrap().name,
            "caf\u{e9}"
        );
        assert_eq!(
            n.resolve(NameKind::Tool, "nope").unwrap_err().to_string(),
            "Unknown tool: nope"
        );
    }

    #[test]
    fn ambiguous_prefixes_are_refused() {
        assert_eq!(
            naming(&[("a", "db"), ("b", "db")]),
            Err(NamingError::AmbiguousPrefixes {
                first: "a".into(),
                second: "b".into(),
                shorter: "db__".into()
            })
        );
        // One prefix plus the separator starts the other: "db.x.read" could be tool
        // "x.read" of `a` or tool "read" of `b`.
        for (sep, short, long) in [(".", "db", "db.x"), ("-", "x", "x-y")] {
            let n = Naming::new(
                sep,
                [
                    ("a".to_string(), Some(short.to_string())),
                    ("b".to_string(), Some(long.to_string())),
                ],
            );
            assert_eq!(
                n,
                Err(NamingError::AmbiguousPrefixes {
                    first: "a".into(),
                    second: "b".into(),
                    shorter: format!("{short}{sep}")
                }),
                "{sep:?}"
            );
        }
        // With the default separator a prefix cannot contain '_', so "__" never
        // occurs inside one.
        assert!(matches!(
            naming(&[("a", "db"), ("b", "db__x")]),
            Err(NamingError::InvalidPrefix { .. })
        ));
        // A prefix that is a string prefix of another is fine when the separator tells
        // them apart.
        let n = naming(&[("a", "db"), ("b", "db2"), ("c", "d")]).unwrap();
        assert_eq!(n.resolve(NameKind::Tool, "db__t").unwrap(), route("a", "t"));
        assert_eq!(
            n.resolve(NameKind::Tool, "db2__t").unwrap(),
            route("b", "t")
        );
        assert_eq!(n.resolve(NameKind::Tool, "d__t").unwrap(), route("c", "t"));
        assert_eq!(
            n.resolve(NameKind::Resource, "db2+file:///x").unwrap(),
            route("b", "file:///x")
        );
        assert!(n.resolve(NameKind::Tool, "db2t").is_err());
    }

    #[test]
    fn configuration_rules() {
        assert_eq!(Naming::new("__", Vec::new()), Err(NamingError::NoUpstreams));
        assert_eq!(
            Naming::new("__", [("a".into(), None), ("b".into(), Some("b".into()))]),
            Err(NamingError::MissingPrefix("a".into()))
        );
        assert_eq!(
            naming(&[("a", "x"), ("a", "y")]),
            Err(NamingError::DuplicateUpstream("a".into()))
        );
        for bad in ["", "1db", "d b", "d_b", "d+b", "d/b", "dé"] {
            assert!(
                matches!(
                    naming(&[("a", bad)]),
                    Err(NamingError::InvalidPrefix { .. })
                ),
                "{bad:?}"
            );
        }
        for bad in ["", " ", "/", "+"] {
            assert_eq!(
                Naming::new(bad, [("a".into(), Some("a".into()))]),
                Err(NamingError::InvalidSeparator(bad.into()))
            );
        }
        let n = Naming::new(".", [("a".into(), Some("a".into()))]).unwrap();
        assert_eq!(n.expose("a", NameKind::Tool, "t").unwrap(), "a.t");
        assert_eq!(
            n.expose("zz", NameKind::Tool, "t"),
            Err(NamingError::UnknownUpstream("zz".into()))
        );
    }

    #[test]
    fn single_upstream_without_prefix_passes_names_through() {
        let n = Naming::single("only").unwrap();
        for name in ["read_file", "db__x", "", "file:///etc/hosts"] {
            assert_eq!(n.expose("only", NameKind::Tool, name).unwrap(), name);
            assert_eq!(
                n.resolve(NameKind::Resource, name).unwrap(),
                route("only", name)
            );
        }
        assert_eq!(n.upstreams().collect::<Vec<_>>(), vec!["only"]);
    }

    #[test]
    fn resource_uris_keep_a_valid_scheme() {
        let n = naming(&[("db", "db"), ("files", "fs")]).unwrap();
        let v = n
            .expose("files", NameKind::Resource, "file:///srv/a.txt")
            .unwrap();
        assert_eq!(v, "fs+file:///srv/a.txt");
        assert_eq!(
            n.resolve(NameKind::Resource, &v).unwrap(),
            route("files", "file:///srv/a.txt")
        );
        // A tool-style name is not a resource name and vice versa.
        assert!(
            n.resolve(NameKind::Resource, "fs__file:///srv/a.txt")
                .is_err()
        );
        assert!(n.resolve(NameKind::Tool, "fs+x").is_err());
        assert_eq!(
            n.resolve_target(Target::Resource("db+test://template/1/data"))
                .unwrap(),
            route("db", "test://template/1/data")
        );
        assert_eq!(
            n.resolve_target(Target::Prompt("db__p")).unwrap(),
            route("db", "p")
        );
    }

    #[test]
    fn list_entries_are_rewritten() {
        let n = naming(&[("db", "db"), ("files", "fs")]).unwrap();
        let result = RawObject::parse(
            r#"{"tools":[{"name":"read_database","inputSchema":{"type":"object"}},{"name":"run_query"}],"nextCursor":"c1","ttlMs":0}"#,
            64,
        )
        .unwrap();
        let out = n
            .expose_list_result("db", ListKind::Tools, &result)
            .unwrap();
        assert_eq!(
            out.get("tools").unwrap(),
            &json!([{"name":"db__read_database","inputSchema":{"type":"object"}},{"name":"db__run_query"}])
        );
        assert_eq!(out.raw_member("nextCursor"), Some(r#""c1""#));
        assert!(out.raw().ends_with(r#","nextCursor":"c1","ttlMs":0}"#));
        let templates = RawObject::parse(
            r#"{"resourceTemplates":[{"uriTemplate":"file:///{path}","name":"f"}]}"#,
            64,
        )
        .unwrap();
        let out = n
            .expose_list_result("files", ListKind::ResourceTemplates, &templates)
            .unwrap();
        assert_eq!(
            out.get("resourceTemplates").unwrap()[0]["uriTemplate"],
            json!("fs+file:///{path}")
        );
        assert_eq!(out.get("resourceTemplates").unwrap()[0]["name"], json!("f"));
        let bad =
            RawObject::parse(r#"{"prompts":[{"name":"a"},{"title":"no name"}]}"#, 64).unwrap();
        assert_eq!(
            n.expose_list_result("db", ListKind::Prompts, &bad),
            Err(NamingError::MalformedEntry {
                index: 1,
                member: "name"
            })
        );
        assert_eq!(
            n.expose_list_result("db", ListKind::Resources, &bad),
            Err(NamingError::MissingList("resources"))
        );
    }
}
