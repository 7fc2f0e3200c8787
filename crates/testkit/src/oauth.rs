//! A small OAuth issuer for tests: ES256 keys published as a JWKS on 127.0.0.1, and
//! access tokens minted with them (or with keys it does not publish).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::bundles::keys;

/// One signing key: its id, private key and public JWK.
#[derive(Clone)]
pub struct IssuerKey {
    pub kid: String,
    pub private: EncodingKey,
    pub jwk: Jwk,
    /// The public key as PEM (for the HS256-with-the-public-key attack).
    pub public_pem: String,
}

impl IssuerKey {
    pub fn generate(kid: &str) -> IssuerKey {
        let k = keys();
        let private = EncodingKey::from_ec_pem(k.private.as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&private, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        IssuerKey {
            kid: kid.to_string(),
            private,
            jwk,
            public_pem: k.public,
        }
    }

    /// A token signed with this key.
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.private).unwrap()
    }
}

/// The issuer: `issuer` (its URL, the `iss` of its tokens) and `jwks_uri`.
pub struct TestIssuer {
    pub issuer: String,
    pub jwks_uri: String,
    published: Arc<Mutex<Vec<IssuerKey>>>,
    /// How often the key set was fetched.
    pub fetches: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl TestIssuer {
    /// Serves one key, `k1`.
    pub async fn start() -> TestIssuer {
        let published = Arc::new(Mutex::new(vec![IssuerKey::generate("k1")]));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (p, f) = (published.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (p, f) = (p.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    let set = JwkSet {
                        keys: p.lock().unwrap().iter().map(|k| k.jwk.clone()).collect(),
                    };
                    axum::Json(serde_json::to_value(set).unwrap())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestIssuer {
            issuer: format!("http://{addr}"),
            jwks_uri: format!("http://{addr}/jwks"),
            published,
            fetches,
            _task: task,
        }
    }

    /// The first published key.
    pub fn key(&self) -> IssuerKey {
        self.published.lock().unwrap()[0].clone()
    }

    /// Publishes another key (a rotation).
    pub fn publish(&self, key: IssuerKey) {
        self.published.lock().unwrap().push(key);
    }

    /// Claims of a token for `audience`: `sub`, `role`, valid for five minutes.
    pub fn claims(&self, audience: &str, sub: &str, role: &str) -> Value {
        let t = now();
        json!({
            "iss": self.issuer, "aud": audience, "sub": sub, "role": role,
            "scope": "mcp:tools", "iat": t, "nbf": t, "exp": t + 300,
            "client_id": "test-client",
        })
    }

    /// A token with `claims`, signed with the first published key.
    pub fn token(&self, claims: &Value) -> String {
        self.key().sign(claims)
    }
}
