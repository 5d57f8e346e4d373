//! The real authorization server: node-oidc-provider as configured in `interop/oidc-provider/`
//! (see its README for the clients, the `/test/` controls and the counters), started on
//! loopback by each test and killed when the test ends.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use reqwest_token_refresh::{
    AccessToken, ClientAssertionKey, ClientAuth, ClientSecret, DpopKey, RefreshToken,
    RefreshTokenGrant, TokenSet,
};
use serde::Deserialize;

/// The clients registered with the server, and their secrets: reserved characters on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// `client_secret_basic`.
    Basic,
    /// `client_secret_post`.
    Post,
    /// A public client (`none`, PKCE at login).
    Public,
    /// A public client whose tokens are DPoP-bound (`dpop_bound_access_tokens`).
    Dpop,
    /// `private_key_jwt` with the ES256 key of `interop/oidc-provider/keys`.
    Jwt,
}

pub const BASIC_SECRET: &str = "s3cr:t%+&=/?# x";
pub const POST_SECRET: &str = "p0st:t%+&=/?# y";
pub const SERVICE_CLIENT: &str = "service-client";
pub const SERVICE_SECRET: &str = "svc:s3cr%t+&=/?# z";

impl Client {
    pub fn id(self) -> &'static str {
        match self {
            Client::Basic => "basic-client",
            Client::Post => "post-client",
            Client::Public => "public-client",
            Client::Dpop => "dpop-client",
            Client::Jwt => "jwt-client",
        }
    }
}

/// The ES256 key `jwt-client` authenticates with (a test key, committed with the server).
pub fn jwt_client_key() -> ClientAssertionKey {
    let pem = std::fs::read_to_string(server_dir().join("keys/jwt-client-es256.pem"))
        .expect("the jwt-client key");
    ClientAssertionKey::from_pem(&pem)
        .expect("a P-256 key")
        .with_key_id("jwt-client-es256")
}

/// What the server counted (the README of `interop/oidc-provider` says exactly what; the
/// counters no test reads are left out).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Counters {
    pub token_requests: u64,
    pub token_errors: u64,
    pub rotations: u64,
    pub reuse_detections: u64,
    pub revoked_grants: u64,
    pub client_credentials_grants: u64,
    pub revocations: u64,
    pub api_calls: u64,
    pub api_rejections: u64,
    pub dropped_token_requests: u64,
    pub token_dpop_nonce_challenges: u64,
    pub api_dpop_nonce_challenges: u64,
}

/// A running node-oidc-provider.
pub struct Provider {
    child: Child,
    /// The server exits when this pipe closes (the test process died without dropping it).
    _stdin: ChildStdin,
    issuer: String,
    http: reqwest::Client,
}

impl Provider {
    /// Starts a server issuing access tokens that live `access_token_ttl`; `None` (the test is
    /// skipped, with a note) when Node is not installed, outside CI.
    pub async fn start(access_token_ttl: Duration) -> Option<Self> {
        Self::start_with(access_token_ttl, &[]).await
    }

    /// [`start`](Self::start) with more settings of the server (`DPOP_REQUIRE_NONCE`, …; see
    /// its README).
    pub async fn start_with(access_token_ttl: Duration, env: &[(&str, &str)]) -> Option<Self> {
        if !node_available() {
            return None;
        }
        install();
        let mut child = Command::new("node")
            .arg(server_dir().join("server.mjs"))
            .env(
                "ACCESS_TOKEN_TTL",
                access_token_ttl.as_secs().max(1).to_string(),
            )
            .env("MAX_LIFETIME_SECONDS", "900")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node server.mjs");
        let stdin = child.stdin.take().expect("server stdin");
        let stdout = child.stdout.take().expect("server stdout");
        // The ready line: `{"issuer":"http://127.0.0.1:PORT","port":PORT}`.
        let ready = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).map(|_| line)
            }),
        )
        .await
        .expect("the server is ready within a minute")
        .expect("reader task")
        .expect("read the ready line");
        #[derive(Deserialize)]
        struct Ready {
            issuer: String,
        }
        let ready: Ready = serde_json::from_str(&ready)
            .unwrap_or_else(|error| panic!("ready line `{ready}`: {error}"));
        Some(Self {
            child,
            _stdin: stdin,
            issuer: ready.issuer,
            http: reqwest::Client::new(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    pub fn api_url(&self, rest: &str) -> String {
        format!("{}/api/{rest}", self.issuer)
    }

    /// The grant for `client`, as an application would configure it.
    pub fn grant(&self, client: Client) -> RefreshTokenGrant {
        grant(&self.issuer, client)
    }

    /// Logs user `user` in with `client` through the server's real authorization-code flow
    /// and returns the tokens its token endpoint issued.
    pub async fn login_user(&self, client: Client, user: u32) -> TokenSet {
        let response: serde_json::Value = self
            .post(&format!("/test/login?client={}&user={user}", client.id()))
            .await;
        let text = |name: &str| {
            response[name]
                .as_str()
                .unwrap_or_else(|| panic!("login response without {name}: {response}"))
                .to_owned()
        };
        let expires_in = response["expires_in"].as_u64().expect("expires_in");
        TokenSet::new(AccessToken::new(text("access_token")))
            .with_refresh_token(RefreshToken::new(text("refresh_token")))
            .with_expires_in(Duration::from_secs(expires_in))
    }

    /// Logs user `user` in with `dpop-client`, the code exchanged with proofs of `key`: the
    /// tokens are bound to it.
    pub async fn login_dpop(&self, key: &DpopKey, user: u32) -> TokenSet {
        let body = serde_json::json!({ "dpop_jwk": serde_json::from_str::<serde_json::Value>(&key.to_jwk()).unwrap() });
        let response: serde_json::Value = self
            .http
            .post(format!(
                "{}/test/login?client=dpop-client&user={user}",
                self.issuer
            ))
            .json(&body)
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login json");
        assert_eq!(response["token_type"], "DPoP", "{response}");
        let text = |name: &str| response[name].as_str().expect(name).to_owned();
        TokenSet::new(AccessToken::new(text("access_token")))
            .with_refresh_token(RefreshToken::new(text("refresh_token")))
            .with_expires_in(Duration::from_secs(
                response["expires_in"].as_u64().unwrap(),
            ))
            .with_dpop_key(key.clone())
    }

    /// [`login_user`](Self::login_user) for user 1.
    pub async fn login(&self, client: Client) -> TokenSet {
        self.login_user(client, 1).await
    }

    pub async fn counters(&self) -> Counters {
        self.http
            .get(format!("{}/test/counters", self.issuer))
            .send()
            .await
            .expect("counters")
            .json()
            .await
            .expect("counters json")
    }

    pub async fn reset_counters(&self) {
        let _: serde_json::Value = self.post("/test/reset-counters").await;
    }

    /// Every access token issued so far stops working at the API (clients still think them
    /// valid).
    pub async fn expire_access_tokens(&self) {
        let _: serde_json::Value = self.post("/test/expire-access-tokens").await;
    }

    /// An administrator revokes the grant `token` belongs to.
    pub async fn revoke_grant(&self, token: &str) {
        let _: serde_json::Value = self
            .post(&format!("/test/revoke-grant?token={}", urlencode(token)))
            .await;
    }

    /// Token requests from now on wait before the server processes them.
    pub async fn hold_token_requests(&self) {
        let _: serde_json::Value = self.post("/test/hold-token-requests").await;
    }

    /// Held token requests go on, except those whose client is gone.
    pub async fn release_token_requests(&self) {
        let _: serde_json::Value = self.post("/test/release-token-requests").await;
    }

    /// Whether the server considers `refresh_token` usable (RFC 7662, asked as `basic-client`).
    pub async fn is_active(&self, refresh_token: &str) -> bool {
        let response: serde_json::Value = self
            .http
            .post(format!("{}/token/introspection", self.issuer))
            .basic_auth(urlencode(Client::Basic.id()), Some(urlencode(BASIC_SECRET)))
            .form(&[("token", refresh_token)])
            .send()
            .await
            .expect("introspection")
            .json()
            .await
            .expect("introspection json");
        response["active"].as_bool().expect("active")
    }

    async fn post(&self, path_and_query: &str) -> serde_json::Value {
        let response = self
            .http
            .post(format!("{}{path_and_query}", self.issuer))
            .send()
            .await
            .unwrap_or_else(|error| panic!("POST {path_and_query}: {error}"));
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("json answer");
        assert!(
            status.is_success(),
            "POST {path_and_query}: {status} {body}"
        );
        body
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The grant for `client` of the server at `issuer` (also used by worker processes).
pub fn grant(issuer: &str, client: Client) -> RefreshTokenGrant {
    let builder = RefreshTokenGrant::builder(format!("{issuer}/token"), client.id())
        .revocation_endpoint(format!("{issuer}/token/revocation"))
        .danger_allow_http_loopback();
    let builder = match client {
        Client::Basic => builder.client_secret(ClientSecret::new(BASIC_SECRET)),
        Client::Post => builder
            .client_secret(ClientSecret::new(POST_SECRET))
            .client_auth(ClientAuth::ClientSecretPost),
        Client::Public | Client::Dpop => builder,
        Client::Jwt => builder.private_key_jwt(jwt_client_key()),
    };
    builder.build().expect("valid grant")
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn server_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/oidc-provider")
}

/// Whether `node` runs; outside CI its absence skips the suite, in CI it fails it.
fn node_available() -> bool {
    match Command::new("node").arg("--version").output() {
        Ok(output) if output.status.success() => true,
        result if std::env::var_os("CI").is_none() => {
            eprintln!(
                "skipping: the interop suite needs Node 20+ (`node --version`: {result:?}); \
                 install Node and run `npm ci` in interop/oidc-provider"
            );
            false
        }
        result => panic!("the interop suite needs Node in CI: {result:?}"),
    }
}

/// `npm ci` in the server's directory, once per test process, when its modules are missing.
fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = server_dir();
        if dir.join("node_modules/oidc-provider/package.json").exists() {
            return;
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("run npm ci");
        assert!(status.success(), "npm ci in {} failed", dir.display());
    });
}
