//! TLS and mutual TLS over real connections, with certificates made at test time: who is
//! served and who is refused, a certificate reloaded while clients keep working, a bad file
//! keeping the old certificate; then the real binary: `inventory cert generate`, `[tls]` in the
//! configuration file, SIGHUP, and a follower replicating over TLS.
//!
//! Over 600 lines: the certificate authority and TLS client helpers made here serve every
//! scenario, in-process and through the binary.

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use inventory::app::SystemClock;
use inventory::app::access::{
    ApiToken, Authenticator, CertificateIdentity, Principal, Role, StoreScope, new_token,
    parse_sha256,
};
use inventory::certificates::{CertificateAuthority, CertifiedKey};
use inventory::domain::StoreId;
use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::grpc::pb::query_service_client::QueryServiceClient;
use inventory::grpc::tls::{ServerTls, TlsError, TlsFiles};
use support::secured::Guarded;
use support::{Process, add_stock, error_reason, get_stock, level, reserve_stock};

fn hosts() -> Vec<String> {
    vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
}

/// A CA and a server certificate of it, written into `directory`.
fn write_server_files(
    directory: &Path,
    authority: &CertificateAuthority,
    client_ca: Option<&CertificateAuthority>,
) -> TlsFiles {
    let server = authority.server(&hosts()).unwrap();
    let files = TlsFiles {
        cert: directory.join("server.pem"),
        key: directory.join("server.key"),
        client_ca: client_ca.map(|_| directory.join("client-ca.pem")),
    };
    std::fs::write(&files.cert, &server.certificate_pem).unwrap();
    std::fs::write(&files.key, &server.key_pem).unwrap();
    if let (Some(path), Some(client_ca)) = (&files.client_ca, client_ca) {
        std::fs::write(path, client_ca.certificate_pem()).unwrap();
    }
    files
}

/// Both servers in one process, each on TLS with `tls`.
struct Secured {
    command_addr: SocketAddr,
    query_addr: SocketAddr,
    tls: ServerTls,
    servers: Guarded,
}

impl Secured {
    async fn start(files: TlsFiles) -> Secured {
        Secured::start_with(files, None).await
    }

    async fn start_with(files: TlsFiles, auth: Option<Arc<Authenticator>>) -> Secured {
        let tls = ServerTls::start(files).unwrap();
        let servers = Guarded::start(Some(tls.clone()), auth, Arc::new(SystemClock)).await;
        Secured {
            command_addr: servers.command_addr,
            query_addr: servers.query_addr,
            tls,
            servers,
        }
    }

    async fn stop(self) {
        self.servers.stop_keeping_data().await;
    }
}

/// A channel over TLS trusting `ca_pem`, presenting `identity` if given.
async fn tls_channel(
    address: SocketAddr,
    ca_pem: &str,
    identity: Option<&CertifiedKey>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(
            &identity.certificate_pem,
            &identity.key_pem,
        ));
    }
    Channel::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|error| error.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|error| format!("{error:?}"))
}

/// One command on `channel`: Ok when the server answered it.
async fn add_one(channel: Channel, product: &str) -> Result<(), String> {
    CommandServiceClient::new(channel)
        .add_stock(add_stock(product, "store-a", 1))
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

/// Connects over TLS and adds one unit: Ok only when both worked.
async fn call_over_tls(
    address: SocketAddr,
    ca_pem: &str,
    identity: Option<&CertifiedKey>,
) -> Result<(), String> {
    add_one(tls_channel(address, ca_pem, identity).await?, "p").await
}

/// Connects over TLS and asks the health service: Ok only when both worked.
async fn healthy_over_tls(
    address: SocketAddr,
    ca_pem: &str,
    identity: Option<&CertifiedKey>,
) -> Result<(), String> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tls_channel(address, ca_pem, identity).await?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca_and_refuses_the_others() {
    let directory = tempfile::tempdir().unwrap();
    let authority = CertificateAuthority::new("test CA").unwrap();
    let server = Secured::start(write_server_files(directory.path(), &authority, None)).await;
    assert!(!server.tls.mutual());

    // Trusting the CA: commands and queries work on both servers.
    let commands = tls_channel(server.command_addr, authority.certificate_pem(), None)
        .await
        .unwrap();
    add_one(commands, "p").await.unwrap();
    let queries = tls_channel(server.query_addr, authority.certificate_pem(), None)
        .await
        .unwrap();
    let stock = QueryServiceClient::new(queries)
        .get_stock(get_stock("p", "store-a", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(level(stock.item.unwrap().stock).0, 1);

    // A client that trusts another CA refuses the server's certificate.
    let stranger = CertificateAuthority::new("another CA").unwrap();
    let refused = call_over_tls(server.command_addr, stranger.certificate_pem(), None).await;
    assert!(refused.is_err(), "{refused:?}");

    // Plain text gets no answer from a TLS server.
    let plain = match Channel::from_shared(format!("http://{}", server.command_addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
    {
        Ok(channel) => add_one(channel, "p").await,
        Err(error) => Err(error.to_string()),
    };
    assert!(plain.is_err(), "{plain:?}");
    server.stop().await;
}

#[tokio::test]
async fn mutual_tls_serves_only_clients_with_a_certificate_from_the_client_ca() {
    let directory = tempfile::tempdir().unwrap();
    let authority = CertificateAuthority::new("test CA").unwrap();
    let clients = CertificateAuthority::new("client CA").unwrap();
    let files = write_server_files(directory.path(), &authority, Some(&clients));
    let server = Secured::start(files).await;
    assert!(server.tls.mutual());
    let ca = authority.certificate_pem();

    let without = call_over_tls(server.command_addr, ca, None).await;
    assert!(without.is_err(), "no client certificate: {without:?}");

    let foreign = CertificateAuthority::new("foreign CA")
        .unwrap()
        .client("pos-a")
        .unwrap();
    let refused = call_over_tls(server.command_addr, ca, Some(&foreign)).await;
    assert!(
        refused.is_err(),
        "a client CA nobody configured: {refused:?}"
    );

    // A server certificate of the right CA is not a client certificate of the client CA.
    let wrong_kind = authority.client("pos-a").unwrap();
    let refused = call_over_tls(server.command_addr, ca, Some(&wrong_kind)).await;
    assert!(refused.is_err(), "issued by the server's CA: {refused:?}");

    let pos = clients.client("pos-a").unwrap();
    call_over_tls(server.command_addr, ca, Some(&pos))
        .await
        .unwrap();
    healthy_over_tls(server.query_addr, ca, Some(&pos))
        .await
        .unwrap();
    server.stop().await;
}

/// Retries `attempt` until it succeeds or `limit` passes.
/// Under mutual TLS, `[[auth.certificates]]` makes a client certificate a credential: its
/// common name is the principal, with the entry's role and stores; a certificate it does not
/// name is no credential; a token, when sent, is the credential instead.
#[tokio::test]
async fn a_client_certificate_named_in_auth_certificates_is_a_credential() {
    let directory = tempfile::tempdir().unwrap();
    let authority = CertificateAuthority::new("test CA").unwrap();
    let files = write_server_files(directory.path(), &authority, Some(&authority));
    let (token, sha256) = new_token().unwrap();
    let admin = ApiToken {
        sha256: parse_sha256(&sha256).unwrap(),
        principal: Principal {
            name: "back-office".into(),
            role: Role::Admin,
            stores: StoreScope::All,
        },
        max_in_flight: None,
        quota: Default::default(),
    };
    let pos_a = CertificateIdentity {
        principal: Principal {
            name: "pos-a".into(),
            role: Role::Sales,
            stores: StoreScope::of([StoreId::parse("store-a").unwrap()]),
        },
        max_in_flight: None,
    };
    let auth = Authenticator::new(vec![admin]).with_certificates(vec![pos_a]);
    let server = Secured::start_with(files, Some(Arc::new(auth))).await;
    let ca = authority.certificate_pem();
    let with_token = |message| support::secured::as_(&token, message);
    // A certificate no entry names: a token is needed.
    let stranger = authority.client("stranger").unwrap();
    let channel = tls_channel(server.command_addr, ca, Some(&stranger))
        .await
        .unwrap();
    let status = CommandServiceClient::new(channel.clone())
        .add_stock(add_stock("p", "store-a", 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(error_reason(&status), "TOKEN_MISSING");
    for store in ["store-a", "store-b"] {
        CommandServiceClient::new(channel.clone())
            .add_stock(with_token(add_stock("p", store, 5)))
            .await
            .unwrap();
    }

    // pos-a's certificate: a sales credential for store-a, no token sent.
    let pos = authority.client("pos-a").unwrap();
    let channel = tls_channel(server.command_addr, ca, Some(&pos))
        .await
        .unwrap();
    let mut commands = CommandServiceClient::new(channel.clone());
    commands
        .reserve_stock(reserve_stock("p", "store-a", 2))
        .await
        .unwrap();
    let status = commands
        .reserve_stock(reserve_stock("p", "store-b", 2))
        .await
        .unwrap_err();
    assert_eq!(error_reason(&status), "STORE_NOT_PERMITTED", "{status:?}");
    let status = commands
        .add_stock(add_stock("p", "store-a", 1))
        .await
        .unwrap_err();
    assert_eq!(error_reason(&status), "ROLE_NOT_PERMITTED", "{status:?}");
    // The admin token over pos-a's connection: the token is the credential.
    commands
        .add_stock(with_token(add_stock("p", "store-a", 1)))
        .await
        .unwrap();

    let query = tls_channel(server.query_addr, ca, Some(&stranger))
        .await
        .unwrap();
    let history = QueryServiceClient::new(query)
        .get_history(support::secured::as_(
            &token,
            pb::GetHistoryRequest {
                product_id: "p".into(),
                store_id: "store-a".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let actors: Vec<&str> = history
        .events
        .iter()
        .map(|event| event.actor.as_str())
        .collect();
    assert_eq!(actors, ["back-office", "pos-a", "back-office"]);
    server.stop().await;
}

async fn eventually(limit: Duration, mut attempt: impl AsyncFnMut() -> Result<(), String>) {
    let started = Instant::now();
    loop {
        match attempt().await {
            Ok(()) => return,
            Err(error) if started.elapsed() > limit => {
                panic!("still failing after {limit:?}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn a_rewritten_certificate_is_served_to_new_clients_while_open_connections_keep_working() {
    let directory = tempfile::tempdir().unwrap();
    let first = CertificateAuthority::new("first CA").unwrap();
    let files = write_server_files(directory.path(), &first, None);
    let server = Secured::start(files.clone()).await;
    let open = tls_channel(server.command_addr, first.certificate_pem(), None)
        .await
        .unwrap();
    add_one(open.clone(), "before").await.unwrap();

    // The files are rewritten in place, as an operator or a certificate robot would.
    let second = CertificateAuthority::new("second CA").unwrap();
    write_server_files(directory.path(), &second, None);
    let address = server.command_addr;
    eventually(Duration::from_secs(10), async || {
        call_over_tls(address, second.certificate_pem(), None).await
    })
    .await;
    // New clients now get the new certificate: one trusting only the first CA is refused.
    let old_trust = call_over_tls(address, first.certificate_pem(), None).await;
    assert!(old_trust.is_err(), "{old_trust:?}");
    // The connection made before the reload is still served.
    add_one(open, "after").await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_bad_new_file_keeps_the_certificate_in_use() {
    let directory = tempfile::tempdir().unwrap();
    let authority = CertificateAuthority::new("test CA").unwrap();
    let files = write_server_files(directory.path(), &authority, None);
    let server = Secured::start(files.clone()).await;
    let ca = authority.certificate_pem();
    call_over_tls(server.command_addr, ca, None).await.unwrap();

    // Not PEM at all.
    std::fs::write(&files.cert, "not a certificate\n").unwrap();
    match server.tls.reload() {
        Err(TlsError::File { path, .. }) => assert_eq!(path, files.cert),
        other => panic!("expected an error naming the certificate file: {other:?}"),
    }
    // The key of another certificate.
    let other = authority.server(&hosts()).unwrap();
    let server_cert = authority.server(&hosts()).unwrap();
    std::fs::write(&files.cert, &server_cert.certificate_pem).unwrap();
    std::fs::write(&files.key, &other.key_pem).unwrap();
    match server.tls.reload() {
        Err(TlsError::File { path, problem }) => {
            assert_eq!(path, files.key);
            assert!(problem.contains("is not the key of"), "{problem}");
        }
        other => panic!("expected an error naming the key file: {other:?}"),
    }
    // A file that went missing.
    std::fs::remove_file(&files.key).unwrap();
    assert!(matches!(server.tls.reload(), Err(TlsError::File { path, .. }) if path == files.key));
    // Through all of it, and after the watcher has seen the changes, clients are served with
    // the certificate loaded at the start.
    tokio::time::sleep(inventory::grpc::tls::RELOAD_POLL_INTERVAL * 2).await;
    call_over_tls(server.command_addr, ca, None).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_server_does_not_start_on_unusable_files() {
    let directory = tempfile::tempdir().unwrap();
    let authority = CertificateAuthority::new("test CA").unwrap();
    let files = write_server_files(directory.path(), &authority, None);
    let missing = TlsFiles {
        cert: directory.path().join("nowhere.pem"),
        ..files.clone()
    };
    let error = ServerTls::start(missing)
        .err()
        .expect("a missing file fails");
    assert!(error.to_string().contains("nowhere.pem"), "{error}");
    let swapped = TlsFiles {
        cert: files.key.clone(),
        key: files.cert.clone(),
        client_ca: None,
    };
    let error = ServerTls::start(swapped).err().expect("swapped files fail");
    assert!(error.to_string().contains("server.key"), "{error}");
}

// --- The binary -------------------------------------------------------------------------

use support::inventory;

fn generate(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut arguments = vec!["cert", "generate", "--out", out.to_str().unwrap()];
    arguments.extend_from_slice(extra);
    inventory(&arguments)
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[test]
fn cert_generate_writes_a_ca_a_server_and_clients_and_overwrites_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("certs");
    let made = generate(&out, &["--client", "pos-a", "--host", "inventory.internal"]);
    assert!(made.status.success(), "{made:?}");
    for name in ["ca", "server", "pos-a"] {
        assert!(read(out.join(format!("{name}.pem"))).contains("BEGIN CERTIFICATE"));
        let key = out.join(format!("{name}.key"));
        assert!(read(key.clone()).contains("PRIVATE KEY"));
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode,
            0o600,
            "{} is readable by its owner only",
            key.display()
        );
    }
    // Again into the same folder: refused, and nothing changed.
    let ca_before = read(out.join("ca.pem"));
    let again = generate(&out, &["--client", "pos-b"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists"),
        "{again:?}"
    );
    assert_eq!(read(out.join("ca.pem")), ca_before);
    assert!(!out.join("pos-b.pem").exists());
    // A client name that is not a plain file name.
    let bad = generate(&directory.path().join("other"), &["--client", "../x"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--client"));
}

/// The certificates `inventory cert generate` makes, as a client holds them.
struct Generated {
    out: PathBuf,
}

impl Generated {
    fn new(directory: &Path, clients: &[&str]) -> Generated {
        let out = directory.join("certs");
        let mut extra = Vec::new();
        for client in clients {
            extra.extend(["--client", client]);
        }
        let made = generate(&out, &extra);
        assert!(made.status.success(), "{made:?}");
        Generated { out }
    }

    fn path(&self, name: &str) -> String {
        self.out.join(name).to_str().unwrap().to_owned()
    }

    fn ca(&self) -> String {
        read(self.out.join("ca.pem"))
    }

    fn identity(&self, name: &str) -> CertifiedKey {
        CertifiedKey {
            certificate_pem: read(self.out.join(format!("{name}.pem"))),
            key_pem: read(self.out.join(format!("{name}.key"))),
        }
    }
}

#[tokio::test]
async fn the_binary_serves_mutual_tls_from_the_config_file_and_reloads_on_sighup() {
    let directory = tempfile::tempdir().unwrap();
    let certs = Generated::new(directory.path(), &["pos-a"]);
    let config = directory.path().join("inventory.toml");
    std::fs::write(
        &config,
        format!(
            "log = \"{}\"\ncommand_addr = \"127.0.0.1:0\"\nquery_addr = \"127.0.0.1:0\"\n\
             \n[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
            directory.path().join("data").display(),
            certs.path("server.pem"),
            certs.path("server.key"),
            certs.path("ca.pem"),
        ),
    )
    .unwrap();
    let process = Process::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &["command", "query", "metrics"],
    )
    .await;
    let ca = certs.ca();
    let pos = certs.identity("pos-a");
    call_over_tls(process.address("command"), &ca, Some(&pos))
        .await
        .unwrap();
    let without = call_over_tls(process.address("command"), &ca, None).await;
    assert!(without.is_err(), "{without:?}");

    // SIGHUP reloads the files even when they look unchanged.
    let metrics = process.address("metrics");
    assert_eq!(reloads(metrics, "ok").await, 0.0);
    let pid = process.child.id().unwrap().to_string();
    let hangup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hangup.success());
    let started = Instant::now();
    while reloads(metrics, "ok").await < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no reload after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still running and serving.
    healthy_over_tls(process.address("query"), &ca, Some(&pos))
        .await
        .unwrap();
    call_over_tls(process.address("command"), &ca, Some(&pos))
        .await
        .unwrap();
}

async fn reloads(metrics: SocketAddr, result: &str) -> f64 {
    let samples = support::scrape(metrics).await;
    let series = format!("inventory_tls_reloads_total{{result=\"{result}\"}}");
    samples.get(&series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn a_follower_replicates_over_tls_and_serves_tls_itself() {
    let directory = tempfile::tempdir().unwrap();
    let certs = Generated::new(directory.path(), &[]);
    let data = directory.path().join("data");
    let tls_flags = [
        "--tls-cert",
        &certs.path("server.pem"),
        "--tls-key",
        &certs.path("server.key"),
    ]
    .map(str::to_owned);
    let mut arguments = vec!["command", "--command-addr", "127.0.0.1:0", "--log"];
    arguments.push(data.to_str().unwrap());
    arguments.extend(tls_flags.iter().map(String::as_str));
    let command = Process::start(&arguments, &["command"]).await;
    let ca = certs.ca();
    let channel = tls_channel(command.address("command"), &ca, None)
        .await
        .unwrap();
    CommandServiceClient::new(channel)
        .add_stock(add_stock("p", "store-a", 5))
        .await
        .unwrap();

    let upstream = format!("https://localhost:{}", command.address("command").port());
    let replica_data = directory.path().join("replica");
    let mut arguments = vec![
        "query",
        "--query-addr",
        "127.0.0.1:0",
        "--follow",
        &upstream,
        "--data",
    ];
    arguments.push(replica_data.to_str().unwrap());
    let upstream_ca = certs.path("ca.pem");
    arguments.extend(["--upstream-ca", &upstream_ca]);
    arguments.extend(tls_flags.iter().map(String::as_str));
    let replica = Process::start(&arguments, &["query"]).await;
    let address = replica.address("query");
    eventually(Duration::from_secs(20), async || {
        let channel = tls_channel(address, &ca, None).await?;
        let stock = QueryServiceClient::new(channel)
            .get_stock(get_stock("p", "store-a", 1))
            .await
            .map_err(|status| status.to_string())?
            .into_inner();
        match stock.item.and_then(|item| item.stock) {
            Some(stock) if stock.on_hand == 5 => Ok(()),
            other => Err(format!("stock {other:?}")),
        }
    })
    .await;

    // An https:// upstream without its CA, or a CA for a plain upstream, is refused at start.
    let no_ca = inventory(&[
        "query",
        "--query-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "off",
        "--follow",
        &upstream,
        "--data",
        directory.path().join("r2").to_str().unwrap(),
    ]);
    assert!(!no_ca.status.success());
    assert!(
        String::from_utf8_lossy(&no_ca.stderr).contains("--upstream-ca"),
        "{no_ca:?}"
    );
}

#[test]
fn a_tls_or_certificate_section_with_a_missing_part_or_an_unknown_key_is_refused_naming_the_key() {
    let directory = tempfile::tempdir().unwrap();
    for (section, key) in [
        ("[tls]\ncert = \"server.pem\"\n", "tls.key"),
        ("[tls]\nkey = \"server.key\"\n", "tls.cert"),
        ("[tls]\nclient_ca = \"ca.pem\"\n", "tls.cert"),
        (
            "[tls]\ncert = \"a\"\nkey = \"b\"\nca_file = \"c\"\n",
            "ca_file",
        ),
        (
            "[[auth.certificates]]\ncommon_name = \"system\"\nrole = \"admin\"\n",
            "auth.certificates[0].common_name",
        ),
        (
            "[[auth.certificates]]\ncommon_name = \"pos-a\"\nrole = \"sales\"\nstores = [\"\"]\n",
            "auth.certificates[0].stores[0]",
        ),
        (
            "[[auth.certificates]]\ncommon_name = \"pos-a\"\nrole = \"sales\"\nsubject = \"x\"\n",
            "subject",
        ),
        // A certificate as a credential needs client certificates: mutual TLS.
        (
            "[[auth.certificates]]\ncommon_name = \"pos-a\"\nrole = \"sales\"\n",
            "client_ca",
        ),
    ] {
        let config = directory.path().join("bad.toml");
        std::fs::write(&config, section).unwrap();
        let output = inventory(&["--config", config.to_str().unwrap()]);
        assert!(!output.status.success(), "{section}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{section}: {stderr}");
    }
}
