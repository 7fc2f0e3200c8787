//! The CLI's client of a `lockstep server`: where it is, how to authenticate (token
//! file or variable, CA and client certificates), and turning its answers into
//! results and lines for people. Every command that talks to a server goes through
//! here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use lockstep_server::auth::{Secret, TokenSource};
use lockstep_server::fleet::FleetView;
use lockstep_server::publish::PublishResponse;

/// Where the server is and how to authenticate.
#[derive(Debug, Args, Clone)]
pub struct RemoteArgs {
    /// Server base URL, e.g. http://127.0.0.1:8282
    #[arg(long, env = "LOCKSTEP_SERVER")]
    pub server: String,
    /// File holding the bearer token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the bearer token (default LOCKSTEP_TOKEN, if set).
    #[arg(long)]
    pub token_env: Option<String>,
    /// PEM CA certificate to trust for an https server (besides the system's roots).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// PEM client certificate, for servers that require one (with --client-key).
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl RemoteArgs {
    pub fn token(&self) -> anyhow::Result<Option<Secret>> {
        let src = match (&self.token_file, &self.token_env) {
            (Some(f), _) => TokenSource {
                file: Some(f.clone()),
                ..TokenSource::default()
            },
            (None, Some(v)) => TokenSource {
                env: Some(v.clone()),
                ..TokenSource::default()
            },
            (None, None) if std::env::var_os("LOCKSTEP_TOKEN").is_some() => TokenSource {
                env: Some("LOCKSTEP_TOKEN".into()),
                ..TokenSource::default()
            },
            (None, None) => return Ok(None),
        };
        Ok(Some(src.load()?))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.trim_end_matches('/'))
    }
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn client(remote: &RemoteArgs) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("lockstep/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10));
    if let Some(ca) = &remote.cacert {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).context("--cacert")?);
    }
    if let (Some(cert), Some(key)) = (&remote.client_cert, &remote.client_key) {
        let mut pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).with_context(|| format!("reading {}", key.display()))?);
        b = b.identity(reqwest::Identity::from_pem(&pem).context("--client-cert/--client-key")?);
    }
    b.build().context("building the HTTP client")
}

pub fn with_token(req: reqwest::RequestBuilder, token: Option<&Secret>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => req.bearer_auth(t.expose()),
        None => req,
    }
}

/// Turns a non-2xx answer into an error carrying the server's message.
pub async fn check(resp: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or(body);
    bail!("{what}: server replied {status}: {message}")
}

/// PUTs `bytes` as a bundle at `url` (`…/bundles/{name}`): the server's answer.
pub async fn put_bundle(
    http: &reqwest::Client,
    url: &str,
    token: Option<&Secret>,
    actor: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<PublishResponse> {
    let r = with_token(http.put(url), token)
        .header("x-lockstep-actor", actor)
        .body(bytes)
        .send()
        .await
        .context("PUT bundle")?;
    Ok(check(r, "publish").await?.json().await?)
}

pub async fn fetch_fleet(
    http: &reqwest::Client,
    remote: &RemoteArgs,
    token: Option<&Secret>,
) -> anyhow::Result<FleetView> {
    let r = with_token(http.get(remote.url("/v1/fleet")), token)
        .send()
        .await
        .context("GET /v1/fleet")?;
    Ok(check(r, "fleet view").await?.json().await?)
}

pub fn actor(a: Option<&str>) -> String {
    a.map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "lockstep-cli".into())
}

pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `<bundle>: <verb> revision <rev> (id <id>, seq <n>), was <previous>`.
pub fn published(verb: &str, resp: &PublishResponse) -> String {
    format!(
        "{}: {verb} revision {} (id {}, seq {}){}",
        resp.bundle,
        resp.revision,
        short(&resp.id),
        resp.seq,
        resp.previous_revision
            .as_deref()
            .map(|p| format!(", was {p}"))
            .unwrap_or_default()
    )
}
