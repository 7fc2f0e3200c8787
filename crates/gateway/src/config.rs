//! `gateway.yaml`: the gateway's configuration, parsed and checked before anything
//! starts. Keys lockstep does not know are named in [`GatewayConfig::unknown_keys`]
//! (as the agent names OPA keys it ignores); [`GatewayConfig::deny_unknown_keys`] turns
//! them into an error for deployments that want typos to stop the start.
//! `examples/gateway.yaml` shows every key.
//!
//! ```yaml
//! listen: 127.0.0.1:8383
//! upstreams:
//!   - name: db                      # input.request.server
//!     url: http://127.0.0.1:9001/mcp    # Streamable HTTP ...
//!     prefix: db                    # tools as db__<name>; default: the name (none with one upstream)
//!     timeouts: {connect: 5s, request: 60s}
//!     token_audience: https://db.internal/mcp   # send it an ephemeral token for this aud
//!   - name: files
//!     command: /usr/local/bin/files-mcp # ... or stdio
//!     args: [--root, /srv]
//!     env: {LOG_LEVEL: info}
//! naming: {separator: "__"}
//! layers:                           # in order; the first that does not allow denies
//!   - path: mcp/tool_access
//!   - path: mcp/command_scope
//!     deny_as_tool_error: true
//!   - path: mcp/resource_access
//! identity:
//!   api_keys_file: /etc/lockstep/api-keys.yaml
//!   oauth:                          # OAuth 2.1 resource server (JWT access tokens)
//!     issuer: https://auth.example.com
//!     jwks_uri: https://auth.example.com/jwks
//!     resource: https://mcp.example.com/mcp   # this gateway's canonical URI = the tokens' aud
//!     algorithms: [ES256, RS256]    # asymmetric only
//!     leeway: 30s
//!     jwks_min_refresh: 10s         # least time between two fetches of the keys
//!     scopes_supported: [mcp:tools]
//!     introspection: {endpoint: https://auth.example.com/token/introspection, client_id: lockstep-gateway, client_secret_file: /run/secrets/gw}
//!   claims_mapping: {id: sub, role: role, scope: scope}
//! upstream_tokens:                  # ephemeral scoped tokens (ES256 JWTs) to upstreams
//!   issuer: https://gateway.example.com   # their iss
//!   keys_dir: /etc/lockstep/upstream-keys # *.pem (P-256); kid = file name; all published
//!   lifetime: 60s
//!   activation_delay: 30s           # a new key signs only after being published this long
//! session: {key_file: /etc/lockstep/session.key, previous_key_files: [], ttl: 24h}
//! limits: {max_body_bytes: 4MiB, max_depth: 64, list_deadline: 5s, max_streams: 1024}
//! audit: {output: /var/log/lockstep/audit.jsonl, rotate_bytes: 100MiB}
//! allowed_origins: [https://app.example.com]
//! policy: {}                        # OPA-style bundle settings (services, bundles, keys ...)
//! ```
//!
//! No secret is written in this file: keys live in the files it names.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use thiserror::Error;

use crate::jsonrpc::{DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DEPTH, MAX_DEPTH_LIMIT, ParseLimits};
use crate::naming::{DEFAULT_SEPARATOR, ListKind, Naming, NamingError};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8383";
/// The guide's three layers, in its order.
pub const DEFAULT_LAYERS: [&str; 3] = [
    "mcp/tool_access",
    "mcp/command_scope",
    "mcp/resource_access",
];
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_LIST_DEADLINE: Duration = Duration::from_secs(5);
/// Client GET streams open at once, by default.
pub const DEFAULT_MAX_STREAMS: usize = 1024;
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_ROTATE_BYTES: u64 = 100 * 1024 * 1024;

/// The whole configuration, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// `host:port` to listen on.
    pub listen: String,
    pub upstreams: Vec<UpstreamConfig>,
    /// Between an upstream's prefix and a tool or prompt name.
    pub name_separator: String,
    pub layers: Vec<LayerConfig>,
    pub identity: IdentityConfig,
    pub upstream_tokens: Option<UpstreamTokensConfig>,
    pub session: SessionConfig,
    pub limits: LimitsConfig,
    pub audit: AuditConfig,
    /// Exact `Origin` values allowed; a request with any other `Origin` is refused (403).
    pub allowed_origins: Vec<String>,
    /// The OPA-style policy distribution settings (`services`, `bundles`, `keys`,
    /// `status`, …), kept as they were written: lockstep-sync's configuration parser
    /// (moving there from the agent) will own their meaning, so the gateway and the agent
    /// read them the same way.
    pub policy: Option<serde_json::Value>,
    /// Dotted paths of keys this version does not know (e.g. `upstreams[0].urll`).
    pub unknown_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    pub transport: Transport,
    /// `None`: names pass through unchanged (only with a single upstream).
    pub prefix: Option<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Send this upstream an ephemeral token with this `aud` on every request
    /// (needs `upstream_tokens`).
    pub token_audience: Option<String>,
}

/// `upstream_tokens`: how the gateway signs the ephemeral tokens it gives upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTokensConfig {
    pub issuer: String,
    pub keys_dir: PathBuf,
    pub lifetime: Duration,
    pub activation_delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Streamable HTTP at this URL.
    Http { url: String },
    /// A child process speaking newline-delimited JSON-RPC on stdin/stdout.
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerConfig {
    /// Package path, slash-separated: `mcp/tool_access` is `data.mcp.tool_access`.
    pub path: String,
    /// Answer a `tools/call` this layer denies with an `isError` tool result instead of
    /// a JSON-RPC error.
    pub deny_as_tool_error: bool,
    /// The methods this layer decides (`*` for every method). Default `tools/call`: the
    /// guide's layers read `input.request.tool` and its arguments.
    pub methods: Vec<String>,
    /// Whether lists show only the entries this layer allows the caller. It filters
    /// the lists whose entries' own method it decides (`tools/list` for a
    /// `tools/call` layer, `prompts/list` for `prompts/get`, `resources/list` and
    /// `resources/templates/list` for `resources/read`); each entry is decided without
    /// arguments, with `request.method` the list's method.
    pub filter_lists: bool,
}

/// Methods a layer decides when its configuration names none.
pub fn default_layer_methods() -> Vec<String> {
    vec!["tools/call".to_string()]
}

impl LayerConfig {
    /// Whether this layer decides requests of `method`.
    pub fn applies_to(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == "*" || m == method)
    }

    /// The rule `name` of this layer's package, e.g. `data.mcp.tool_access.allow`.
    pub fn rule(&self, name: &str) -> String {
        format!("data.{}.{name}", self.path.replace('/', "."))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityConfig {
    pub api_keys_file: Option<PathBuf>,
    pub claims_mapping: ClaimsMapping,
    /// The identity of a request that carries no credential at all, for a gateway on a
    /// loopback address only (a local test harness such as the MCP conformance suite,
    /// which cannot send headers). Off by default: without it such a request gets 401.
    /// A request with a wrong credential gets 401 either way.
    pub anonymous: Option<AnonymousIdentity>,
    /// Bearer JWTs from an OAuth 2.1 authorization server, beside the API keys.
    pub oauth: Option<OAuthConfig>,
    /// Scopes a caller must hold, by method (`*`: every method), checked before any
    /// policy: a caller without them gets 403 with an `insufficient_scope` challenge,
    /// since a token with more scopes would pass. Empty by default.
    pub required_scopes: BTreeMap<String, Vec<String>>,
}

impl IdentityConfig {
    /// The scopes `method` needs (its own and `*`'s) that `held` lacks, in order.
    pub fn missing_scopes(&self, method: &str, held: &[String]) -> Vec<String> {
        let mut missing: Vec<String> = Vec::new();
        for (m, scopes) in &self.required_scopes {
            if m == "*" || m == method {
                for s in scopes {
                    if !held.contains(s) && !missing.contains(s) {
                        missing.push(s.clone());
                    }
                }
            }
        }
        missing
    }
}

/// `identity.oauth`: the gateway as an OAuth 2.1 resource server (MCP authorization).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    pub issuer: String,
    pub jwks_uri: String,
    /// The gateway's canonical resource URI: the audience every token must carry, and
    /// `resource` in its protected-resource metadata.
    pub resource: String,
    /// `alg` names (`ES256`, `RS256`, …); asymmetric only.
    pub algorithms: Vec<String>,
    pub leeway: Duration,
    /// Least time between two fetches of the issuer's keys (a token with an unknown
    /// `kid` makes the gateway fetch them again, at most this often).
    pub jwks_min_refresh: Duration,
    /// In the metadata; default: the issuer.
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
    /// Opaque tokens asked about at the server's introspection endpoint (RFC 7662).
    pub introspection: Option<IntrospectionEndpoint>,
}

/// `identity.oauth.introspection`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionEndpoint {
    pub endpoint: String,
    pub client_id: String,
    /// The gateway's client secret at the server, read at start (never inline).
    pub client_secret_file: PathBuf,
}

/// `identity.anonymous`: who a request without a credential is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnonymousIdentity {
    pub id: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Which token claims become `input.agent.id`, `.role` and `.scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsMapping {
    pub id: String,
    pub role: String,
    pub scope: String,
}

impl Default for ClaimsMapping {
    fn default() -> Self {
        ClaimsMapping {
            id: "sub".into(),
            role: "role".into(),
            scope: "scope".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// 32 bytes, hex or Base64 ([`crate::session::SessionKey::parse`]).
    pub key_file: Option<PathBuf>,
    /// Keys of earlier rotations: ids they sealed still open.
    pub previous_key_files: Vec<PathBuf>,
    pub ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_depth: usize,
    /// How long a list fan-out waits for each upstream.
    pub list_deadline: Duration,
    /// Client GET streams open at once (each holds a connection to every upstream of
    /// its session); more are answered 503.
    pub max_streams: usize,
}

impl LimitsConfig {
    pub fn parse_limits(&self) -> ParseLimits {
        ParseLimits {
            max_body_bytes: self.max_body_bytes,
            max_depth: self.max_depth,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditConfig {
    /// One JSON line per decision on standard output.
    Stdout,
    /// The same on standard error (what `--stdio` uses instead of stdout, which carries
    /// the MCP messages).
    Stderr,
    /// JSON lines appended to `path`, rotated when it reaches `rotate_bytes`.
    File { path: PathBuf, rotate_bytes: u64 },
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("gateway config: identity.oauth: {0}")]
    OAuth(String),
    #[error("gateway config: {0}")]
    UpstreamTokens(String),
    #[error("layers: layer {0:?} has an empty methods list or an empty method name")]
    LayerMethods(String),
    #[error(
        "layers: layer {0:?} has filter_lists but decides none of tools/call, prompts/get, resources/read, so it would filter no list"
    )]
    FilterNothing(String),
    #[error(
        "identity.required_scopes: {0:?} needs a non-empty list of scopes without spaces or quotes"
    )]
    RequiredScopes(String),
    #[error("gateway config: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("gateway config: listen: expected host:port, got {0:?}")]
    Listen(String),
    #[error("gateway config: upstreams: at least one upstream is needed")]
    NoUpstreams,
    #[error("gateway config: upstreams[{0}]: missing name")]
    UpstreamName(usize),
    #[error("gateway config: upstream {0:?} is configured twice")]
    DuplicateUpstream(String),
    #[error(
        "gateway config: upstream {0:?}: give exactly one of url (Streamable HTTP) and command (stdio)"
    )]
    Transport(String),
    #[error(
        "gateway config: upstream {name:?}: url must be an http:// or https:// URL, got {url:?}"
    )]
    Url { name: String, url: String },
    #[error("gateway config: upstream {0:?}: args and env need a command")]
    ArgsWithoutCommand(String),
    #[error("gateway config: {0}")]
    Naming(#[from] NamingError),
    #[error("gateway config: layers: at least one layer is needed")]
    NoLayers,
    #[error("gateway config: layers: {0:?} is not a package path such as mcp/tool_access")]
    LayerPath(String),
    #[error("gateway config: layers: {0:?} is listed twice")]
    DuplicateLayer(String),
    #[error("gateway config: identity.claims_mapping.{0} must not be empty")]
    EmptyClaim(&'static str),
    #[error("gateway config: identity.anonymous.id must not be empty")]
    EmptyAnonymous,
    #[error(
        "gateway config: identity.anonymous needs a loopback listen address (127.0.0.1, [::1] or localhost), not {0:?}: it serves requests that carry no credential"
    )]
    AnonymousNotLoopback(String),
    #[error("gateway config: {0} must be greater than zero")]
    Zero(&'static str),
    #[error("gateway config: limits.max_depth must be between 1 and {MAX_DEPTH_LIMIT}, got {0}")]
    Depth(usize),
    #[error("gateway config: audit.rotate_bytes needs audit.output to be a file")]
    RotateWithoutFile,
    #[error(
        "gateway config: allowed_origins: {0:?} is not an origin such as https://app.example.com"
    )]
    Origin(String),
    #[error("gateway config: unknown keys: {}", .0.join(", "))]
    UnknownKeys(Vec<String>),
}

impl GatewayConfig {
    /// Parses and checks `gateway.yaml`'s text.
    pub fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
        let mut unknown = Vec::new();
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_ignored::deserialize(de, |path| unknown.push(dotted(&path)))?
        };
        let mut config = raw.resolve()?;
        config.unknown_keys = unknown;
        Ok(config)
    }

    /// An error naming every unknown key, if there is one.
    pub fn deny_unknown_keys(&self) -> Result<(), ConfigError> {
        if self.unknown_keys.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::UnknownKeys(self.unknown_keys.clone()))
        }
    }

    /// The upstream naming this configuration describes (checked by [`Self::parse`]).
    pub fn naming(&self) -> Result<Naming, NamingError> {
        Naming::new(
            &self.name_separator,
            self.upstreams
                .iter()
                .map(|u| (u.name.clone(), u.prefix.clone())),
        )
    }

    /// Whether an `Origin` header value is allowed (exact comparison).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == origin)
    }
}

/// `upstreams[0].timeouts.conect`, in the style the agent uses for OPA keys.
fn dotted(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", dotted(parent)),
        Path::Map { parent, key } => {
            let p = dotted(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawConfig {
    listen: Option<String>,
    upstreams: Vec<RawUpstream>,
    naming: RawNaming,
    layers: Option<Vec<RawLayer>>,
    identity: RawIdentity,
    upstream_tokens: Option<RawUpstreamTokens>,
    session: RawSession,
    limits: RawLimits,
    audit: RawAudit,
    allowed_origins: Vec<String>,
    policy: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawUpstream {
    name: Option<String>,
    url: Option<String>,
    command: Option<String>,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    prefix: Option<String>,
    timeouts: RawTimeouts,
    token_audience: Option<String>,
}

#[derive(Deserialize)]
struct RawUpstreamTokens {
    issuer: String,
    keys_dir: PathBuf,
    #[serde(default)]
    lifetime: Option<Seconds>,
    #[serde(default)]
    activation_delay: Option<Seconds>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTimeouts {
    connect: Option<Seconds>,
    request: Option<Seconds>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawNaming {
    separator: Option<String>,
}

#[derive(Deserialize)]
struct RawLayer {
    path: String,
    #[serde(default)]
    deny_as_tool_error: bool,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    filter_lists: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawIdentity {
    api_keys_file: Option<PathBuf>,
    claims_mapping: RawClaims,
    anonymous: Option<AnonymousIdentity>,
    oauth: Option<RawOAuth>,
    required_scopes: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct RawOAuth {
    issuer: String,
    jwks_uri: String,
    resource: String,
    #[serde(default)]
    algorithms: Option<Vec<String>>,
    #[serde(default)]
    leeway: Option<Seconds>,
    #[serde(default)]
    jwks_min_refresh: Option<Seconds>,
    #[serde(default)]
    authorization_servers: Vec<String>,
    #[serde(default)]
    scopes_supported: Vec<String>,
    #[serde(default)]
    introspection: Option<IntrospectionEndpoint>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawClaims {
    id: Option<String>,
    role: Option<String>,
    scope: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawSession {
    key_file: Option<PathBuf>,
    previous_key_files: Vec<PathBuf>,
    ttl: Option<Seconds>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawLimits {
    max_body_bytes: Option<Bytes>,
    max_depth: Option<usize>,
    list_deadline: Option<Seconds>,
    max_streams: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawAudit {
    output: Option<String>,
    rotate_bytes: Option<Bytes>,
}

impl RawConfig {
    fn resolve(self) -> Result<GatewayConfig, ConfigError> {
        let listen = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        if !valid_listen(&listen) {
            return Err(ConfigError::Listen(listen));
        }

        if self.upstreams.is_empty() {
            return Err(ConfigError::NoUpstreams);
        }
        let several = self.upstreams.len() > 1;
        let mut upstreams: Vec<UpstreamConfig> = Vec::with_capacity(self.upstreams.len());
        for (i, u) in self.upstreams.into_iter().enumerate() {
            let name = u
                .name
                .filter(|n| !n.is_empty())
                .ok_or(ConfigError::UpstreamName(i))?;
            if upstreams.iter().any(|o| o.name == name) {
                return Err(ConfigError::DuplicateUpstream(name));
            }
            let transport = match (u.url, u.command) {
                (Some(url), None) => {
                    if !u.args.is_empty() || !u.env.is_empty() {
                        return Err(ConfigError::ArgsWithoutCommand(name));
                    }
                    if !valid_url(&url) {
                        return Err(ConfigError::Url { name, url });
                    }
                    Transport::Http { url }
                }
                (None, Some(command)) if !command.is_empty() => Transport::Stdio {
                    command,
                    args: u.args,
                    env: u.env,
                },
                _ => return Err(ConfigError::Transport(name)),
            };
            // Omitted: the upstream's name when there are several, nothing when it is
            // alone. An empty prefix turns prefixing off (refused with several).
            let prefix = match u.prefix {
                None if several => Some(name.clone()),
                None => None,
                Some(p) if p.is_empty() => None,
                Some(p) => Some(p),
            };
            if u.token_audience.as_deref().is_some_and(str::is_empty) {
                return Err(ConfigError::UpstreamTokens(format!(
                    "upstreams[{name}].token_audience must not be empty"
                )));
            }
            upstreams.push(UpstreamConfig {
                token_audience: u.token_audience,
                name,
                transport,
                prefix,
                connect_timeout: positive(
                    u.timeouts.connect,
                    DEFAULT_CONNECT_TIMEOUT,
                    "upstreams[].timeouts.connect",
                )?,
                request_timeout: positive(
                    u.timeouts.request,
                    DEFAULT_REQUEST_TIMEOUT,
                    "upstreams[].timeouts.request",
                )?,
            });
        }
        let name_separator = self
            .naming
            .separator
            .unwrap_or_else(|| DEFAULT_SEPARATOR.to_string());

        let layers = match self.layers {
            None => DEFAULT_LAYERS
                .iter()
                .map(|p| LayerConfig {
                    path: (*p).to_string(),
                    deny_as_tool_error: false,
                    methods: default_layer_methods(),
                    // The guide's tool-access layer says which tools a role may call:
                    // exactly what a filtered tools/list shows.
                    filter_lists: *p == "mcp/tool_access",
                })
                .collect(),
            Some(list) => {
                if list.is_empty() {
                    return Err(ConfigError::NoLayers);
                }
                let mut out: Vec<LayerConfig> = Vec::with_capacity(list.len());
                for l in list {
                    let path = l.path.trim_matches('/').to_string();
                    if !valid_layer_path(&path) {
                        return Err(ConfigError::LayerPath(l.path));
                    }
                    if out.iter().any(|o| o.path == path) {
                        return Err(ConfigError::DuplicateLayer(path));
                    }
                    let methods = l.methods.unwrap_or_else(default_layer_methods);
                    if methods.is_empty() || methods.iter().any(|m| m.is_empty()) {
                        return Err(ConfigError::LayerMethods(path));
                    }
                    let layer = LayerConfig {
                        path,
                        deny_as_tool_error: l.deny_as_tool_error,
                        methods,
                        filter_lists: l.filter_lists,
                    };
                    let filters_a_list = [ListKind::Tools, ListKind::Prompts, ListKind::Resources]
                        .iter()
                        .any(|k| layer.applies_to(k.item_method()));
                    if layer.filter_lists && !filters_a_list {
                        return Err(ConfigError::FilterNothing(layer.path));
                    }
                    out.push(layer);
                }
                out
            }
        };

        let d = ClaimsMapping::default();
        let claim = |v: Option<String>, default: String, what| match v {
            Some(s) if s.is_empty() => Err(ConfigError::EmptyClaim(what)),
            Some(s) => Ok(s),
            None => Ok(default),
        };
        if let Some(a) = &self.identity.anonymous {
            if a.id.trim().is_empty() {
                return Err(ConfigError::EmptyAnonymous);
            }
            if !listen_is_loopback(&listen) {
                return Err(ConfigError::AnonymousNotLoopback(listen.clone()));
            }
        }
        let oauth = match self.identity.oauth {
            None => None,
            Some(o) => Some(oauth_config(o)?),
        };
        for (method, scopes) in &self.identity.required_scopes {
            // A scope is a space-free token (RFC 6749 §3.3); a space would split it in
            // the challenge.
            if method.is_empty()
                || scopes.is_empty()
                || scopes
                    .iter()
                    .any(|s| s.is_empty() || s.contains(char::is_whitespace) || s.contains('"'))
            {
                return Err(ConfigError::RequiredScopes(method.clone()));
            }
        }
        let identity = IdentityConfig {
            required_scopes: self.identity.required_scopes,
            oauth,
            anonymous: self.identity.anonymous,
            api_keys_file: self.identity.api_keys_file,
            claims_mapping: ClaimsMapping {
                id: claim(self.identity.claims_mapping.id, d.id, "id")?,
                role: claim(self.identity.claims_mapping.role, d.role, "role")?,
                scope: claim(self.identity.claims_mapping.scope, d.scope, "scope")?,
            },
        };

        let session = SessionConfig {
            key_file: self.session.key_file,
            previous_key_files: self.session.previous_key_files,
            ttl: positive(self.session.ttl, DEFAULT_SESSION_TTL, "session.ttl")?,
        };

        let max_depth = self.limits.max_depth.unwrap_or(DEFAULT_MAX_DEPTH);
        if max_depth == 0 || max_depth > MAX_DEPTH_LIMIT {
            return Err(ConfigError::Depth(max_depth));
        }
        let max_body_bytes = match self.limits.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(Bytes(0)) => return Err(ConfigError::Zero("limits.max_body_bytes")),
            Some(Bytes(n)) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let limits = LimitsConfig {
            max_body_bytes,
            max_depth,
            list_deadline: positive(
                self.limits.list_deadline,
                DEFAULT_LIST_DEADLINE,
                "limits.list_deadline",
            )?,
            max_streams: match self.limits.max_streams {
                None => DEFAULT_MAX_STREAMS,
                Some(0) => return Err(ConfigError::Zero("limits.max_streams")),
                Some(n) => n,
            },
        };

        let audit = match (self.audit.output.as_deref(), self.audit.rotate_bytes) {
            (None | Some("stdout"), None) => AuditConfig::Stdout,
            (Some("stderr"), None) => AuditConfig::Stderr,
            (None | Some("stdout" | "stderr"), Some(_)) => {
                return Err(ConfigError::RotateWithoutFile);
            }
            (Some(path), rotate) => AuditConfig::File {
                path: PathBuf::from(path),
                rotate_bytes: match rotate {
                    None => DEFAULT_ROTATE_BYTES,
                    Some(Bytes(0)) => return Err(ConfigError::Zero("audit.rotate_bytes")),
                    Some(Bytes(n)) => n,
                },
            },
        };

        for o in &self.allowed_origins {
            if !valid_origin(o) {
                return Err(ConfigError::Origin(o.clone()));
            }
        }

        let upstream_tokens = match self.upstream_tokens {
            None => {
                if let Some(u) = upstreams.iter().find(|u| u.token_audience.is_some()) {
                    return Err(ConfigError::UpstreamTokens(format!(
                        "upstreams[{}].token_audience needs the upstream_tokens section (issuer, keys_dir)",
                        u.name
                    )));
                }
                None
            }
            Some(t) => {
                if t.issuer.trim().is_empty() {
                    return Err(ConfigError::UpstreamTokens(
                        "upstream_tokens.issuer must not be empty".into(),
                    ));
                }
                Some(UpstreamTokensConfig {
                    issuer: t.issuer,
                    keys_dir: t.keys_dir,
                    lifetime: positive(
                        t.lifetime,
                        Duration::from_secs(60),
                        "upstream_tokens.lifetime",
                    )?,
                    activation_delay: t
                        .activation_delay
                        .map_or(Duration::from_secs(30), |Seconds(d)| d),
                })
            }
        };
        let config = GatewayConfig {
            listen,
            upstreams,
            name_separator,
            layers,
            identity,
            upstream_tokens,
            session,
            limits,
            audit,
            allowed_origins: self.allowed_origins,
            policy: self.policy,
            unknown_keys: Vec::new(),
        };
        config.naming()?;
        Ok(config)
    }
}

fn positive(
    v: Option<Seconds>,
    default: Duration,
    what: &'static str,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(Seconds(d)) if d.is_zero() => Err(ConfigError::Zero(what)),
        Some(Seconds(d)) => Ok(d),
    }
}

/// `identity.oauth`, checked: URLs that are absolute http(s), a canonical resource URI
/// (no fragment, no query), known asymmetric algorithms.
fn oauth_config(o: RawOAuth) -> Result<OAuthConfig, ConfigError> {
    let url = |v: &str, what: &'static str| -> Result<(), ConfigError> {
        let ok = (v.starts_with("https://") || v.starts_with("http://"))
            && !v.contains('#')
            && v.len() > "https://".len();
        if ok {
            Ok(())
        } else {
            Err(ConfigError::OAuth(format!(
                "{what} must be an absolute http(s) URL without a fragment, got {v:?}"
            )))
        }
    };
    url(&o.issuer, "issuer")?;
    url(&o.jwks_uri, "jwks_uri")?;
    url(&o.resource, "resource")?;
    if o.resource.contains('?') {
        return Err(ConfigError::OAuth(
            "resource must be the canonical URI of the MCP endpoint, without a query".into(),
        ));
    }
    let algorithms = o
        .algorithms
        .unwrap_or_else(|| vec!["ES256".into(), "RS256".into()]);
    const ASYMMETRIC: &[&str] = &[
        "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
    ];
    if algorithms.is_empty() {
        return Err(ConfigError::OAuth("algorithms must not be empty".into()));
    }
    if let Some(a) = algorithms
        .iter()
        .find(|a| !ASYMMETRIC.contains(&a.as_str()))
    {
        return Err(ConfigError::OAuth(format!(
            "algorithm {a:?} is not accepted (asymmetric only: {})",
            ASYMMETRIC.join(", ")
        )));
    }
    let authorization_servers = if o.authorization_servers.is_empty() {
        vec![o.issuer.clone()]
    } else {
        o.authorization_servers
    };
    Ok(OAuthConfig {
        issuer: o.issuer,
        jwks_uri: o.jwks_uri,
        resource: o.resource.trim_end_matches('/').to_string(),
        algorithms,
        leeway: o.leeway.map_or(Duration::from_secs(30), |Seconds(d)| d),
        jwks_min_refresh: positive(
            o.jwks_min_refresh,
            Duration::from_secs(10),
            "identity.oauth.jwks_min_refresh",
        )?,
        authorization_servers,
        scopes_supported: o.scopes_supported,
        introspection: o.introspection,
    })
}

fn listen_is_loopback(s: &str) -> bool {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return a.ip().is_loopback();
    }
    s.rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

fn valid_listen(s: &str) -> bool {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains([':', '/', ' ']) && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

fn valid_url(url: &str) -> bool {
    match url.parse::<http::Uri>() {
        Ok(u) => {
            matches!(u.scheme_str(), Some("http" | "https"))
                && u.authority().is_some_and(|a| !a.host().is_empty())
        }
        Err(_) => false,
    }
}

fn valid_layer_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|seg| {
            let mut b = seg.bytes();
            b.next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        })
}

/// `scheme://host[:port]`, as browsers send it: no path, no trailing slash.
fn valid_origin(o: &str) -> bool {
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@'])
        && rest.parse::<http::uri::Authority>().is_ok()
}

/// A duration: `30s`, `5m`, `1h`, `250ms`, or a number of seconds.
struct Seconds(Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 5m, 1h, 250ms or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(|s| Seconds(Duration::from_secs(s)))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Duration::try_from_secs_f64(v)
                    .map(Seconds)
                    .map_err(|_| E::invalid_value(de::Unexpected::Float(v), &self))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Seconds, E> {
                let t = s.trim();
                let split = t
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .unwrap_or(t.len());
                let (num, unit) = t.split_at(split);
                let n: f64 = num
                    .parse()
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(s), &self))?;
                let factor = match unit.trim() {
                    "" | "s" => 1.0,
                    "ms" => 0.001,
                    "m" => 60.0,
                    "h" => 3600.0,
                    _ => return Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                };
                Duration::try_from_secs_f64(n * factor)
                    .map(Seconds)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A size: a number of bytes, or `512KiB`, `4MiB`, `1GiB` (also `KB`/`MB`/`GB` = 1000ⁿ).
struct Bytes(u64);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 4194304, 512KiB, 4MiB or 1GiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Bytes, E> {
                u64::try_from(v)
                    .map(Bytes)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Bytes, E> {
                let t = s.trim();
                let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                let (num, unit) = t.split_at(split);
                let bad = || E::invalid_value(de::Unexpected::Str(s), &self);
                let n: u64 = num.parse().map_err(|_| bad())?;
                let factor: u64 = match unit.trim() {
                    "" | "B" => 1,
                    "KiB" => 1 << 10,
                    "MiB" => 1 << 20,
                    "GiB" => 1 << 30,
                    "KB" => 1_000,
                    "MB" => 1_000_000,
                    "GB" => 1_000_000_000,
                    _ => return Err(bad()),
                };
                n.checked_mul(factor).map(Bytes).ok_or_else(bad)
            }
        }
        d.deserialize_any(V)
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

    const EXAMPLE: &str = include_str!("../examples/gateway.yaml");

    fn one_upstream(extra: &str) -> String {
        format!("upstreams:\n  - name: db\n    url: http://127.0.0.1:9001/mcp\n{extra}")
    }

    fn err(text: &str) -> ConfigError {
        GatewayConfig::parse(text).unwrap_err()
    }

    #[test]
    fn oauth_and_upstream_tokens_are_checked() {
        let oauth = |extra: &str| {
            one_upstream(&format!(
                "identity:\n  oauth:\n    issuer: https://as.example\n    jwks_uri: https://as.example/jwks\n    resource: https://gw.example/mcp\n{extra}"
            ))
        };
        let c = GatewayConfig::parse(&oauth("")).unwrap();
        let o = c.identity.oauth.unwrap();
        assert_eq!(o.algorithms, vec!["ES256", "RS256"]);
        assert_eq!(o.authorization_servers, vec!["https://as.example"]);
        let e = err(&oauth("    algorithms: [HS256]\n")).to_string();
        assert!(e.contains("asymmetric only"), "{e}");
        let e = err(&one_upstream(
            "identity:\n  oauth:\n    issuer: as.example\n    jwks_uri: https://as.example/jwks\n    resource: https://gw.example/mcp\n",
        ))
        .to_string();
        assert!(e.contains("issuer must be an absolute"), "{e}");
        let e = err(&one_upstream("    token_audience: https://db.internal\n")).to_string();
        assert!(e.contains("needs the upstream_tokens section"), "{e}");
        let c = GatewayConfig::parse(&one_upstream(
            "    token_audience: https://db.internal\nupstream_tokens: {issuer: https://gw, keys_dir: /k}\n",
        ))
        .unwrap();
        let t = c.upstream_tokens.unwrap();
        assert_eq!(
            (t.lifetime, t.activation_delay),
            (Duration::from_secs(60), Duration::from_secs(30))
        );
        assert_eq!(
            c.upstreams[0].token_audience.as_deref(),
            Some("https://db.internal")
        );
    }

    #[test]
    fn an_anonymous_identity_is_only_for_loopback_listeners() {
        let anon = "identity: {anonymous: {id: conformance, role: tester}}\n";
        for listen in ["127.0.0.1:0", "[::1]:8383", "localhost:8383"] {
            let c = GatewayConfig::parse(&one_upstream(&format!("listen: \"{listen}\"\n{anon}")))
                .unwrap();
            assert_eq!(
                c.identity.anonymous,
                Some(AnonymousIdentity {
                    id: "conformance".into(),
                    role: Some("tester".into()),
                    scopes: vec![]
                })
            );
        }
        assert!(
            GatewayConfig::parse(&one_upstream(""))
                .unwrap()
                .identity
                .anonymous
                .is_none()
        );
        for listen in ["0.0.0.0:8383", "10.1.2.3:80", "gateway.example:8383"] {
            assert!(matches!(
                err(&one_upstream(&format!("listen: \"{listen}\"\n{anon}"))),
                ConfigError::AnonymousNotLoopback(_)
            ));
        }
        assert!(matches!(
            err(&one_upstream("identity: {anonymous: {id: \" \"}}\n")),
            ConfigError::EmptyAnonymous
        ));
    }

    #[test]
    fn the_example_file_parses_with_no_unknown_keys() {
        let c = GatewayConfig::parse(EXAMPLE).unwrap();
        assert_eq!(c.unknown_keys, Vec::<String>::new());
        c.deny_unknown_keys().unwrap();
        assert_eq!(c.listen, "127.0.0.1:8383");
        assert_eq!(c.upstreams.len(), 2);
        let db = &c.upstreams[0];
        assert_eq!(db.name, "db");
        assert_eq!(
            db.transport,
            Transport::Http {
                url: "http://127.0.0.1:9001/mcp".into()
            }
        );
        assert_eq!(db.prefix.as_deref(), Some("db"));
        assert_eq!(db.connect_timeout, Duration::from_secs(5));
        assert_eq!(db.request_timeout, Duration::from_secs(30));
        let files = &c.upstreams[1];
        assert!(
            matches!(&files.transport, Transport::Stdio { command, args, env }
            if command == "/usr/local/bin/files-mcp" && args == &["--root", "/srv"] && env.get("LOG_LEVEL").map(String::as_str) == Some("info"))
        );
        assert_eq!(files.prefix.as_deref(), Some("fs"));
        assert_eq!(
            c.layers,
            vec![
                LayerConfig {
                    path: "mcp/tool_access".into(),
                    deny_as_tool_error: false,
                    methods: default_layer_methods(),
                    filter_lists: true,
                },
                LayerConfig {
                    path: "mcp/command_scope".into(),
                    deny_as_tool_error: true,
                    methods: default_layer_methods(),
                    filter_lists: false,
                },
                LayerConfig {
                    path: "mcp/resource_access".into(),
                    deny_as_tool_error: false,
                    methods: vec!["tools/call".into(), "resources/read".into()],
                    filter_lists: false,
                },
            ]
        );
        assert_eq!(c.layers[0].rule("allow"), "data.mcp.tool_access.allow");
        assert_eq!(
            c.identity.api_keys_file,
            Some(PathBuf::from("/etc/lockstep/api-keys.yaml"))
        );
        assert_eq!(c.identity.claims_mapping.role, "lockstep_role");
        assert_eq!(c.session.ttl, Duration::from_secs(8 * 3600));
        assert_eq!(
            c.session.previous_key_files,
            vec![PathBuf::from("/etc/lockstep/session-2026-10.key")]
        );
        assert_eq!(c.limits.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(c.limits.max_depth, 64);
        assert_eq!(c.limits.list_deadline, Duration::from_millis(2500));
        assert_eq!(
            c.audit,
            AuditConfig::File {
                path: "/var/log/lockstep/audit.jsonl".into(),
                rotate_bytes: 100 * 1024 * 1024
            }
        );
        assert!(c.origin_allowed("https://app.example.com"));
        assert!(!c.origin_allowed("https://app.example.com/"));
        assert!(!c.origin_allowed("https://evil.example"));
        let policy = c.policy.as_ref().unwrap();
        assert_eq!(policy["bundles"]["mcp"]["resource"], json!("bundles/mcp"));
        let naming = c.naming().unwrap();
        assert_eq!(
            naming
                .expose("files", crate::naming::NameKind::Tool, "read_file")
                .unwrap(),
            "fs__read_file"
        );
    }

    #[test]
    fn defaults_for_a_minimal_file() {
        let c = GatewayConfig::parse(&one_upstream("")).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(
            c.upstreams[0].prefix, None,
            "a single upstream is not prefixed"
        );
        assert_eq!(
            c.layers.iter().map(|l| l.path.as_str()).collect::<Vec<_>>(),
            DEFAULT_LAYERS.to_vec()
        );
        assert_eq!(c.identity.claims_mapping, ClaimsMapping::default());
        assert_eq!(c.limits.parse_limits(), ParseLimits::default());
        assert_eq!(c.limits.list_deadline, DEFAULT_LIST_DEADLINE);
        assert_eq!(c.limits.max_streams, DEFAULT_MAX_STREAMS);
        assert_eq!(c.audit, AuditConfig::Stdout);
        assert_eq!(c.session.ttl, DEFAULT_SESSION_TTL);
        assert!(c.allowed_origins.is_empty());
        assert_eq!(c.policy, None);
        assert_eq!(c.name_separator, "__");
    }

    #[test]
    fn several_upstreams_are_prefixed_by_name_unless_told() {
        let c = GatewayConfig::parse(
            "upstreams:\n  - {name: db, url: 'http://a/mcp'}\n  - {name: files, command: f, prefix: fs}\n",
        )
        .unwrap();
        assert_eq!(c.upstreams[0].prefix.as_deref(), Some("db"));
        assert_eq!(c.upstreams[1].prefix.as_deref(), Some("fs"));
        assert!(matches!(
            err(
                "upstreams:\n  - {name: db, url: 'http://a/mcp', prefix: ''}\n  - {name: files, command: f}\n"
            ),
            ConfigError::Naming(NamingError::MissingPrefix(_))
        ));
        assert!(matches!(
            err(
                "upstreams:\n  - {name: a, url: 'http://a/mcp', prefix: db}\n  - {name: b, command: f, prefix: db}\n"
            ),
            ConfigError::Naming(NamingError::AmbiguousPrefixes { .. })
        ));
    }

    #[test]
    fn unknown_keys_are_named() {
        let c = GatewayConfig::parse(&format!(
            "{}    urll: x\n    timeouts: {{conect: 1s}}\nlimts: {{}}\nlayers:\n  - path: mcp/tool_access\n    deny_as_tool_eror: true\npolicy: {{services: {{anything: {{goes: here}}}}}}\n",
            one_upstream("")
        ))
        .unwrap();
        assert_eq!(
            c.unknown_keys,
            vec![
                "upstreams[0].urll",
                "upstreams[0].timeouts.conect",
                "limts",
                "layers[0].deny_as_tool_eror"
            ]
        );
        let e = c.deny_unknown_keys().unwrap_err();
        assert!(
            e.to_string()
                .contains("upstreams[0].urll, upstreams[0].timeouts.conect"),
            "{e}"
        );
    }

    #[test]
    fn durations_and_sizes() {
        let c = GatewayConfig::parse(&one_upstream(
            "    timeouts: {connect: 250ms, request: 2m}\nlimits: {max_body_bytes: 512KiB, list_deadline: 1.5}\nsession: {ttl: 1h}\n",
        ))
        .unwrap();
        assert_eq!(c.upstreams[0].connect_timeout, Duration::from_millis(250));
        assert_eq!(c.upstreams[0].request_timeout, Duration::from_secs(120));
        assert_eq!(c.limits.max_body_bytes, 512 * 1024);
        assert_eq!(c.limits.list_deadline, Duration::from_millis(1500));
        assert_eq!(c.session.ttl, Duration::from_secs(3600));
        let c = GatewayConfig::parse(&one_upstream("limits: {max_body_bytes: 1000}\n")).unwrap();
        assert_eq!(c.limits.max_body_bytes, 1000);
        for bad in [
            "limits: {list_deadline: 5 minutes}\n",
            "limits: {list_deadline: -1}\n",
            "limits: {max_body_bytes: 4MB?}\n",
            "limits: {max_body_bytes: [1]}\n",
        ] {
            assert!(
                matches!(err(&one_upstream(bad)), ConfigError::Yaml(_)),
                "{bad}"
            );
        }
        assert!(matches!(
            err(&one_upstream("limits: {list_deadline: 0s}\n")),
            ConfigError::Zero("limits.list_deadline")
        ));
        assert!(matches!(
            err(&one_upstream("limits: {max_body_bytes: 0}\n")),
            ConfigError::Zero("limits.max_body_bytes")
        ));
        assert!(matches!(
            err(&one_upstream("limits: {max_depth: 0}\n")),
            ConfigError::Depth(0)
        ));
        assert!(matches!(
            err(&one_upstream("limits: {max_depth: 129}\n")),
            ConfigError::Depth(129)
        ));
    }

    #[test]
    fn refuses_bad_upstreams() {
        assert!(matches!(err(""), ConfigError::NoUpstreams));
        assert!(matches!(err("upstreams: []\n"), ConfigError::NoUpstreams));
        assert!(matches!(
            err("upstreams:\n  - url: http://a/mcp\n"),
            ConfigError::UpstreamName(0)
        ));
        assert!(matches!(
            err("upstreams:\n  - name: a\n"),
            ConfigError::Transport(_)
        ));
        assert!(matches!(
            err("upstreams:\n  - {name: a, url: 'http://a/mcp', command: x}\n"),
            ConfigError::Transport(_)
        ));
        assert!(matches!(
            err("upstreams:\n  - {name: a, url: 'http://a/mcp', args: [x]}\n"),
            ConfigError::ArgsWithoutCommand(_)
        ));
        for url in ["ftp://a/mcp", "/mcp", "http://", "not a url"] {
            assert!(
                matches!(
                    err(&format!("upstreams:\n  - {{name: a, url: '{url}'}}\n")),
                    ConfigError::Url { .. }
                ),
                "{url}"
            );
        }
        assert!(matches!(
            err("upstreams:\n  - {name: a, command: x}\n  - {name: a, command: y}\n"),
            ConfigError::DuplicateUpstream(_)
        ));
    }

    #[test]
    fn refuses_bad_layers_origins_audit_listen_and_claims() {
        assert!(matches!(
            err(&one_upstream("layers: []\n")),
            ConfigError::NoLayers
        ));
        for bad in [
            "",
            "mcp//x",
            "mcp.tool_access",
            "mcp/tool-access",
            "data mcp",
        ] {
            assert!(
                matches!(
                    err(&one_upstream(&format!("layers: [{{path: '{bad}'}}]\n"))),
                    ConfigError::LayerPath(_)
                ),
                "{bad:?}"
            );
        }
        let c =
            GatewayConfig::parse(&one_upstream("layers: [{path: /mcp/tool_access/}]\n")).unwrap();
        assert_eq!(c.layers[0].path, "mcp/tool_access");
        assert!(matches!(
            err(&one_upstream("layers: [{path: mcp/a}, {path: mcp/a}]\n")),
            ConfigError::DuplicateLayer(_)
        ));
        // filter_lists on a layer that decides no entry's method would filter nothing.
        assert!(matches!(
            err(&one_upstream(
                "layers: [{path: mcp/a, methods: [tools/list], filter_lists: true}]\n"
            )),
            ConfigError::FilterNothing(_)
        ));
        GatewayConfig::parse(&one_upstream(
            "layers: [{path: mcp/a, methods: [prompts/get], filter_lists: true}]\n",
        ))
        .unwrap();
        for bad in ["{tools/call: []}", "{tools/call: ['a b']}", "{'': [a]}"] {
            let yaml = one_upstream(&format!("identity:\n  required_scopes: {bad}\n"));
            assert!(
                matches!(err(&yaml), ConfigError::RequiredScopes(_)),
                "{bad}"
            );
        }
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://a/b",
            "null",
            "https://",
        ] {
            assert!(
                matches!(
                    err(&one_upstream(&format!("allowed_origins: ['{bad}']\n"))),
                    ConfigError::Origin(_)
                ),
                "{bad}"
            );
        }
        GatewayConfig::parse(&one_upstream(
            "allowed_origins: ['http://localhost:6274']\n",
        ))
        .unwrap();
        assert!(matches!(
            err(&one_upstream("audit: {rotate_bytes: 10MiB}\n")),
            ConfigError::RotateWithoutFile
        ));
        assert_eq!(
            GatewayConfig::parse(&one_upstream("audit: {output: stdout}\n"))
                .unwrap()
                .audit,
            AuditConfig::Stdout
        );
        for bad in ["8383", "127.0.0.1", ":8383", "host:port", "a b:1"] {
            assert!(
                matches!(
                    err(&one_upstream(&format!("listen: '{bad}'\n"))),
                    ConfigError::Listen(_)
                ),
                "{bad}"
            );
        }
        for ok in ["0.0.0.0:8383", "[::1]:8383", "localhost:0"] {
            GatewayConfig::parse(&one_upstream(&format!("listen: '{ok}'\n"))).unwrap();
        }
        assert!(matches!(
            err(&one_upstream("identity: {claims_mapping: {role: ''}}\n")),
            ConfigError::EmptyClaim("role")
        ));
        assert!(matches!(err("upstreams: {a: 1}\n"), ConfigError::Yaml(_)));
        assert!(matches!(
            err(&one_upstream("listen: [1]\n")),
            ConfigError::Yaml(_)
        ));
    }
}
