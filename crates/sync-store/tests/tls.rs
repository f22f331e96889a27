//! TLS to PostgreSQL, against real servers: the test cluster (`ssl = on` with
//! Debian's self-signed "snakeoil" certificate) and, for the verifying modes,
//! a throwaway cluster of the test's own whose certificate is signed by a CA
//! made in the test. PostgreSQL-only (SQLite has no transport).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diesel::QueryableByName;
use diesel::sql_types::Bool;
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use sync_store::test_support::{REQUIRE_POSTGRES, TEST_ENCRYPTION_KEY, TestDb};
use sync_store::tls::PgConnector;
use sync_store::{DatabaseUrl, DbPool, PoolOptions, Store};

#[derive(QueryableByName)]
struct Encrypted {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

/// Whether this connection is encrypted, as the server sees it.
async fn is_encrypted(conn: &mut AsyncPgConnection) -> bool {
    diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result::<Encrypted>(conn)
        .await
        .expect("reading pg_stat_ssl")
        .ssl
}

/// The test database's URL with `params` added to its query string.
fn with_params(db: &TestDb, params: &str) -> String {
    let raw = db.url_string();
    let separator = if raw.contains('?') { '&' } else { '?' };
    format!("{raw}{separator}{params}")
}

async fn open(url: &str) -> anyhow::Result<Store> {
    Store::open(
        DatabaseUrl::parse(url)?,
        Some(TEST_ENCRYPTION_KEY),
        PoolOptions {
            max_size: 4,
            ..PoolOptions::default()
        },
    )
    .await
}

/// Holds `n` connections of the pool at once and reports whether each is encrypted.
async fn pool_connections_encrypted(store: &Store, n: usize) -> Vec<bool> {
    let DbPool::Postgres(pool) = store.pool() else {
        panic!("a PostgreSQL store has a PostgreSQL pool");
    };
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(pool.get().await.expect("a pool connection"));
    }
    assert_eq!(pool.status().size, n, "the pool opened {n} connections");
    let mut encrypted = Vec::new();
    for conn in &mut held {
        encrypted.push(is_encrypted(conn).await);
    }
    encrypted
}

#[tokio::test]
async fn sslmode_require_encrypts_migrations_and_every_pool_connection() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = open(&with_params(&db, "sslmode=require"))
        .await
        .expect("sslmode=require connects to a server with ssl = on");
    assert_eq!(pool_connections_encrypted(&store, 4).await, vec![true; 4]);
}

#[tokio::test]
async fn the_default_prefer_encrypts_when_the_server_offers_tls() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = open(&db.url_string())
        .await
        .expect("the default URL connects");
    assert_eq!(pool_connections_encrypted(&store, 2).await, vec![true; 2]);
}

#[tokio::test]
async fn sslmode_disable_stays_plain() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = open(&with_params(&db, "sslmode=disable")).await.unwrap();
    assert_eq!(pool_connections_encrypted(&store, 1).await, vec![false]);
}

#[tokio::test]
async fn verify_full_with_system_roots_refuses_a_self_signed_server() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let error = open(&with_params(&db, "sslmode=verify-full&sslrootcert=system"))
        .await
        .map(|_| ())
        .expect_err("the snakeoil certificate is signed by no public CA");
    let message = format!("{error:#}");
    assert!(
        message.contains("invalid peer certificate") && message.contains("sslmode=verify-full"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "one line: {message}");
}

#[tokio::test]
async fn the_require_notice_is_logged_only_without_sslrootcert() {
    let url = DatabaseUrl::parse("postgres://u@db/x?sslmode=require").unwrap();
    assert!(url.tls_notice().unwrap().contains("does not verify"));
    let url =
        DatabaseUrl::parse("postgres://u@db/x?sslmode=verify-full&sslrootcert=system").unwrap();
    assert_eq!(url.tls_notice(), None);
}

// ---- a cluster of the test's own, with a certificate from a test CA ----

/// A PostgreSQL cluster started for one test (stopped on drop), whose server
/// certificate names only `127.0.0.1` and is signed by `ca`.
struct OwnCluster {
    dir: tempfile::TempDir,
    port: u16,
    as_postgres_user: bool,
}

impl OwnCluster {
    /// Starts the cluster, or `None` to skip when `initdb` is not installed
    /// and PostgreSQL is not required.
    fn start() -> Option<Self> {
        if Command::new("initdb").arg("--version").output().is_err() {
            assert!(
                std::env::var(REQUIRE_POSTGRES).is_err(),
                "{REQUIRE_POSTGRES} is set but initdb is not installed"
            );
            eprintln!("skipped: initdb is not installed");
            return None;
        }
        // initdb refuses to run as root: run the cluster as `postgres` then.
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .expect("running id -u");
        let as_postgres_user = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().to_path_buf();
        let path = path.as_path();
        write_certificates(path);
        let cluster = Self {
            port: free_port(),
            dir,
            as_postgres_user,
        };
        if as_postgres_user {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path));
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = cluster.data();
        run(cluster
            .pg_command("initdb")
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data));
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\n\
             ssl = on\nssl_cert_file = '{dir}/server.crt'\nssl_key_file = '{dir}/server.key'\n\
             fsync = off\nmax_connections = 20\nshared_buffers = 16MB\n",
            port = cluster.port,
            dir = path.display(),
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut file, conf.as_bytes()).unwrap();
        run(cluster
            .pg_command("pg_ctl")
            .args(["-w", "-t", "120", "-l"])
            .arg(path.join("server.log"))
            .arg("-D")
            .arg(&data)
            .arg("start"));
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn pg_command(&self, program: &str) -> Command {
        if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", program]);
            command
        } else {
            Command::new(program)
        }
    }

    /// A URL to this cluster through `host` with extra query parameters.
    fn url(&self, host: &str, params: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{params}", self.port)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = self
            .pg_command("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .output();
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("starting a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A CA (`ca.pem`) and a server certificate for `127.0.0.1` signed by it.
fn write_certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Chronos test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    server_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.crt"), server_cert.pem()).unwrap();
    let key_path = dir.join("server.key");
    std::fs::write(&key_path, server_key.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    // PostgreSQL refuses a key others can read.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

async fn connect(url: &str) -> Result<AsyncPgConnection, String> {
    let connector = PgConnector::new(url).map_err(|e| format!("{e:#}"))?;
    connector.connect().await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn verify_full_with_the_test_ca_connects_encrypted() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let ca = cluster.ca();
    let url = cluster.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let mut conn = connect(&url).await.expect("the test CA signed the server");
    assert!(is_encrypted(&mut conn).await);
}

#[tokio::test]
async fn verify_full_refuses_a_host_name_the_certificate_does_not_name() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let ca = cluster.ca();
    let url = cluster.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let error = connect(&url)
        .await
        .map(|_| ())
        .expect_err("the certificate names 127.0.0.1 only");
    assert!(error.contains("not valid for name"), "{error}");
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_host_name() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let ca = cluster.ca();
    let url = cluster.url(
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
    );
    let mut conn = connect(&url).await.expect("verify-ca ignores the name");
    assert!(is_encrypted(&mut conn).await);
    // The same server with another CA's roots is refused.
    let url = cluster.url("localhost", "sslmode=verify-ca&sslrootcert=system");
    let error = connect(&url)
        .await
        .map(|_| ())
        .expect_err("no public CA signed it");
    assert!(error.contains("invalid peer certificate"), "{error}");
}
