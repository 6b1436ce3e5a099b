//! What `RedisBackend::connect` accepts: password, ACL user and database in the URL, and
//! `rediss://` (TLS) against a real TLS-enabled redis-server with a private CA.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use atomcache::{Cache, RedisBackend};
use atomcache_tests::{free_port, RedisServer};

async fn cache_on(backend: RedisBackend) -> Cache {
    Cache::builder("core_url")
        .exp(Duration::from_secs(30))
        .backend(backend)
        .build()
        .unwrap()
}

#[tokio::test]
async fn password_user_and_database_come_from_the_url() {
    let server = RedisServer::start();
    let mut raw = server.raw().await;
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "alice", "on", ">wonderland", "~*", "&*", "+@all"][..])
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "requirepass", "s3cret"][..])
        .query_async(&mut raw)
        .await
        .unwrap();
    let port = server.port();

    // Wrong password: a clear error, no panic.
    let wrong = RedisBackend::connect(&format!("redis://:nope@127.0.0.1:{port}/")).await;
    assert!(wrong.is_err(), "a wrong password must be refused");

    // The default user's password, database 3.
    let backend = RedisBackend::connect(&format!("redis://:s3cret@127.0.0.1:{port}/3"))
        .await
        .unwrap();
    let cache = cache_on(backend).await;
    assert_eq!(cache.get_or_compute("a", || async { 1u8 }).await, 1);
    let key = cache.key("a").value().to_owned();
    let in_db = |db: i64| {
        let key = key.clone();
        let mut raw = raw.clone();
        async move {
            let _: () = redis::cmd("SELECT")
                .arg(db)
                .query_async(&mut raw)
                .await
                .unwrap();
            let exists: i64 = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut raw)
                .await
                .unwrap();
            exists
        }
    };
    assert_eq!(in_db(3).await, 1, "the value must be stored in database 3");
    assert_eq!(in_db(0).await, 0);

    // An ACL user.
    let backend = RedisBackend::connect(&format!("redis://alice:wonderland@127.0.0.1:{port}/5"))
        .await
        .unwrap();
    let cache = cache_on(backend).await;
    assert_eq!(cache.get_or_compute("b", || async { 2u8 }).await, 2);
    assert_eq!(cache.get::<u8>("b").await.unwrap(), Some(2));
    assert_eq!(cache.stats().backend_errors, 0);
}

#[tokio::test]
async fn invalid_urls_and_settings_are_clear_errors() {
    for url in ["", "http://127.0.0.1/", "redis://127.0.0.1:notaport/"] {
        let err = RedisBackend::connect(url).await.unwrap_err();
        assert!(
            matches!(err, atomcache::Error::InvalidConfig(_)),
            "{url:?}: {err}"
        );
    }
    let err = RedisBackend::builder("redis://127.0.0.1/")
        .key_prefix("a{b")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, atomcache::Error::InvalidConfig(_)), "{err}");
    let err = RedisBackend::builder("redis://127.0.0.1/")
        .command_timeout(Duration::ZERO)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, atomcache::Error::InvalidConfig(_)), "{err}");
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect(
        "openssl not found: install it with `apt-get install openssl` (needed to make the TLS test's certificates)",
    );
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and a server certificate for `localhost` / 127.0.0.1.
fn make_certificates(dir: &Path) {
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=atomcache test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
}

#[tokio::test]
async fn rediss_urls_speak_tls() {
    let dir = std::env::temp_dir().join(format!("atomcache-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir);
    let tls_port = free_port();
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let tls_port_arg = tls_port.to_string();
    let (cert, key, ca) = (file("server.crt"), file("server.key"), file("ca.crt"));
    let _server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port_arg,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://localhost:{tls_port}/");
    let pem = std::fs::read(dir.join("ca.crt")).unwrap();

    // Trusting the private CA: works.
    let backend = RedisBackend::builder(&url)
        .tls_root_certificate(pem)
        .connect()
        .await
        .expect("TLS connect");
    let cache = cache_on(backend).await;
    assert_eq!(
        cache
            .get_or_compute("tls", || async { "secret".to_string() })
            .await,
        "secret"
    );
    assert_eq!(
        cache.get::<String>("tls").await.unwrap().as_deref(),
        Some("secret")
    );
    assert_eq!(cache.stats().backend_errors, 0);

    // With only the public web PKI roots, the private CA is not trusted: refused, not hung.
    let untrusted = tokio::time::timeout(Duration::from_secs(5), RedisBackend::connect(&url)).await;
    assert!(
        matches!(untrusted, Ok(Err(_))),
        "an untrusted certificate must be refused"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
