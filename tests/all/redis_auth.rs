//! Credentials and TLS from Redis URLs: an ACL user and password, `rediss://` against a private
//! certificate authority (trusted through `SSL_CERT_FILE`, in a process of its own), and the
//! password kept out of every error and `Debug` output, for one server, a cluster and
//! sentinels. The servers are private `redis-server` processes; without `redis-server` the
//! tests are skipped with a note, except in CI.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use reqwest_token_refresh::{
    ConfigError, Error, RedisTokenStore, SaveOutcome, StoreErrorKind, TokenKey, TokenStore,
};

use crate::helpers::record;
use crate::redis_support::{free_port, key_ring, tokens, unique_prefix, PrivateRedis};
use crate::workers;

const PASSWORD: &str = "s3cret-Pa55word";

/// Options giving the server an ACL user `app` with `PASSWORD` (the default user stays open,
/// for the test's own checks).
fn acl_user() -> Vec<String> {
    [
        "--user",
        "app",
        "on",
        &format!(">{PASSWORD}"),
        "~*",
        "&*",
        "+@all",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect()
}

/// Everything an error shows: its message, its `Debug`, and those of its sources.
fn rendered(error: &Error) -> String {
    let mut shown = format!("{error} {error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        shown.push_str(&format!(" | {cause} {cause:?}"));
        source = cause.source();
    }
    shown
}

fn assert_hidden(what: &str, shown: &str) {
    assert!(
        !shown.contains(PASSWORD),
        "{what} shows the password: {shown}"
    );
}

#[tokio::test]
async fn the_password_never_appears_in_debug_output_or_errors() {
    let builder = RedisTokenStore::builder(key_ring()).sentinel_master_auth(Some("app"), PASSWORD);
    assert_hidden("the builder's Debug", &format!("{builder:?}"));

    // URLs that do not parse: a configuration error that does not quote them.
    let bad = format!("redis://app:{PASSWORD}@[::1");
    let errors = [
        RedisTokenStore::builder(key_ring()).connect(&bad).await,
        RedisTokenStore::builder(key_ring())
            .connect_cluster(&[bad.as_str()])
            .await,
        RedisTokenStore::builder(key_ring())
            .connect_sentinel(&[bad.as_str()], "master")
            .await,
    ];
    for error in errors {
        let error = error.unwrap_err();
        assert!(
            matches!(error, Error::Config(ConfigError::Store { .. })),
            "{error:?}"
        );
        assert_hidden("a URL error", &rendered(&error));
    }

    // Nothing listens there: unavailable, without the password.
    let nowhere = format!("redis://app:{PASSWORD}@127.0.0.1:{}", free_port());
    let errors = [
        RedisTokenStore::builder(key_ring()).connect(&nowhere).await,
        RedisTokenStore::builder(key_ring())
            .connect_cluster(&[nowhere.as_str()])
            .await,
        RedisTokenStore::builder(key_ring())
            .connect_sentinel(&[nowhere.as_str()], "master")
            .await,
    ];
    for error in errors {
        let error = error.unwrap_err();
        match &error {
            Error::Store(store) => assert_eq!(store.kind(), StoreErrorKind::Unavailable),
            other => panic!("{other:?}"),
        }
        assert_hidden("a connection error", &rendered(&error));
    }

    // A server with an ACL user: a wrong password is refused, the right one works, and neither
    // shows up.
    let Some(server) = PrivateRedis::start_with(&acl_user()) else {
        return;
    };
    let wrong = format!("redis://app:{PASSWORD}-wrong@127.0.0.1:{}", server.port);
    let error = RedisTokenStore::builder(key_ring())
        .connect(&wrong)
        .await
        .unwrap_err();
    match &error {
        Error::Store(store) => assert_eq!(store.kind(), StoreErrorKind::Misconfigured),
        other => panic!("{other:?}"),
    }
    assert_hidden("an authentication error", &rendered(&error));
    let right = format!("redis://app:{PASSWORD}@127.0.0.1:{}", server.port);
    let store = RedisTokenStore::builder(key_ring())
        .prefix(unique_prefix())
        .connect(&right)
        .await
        .unwrap();
    assert_hidden("the store's Debug", &format!("{store:?}"));
    let key = TokenKey::new("user-1");
    let saved = record(tokens("acl"), 1);
    assert_eq!(
        store.save(&key, &saved, None).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(store.load(&key).await.unwrap(), Some(saved));
    // The store is connected as `app`.
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(
            &mut redis::Client::open(server.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(clients.contains(" user=app "), "{clients}");
}

/// A certificate authority of its own, and a certificate it issued for 127.0.0.1 and
/// localhost, as PEM files in `dir`: `ca.pem`, `cert.pem`, `key.pem`.
fn private_ca(dir: &std::path::Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), server_cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), server_key.serialize_pem()).unwrap();
}

/// The process of `rediss_with_an_acl_user_from_the_url`: trusts the private authority
/// (`SSL_CERT_FILE`), connects with the URL's user and password over TLS, and uses the store.
#[tokio::test]
#[ignore = "worker process for rediss_with_an_acl_user_from_the_url"]
async fn tls_redis_worker() {
    if !workers::is_worker() {
        return;
    }
    let url = std::env::var("RTR_REDIS_URL").unwrap();
    let wrong = url.replace(PASSWORD, "not-the-password");
    let error = RedisTokenStore::builder(key_ring())
        .connect(&wrong)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Store(_)), "{error:?}");
    let store = RedisTokenStore::builder(key_ring())
        .prefix(unique_prefix())
        .lock_lease(Duration::from_secs(2))
        .connect(&url)
        .await
        .unwrap();
    let key = TokenKey::new("user-1");
    let saved = record(tokens("tls"), 1);
    assert_eq!(
        store.save(&key, &saved, None).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(store.load(&key).await.unwrap(), Some(saved));
    let held = store.lock(&key).await.unwrap();
    assert!(held.still_held().await);
    held.release().await;
    println!("reply: ok");
}

/// `rediss://app:password@127.0.0.1:PORT`: TLS verified against the certificate authority the
/// process trusts, and the ACL user the URL names. Without the authority, the same URL fails
/// (the certificate is checked), and the error does not show the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_an_acl_user_from_the_url() {
    let certificates = tempfile::tempdir().unwrap();
    private_ca(certificates.path());
    let Some(server) = PrivateRedis::start_tls(
        &certificates.path().join("cert.pem"),
        &certificates.path().join("key.pem"),
        &acl_user(),
    ) else {
        return;
    };
    let url = format!(
        "rediss://app:{PASSWORD}@127.0.0.1:{}",
        server.tls_port.unwrap()
    );
    // This process trusts only the system's authorities.
    let error = RedisTokenStore::builder(key_ring())
        .connect(&url)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Store(_)), "{error:?}");
    let shown = rendered(&error);
    assert!(shown.contains("UnknownIssuer"), "{shown}");
    assert_hidden("a TLS error", &shown);

    let output = tokio::task::block_in_place(|| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "redis_auth::tls_redis_worker",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(workers::WORKER_ENV, "0")
            .env("SSL_CERT_FILE", certificates.path().join("ca.pem"))
            .env("RTR_REDIS_URL", &url)
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap()
    });
    assert!(
        output.status.success(),
        "the worker failed: {}",
        output.status
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("reply: ok"),
        "the worker ran"
    );
}
