//! The demo's fleet, in this process and on 127.0.0.1: a bundle server on a folder
//! store, and gateways, each in front of its own MCP tool server. Three follow the
//! server by long polling (lockstep's way), three poll on a timer the way the guide
//! configures OPA, scaled down. Each long-polling gateway reaches the server through a
//! relay the demo can cut.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use lockstep_bundle::KeyConfig;
use lockstep_gateway::RunningGateway;
use lockstep_gateway::config::GatewayConfig;
use lockstep_server::RunningServer;
use lockstep_server::auth::{Secret, TokenSource};
use lockstep_server::config::{AuthConfig, Config, StoreConfig};
use tokio::sync::watch;

use super::relay::Relay;

pub const KEY_ID: &str = "demo-key";
/// The analyst's API key on every gateway.
pub const ANALYST_KEY: &str = "lsk_demo_analyst_5f0c2a9e71d34b8c";
/// The long-polling gateways' freshness lease.
pub const MAX_STALENESS: Duration = Duration::from_secs(2);
/// The guide's OPA polls every 30–120 s; the contrast runs ten times faster.
pub const POLL_MIN_SECONDS: u64 = 3;
pub const POLL_MAX_SECONDS: u64 = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    LongPolling,
    Polling,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::LongPolling => "long_polling",
            Mode::Polling => "polling",
        }
    }
}

pub struct Instance {
    pub name: String,
    pub mode: Mode,
    /// The gateway's MCP endpoint.
    pub url: String,
    gateway: RunningGateway,
    relay: Option<Relay>,
    tool_server: watch::Sender<bool>,
}

impl Instance {
    /// Cuts this instance off from the bundle server (long-polling instances only).
    pub fn cut_off(&self) -> bool {
        self.relay.as_ref().map(Relay::cut).is_some()
    }
}

pub struct Fleet {
    server: RunningServer,
    pub base: String,
    token: Secret,
    pub instances: Vec<Instance>,
}

impl Fleet {
    /// Starts the server under `dir` with `public_pem` as its verification key.
    pub async fn start_server(dir: &Path, public_pem: &str) -> anyhow::Result<Fleet> {
        let token = "demo-fleet-token-7d1e0b5c93a84f26";
        let token_file = dir.join("fleet-token");
        std::fs::write(&token_file, token)?;
        let src = TokenSource {
            file: Some(token_file),
            ..TokenSource::default()
        };
        let cfg = Config {
            listen: Some("127.0.0.1:0".into()),
            store: StoreConfig {
                folder: Some(dir.join("store")),
                ..StoreConfig::default()
            },
            keys: [(
                KEY_ID.to_string(),
                KeyConfig {
                    key: public_pem.to_string(),
                    algorithm: "ES256".into(),
                    scope: None,
                },
            )]
            .into(),
            auth: AuthConfig {
                publisher_token: Some(src.clone()),
                download_tokens: vec![src.clone()],
                status_tokens: vec![src],
                // Loopback only: the fleet page opens in a browser without a token.
                allow_anonymous_views: true,
                ..AuthConfig::default()
            },
            ..Config::default()
        };
        let server = lockstep_server::start(&cfg)
            .await
            .context("starting the bundle server")?;
        Ok(Fleet {
            base: format!("http://{}", server.addr),
            server,
            token: Secret::new(token),
            instances: Vec::new(),
        })
    }

    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// Starts a tool server and a gateway named `name` in front of it.
    pub async fn add(
        &mut self,
        dir: &Path,
        name: &str,
        mode: Mode,
        public_pem: &str,
    ) -> anyhow::Result<()> {
        let home = dir.join(name);
        std::fs::create_dir_all(&home)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let upstream = format!("http://{}/mcp", listener.local_addr()?);
        let (stop, stopped) = watch::channel(false);
        let server_name = format!("{name}-tools");
        tokio::spawn(lockstep_gateway::tool_server::serve(
            listener,
            server_name,
            stopped,
        ));
        let relay = match mode {
            Mode::LongPolling => Some(Relay::start(self.server.addr).await?),
            Mode::Polling => None,
        };
        let server_url = match &relay {
            Some(r) => format!("http://{}", r.addr),
            None => self.base.clone(),
        };
        let yaml = gateway_yaml(&GatewaySpec {
            home: &home,
            keys_file: &write_api_keys(dir)?,
            upstream: &upstream,
            server_url: &server_url,
            token: self.token.expose(),
            public_pem,
            name,
            mode,
        })?;
        let cfg = GatewayConfig::parse(&yaml).map_err(|e| anyhow!("{name}: {e}"))?;
        let gateway = lockstep_gateway::start(cfg)
            .await
            .map_err(|e| anyhow!("starting gateway {name}: {e}"))?;
        self.instances.push(Instance {
            name: name.to_string(),
            mode,
            url: format!("http://{}/mcp", gateway.addr),
            gateway,
            relay,
            tool_server: stop,
        });
        Ok(())
    }

    /// Waits until every gateway decides by a fresh revision (`/health` is 200).
    pub async fn ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        for i in &self.instances {
            let health = format!("http://{}/health", i.gateway.addr);
            while !http
                .get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                if Instant::now() > deadline {
                    anyhow::bail!("{} has no fresh revision after {timeout:?}", i.name);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Stops every gateway, tool server and the bundle server.
    pub async fn shutdown(self) {
        for i in self.instances {
            if let Some(r) = &i.relay {
                r.cut();
            }
            let _ = i.gateway.shutdown().await;
            let _ = i.tool_server.send(true);
        }
        let _ = self.server.shutdown().await;
    }
}

fn write_api_keys(dir: &Path) -> anyhow::Result<PathBuf> {
    let p = dir.join("api-keys.yaml");
    std::fs::write(
        &p,
        format!("keys:\n  - key: {ANALYST_KEY}\n    id: analyst-agent\n    role: analyst\n"),
    )?;
    Ok(p)
}

struct GatewaySpec<'a> {
    home: &'a Path,
    keys_file: &'a Path,
    upstream: &'a str,
    server_url: &'a str,
    token: &'a str,
    public_pem: &'a str,
    name: &'a str,
    mode: Mode,
}

/// The gateway's configuration: `policy:` is OPA's config format, as an OPA next to
/// each MCP server in the guide would have it.
fn gateway_yaml(s: &GatewaySpec) -> anyhow::Result<String> {
    let (polling, max_staleness) = match s.mode {
        Mode::LongPolling => (
            "{long_polling_timeout_seconds: 60}".to_string(),
            format!("{}s", MAX_STALENESS.as_secs()),
        ),
        // The lease must outlast two polling cycles, or it would cut them short.
        Mode::Polling => (
            format!(
                "{{min_delay_seconds: {POLL_MIN_SECONDS}, max_delay_seconds: {POLL_MAX_SECONDS}}}"
            ),
            format!("{}s", POLL_MAX_SECONDS * 5),
        ),
    };
    Ok(format!(
        r#"listen: 127.0.0.1:0
upstreams:
  - name: db
    url: {upstream}
identity:
  api_keys_file: {keys}
audit:
  output: {audit}
policy:
  services:
    bundle-server:
      url: {server}
      credentials: {{bearer: {{token: {token}}}}}
  bundles:
    main:
      service: bundle-server
      resource: bundles/main
      polling: {polling}
      signing: {{keyid: {KEY_ID}}}
  keys:
    {KEY_ID}: {{key: {pem}, algorithm: ES256}}
  persistence_directory: {persist}
  status: {{service: bundle-server}}
  labels: {{id: {name}}}
  lockstep: {{max_staleness: {max_staleness}}}
"#,
        upstream = s.upstream,
        keys = s.keys_file.display(),
        audit = s.home.join("audit.jsonl").display(),
        server = s.server_url,
        token = s.token,
        pem = serde_json::to_string(s.public_pem)?,
        persist = s.home.join("opa").display(),
        name = s.name,
    ))
}
