//! The server under test: the `inventory` binary started as a child process on ports chosen by
//! the kernel, with a fresh data directory, and the figures read from outside it (CPU time and
//! RSS from `/proc`, counters from its Prometheus endpoint).

use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::BenchError;
use crate::machine;

/// How long a started server may take to print its addresses.
const LISTENING_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a server may take to replay its log and answer its first health check. Replaying
/// ten million events at the target speed takes ten seconds; this is far above it.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// How the bench's servers are secured while a pass runs: TLS with a certificate of a CA made
/// for the run, and `[[auth.tokens]]` with one admin token that every request sends (its rate
/// limits checked on every request, and set far above the bench's rate).
pub struct Security {
    ca: Certificate,
    /// `Bearer <token>`.
    authorization: AsciiMetadataValue,
    cert: PathBuf,
    key: PathBuf,
    config: PathBuf,
    _files: DataDir,
}

/// The security of the pass that runs: `None` is plain text without a credential.
static SECURITY: RwLock<Option<Arc<Security>>> = RwLock::new(None);

impl Security {
    /// A CA, a certificate for `localhost` and an admin token, in a directory of their own.
    pub fn create(data_root: &Path) -> Result<Security, BenchError> {
        let files = DataDir::create(data_root, "security")?;
        let failed = |what: &str| {
            let what = what.to_owned();
            move |error: inventory::certificates::CertificateError| {
                BenchError::Invalid(format!("cannot make the {what}: {error}"))
            }
        };
        let authority = inventory::certificates::CertificateAuthority::new("inventory-bench CA")
            .map_err(failed("CA"))?;
        let server = authority
            .server(&["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(failed("server certificate"))?;
        let (token, sha256) = inventory::app::access::new_token()
            .map_err(|_| BenchError::Invalid("the random generator failed".into()))?;
        let (cert, key, config) = (
            files.path.join("server.pem"),
            files.path.join("server.key"),
            files.path.join("inventory.toml"),
        );
        for (path, text) in [
            (&cert, server.certificate_pem.clone()),
            (&key, server.key_pem.clone()),
            (
                &config,
                // Rate limits on, as every token's, but far above what the bench sends: the
                // secured pass measures what checking them costs, not what they refuse.
                format!(
                    "[[auth.tokens]]\nname = \"bench\"\nsha256 = \"{sha256}\"\nrole = \"admin\"\n\
                     requests_per_second = 10000000\nlines_per_second = 100000000\n"
                ),
            ),
        ] {
            std::fs::write(path, text)
                .map_err(BenchError::io(format!("writing {}", path.display())))?;
        }
        let authorization = format!("Bearer {token}")
            .parse()
            .map_err(|_| BenchError::Invalid("a token that is no header value".into()))?;
        Ok(Security {
            ca: Certificate::from_pem(authority.certificate_pem()),
            authorization,
            cert,
            key,
            config,
            _files: files,
        })
    }

    /// Makes `security` the one every later connection and started server uses.
    pub fn apply(security: Option<Arc<Security>>) {
        *SECURITY
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = security;
    }

    fn current() -> Option<Arc<Security>> {
        SECURITY
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Adds the pass's `authorization` header to every request, when it has one.
#[derive(Clone)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// What every client of the bench sends through: a connection, over TLS with a token in a
/// secured pass.
pub type BenchChannel = InterceptedService<Channel, Bearer>;

/// A started `inventory serve` process. Killed (SIGKILL) when dropped; its data directory is
/// kept (a restart reuses it) until the [`DataDir`] is dropped.
pub struct ServerProcess {
    child: Child,
    pub command_addr: SocketAddr,
    pub query_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    spawned_at: Instant,
    /// From spawn to the last `listening` line (ports bound; the log is not replayed yet).
    pub listening_after: Duration,
}

impl ServerProcess {
    /// Starts the binary on `data_dir` and waits for the lines with its three addresses.
    pub async fn spawn(binary: &Path, data_dir: &Path) -> Result<ServerProcess, BenchError> {
        ServerProcess::spawn_with(binary, data_dir, &[]).await
    }

    /// [`ServerProcess::spawn`] with more arguments (a `--config` file).
    /// Over 70 lines: the process, then the wait for each line it prints at start-up.
    pub async fn spawn_with(
        binary: &Path,
        data_dir: &Path,
        arguments: &[&std::ffi::OsStr],
    ) -> Result<ServerProcess, BenchError> {
        let spawned_at = Instant::now();
        let mut child = Command::new(binary)
            .args([
                "serve",
                "--command-addr",
                "127.0.0.1:0",
                "--query-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(data_dir)
            .args(arguments)
            .args(Security::current().iter().flat_map(|security| {
                [
                    "--tls-cert".as_ref(),
                    security.cert.as_os_str(),
                    "--tls-key".as_ref(),
                    security.key.as_os_str(),
                    "--config".as_ref(),
                    security.config.as_os_str(),
                ]
                .map(std::ffi::OsStr::to_owned)
            }))
            .env("INVENTORY_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| BenchError::ServerBinary {
                path: binary.to_owned(),
                source,
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Server("has no stdout pipe".to_owned()))?;
        // A plain thread reads the pipe to its end, so the server never blocks on a full pipe.
        let (lines_sender, mut lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_sender.send(line).is_err() {
                    // Nobody listens any more; keep draining.
                    continue;
                }
            }
        });
        let (mut command_addr, mut query_addr, mut metrics_addr) = (None, None, None);
        let deadline = tokio::time::Instant::now() + LISTENING_TIMEOUT;
        while command_addr.is_none() || query_addr.is_none() || metrics_addr.is_none() {
            let line = tokio::time::timeout_at(deadline, lines.recv())
                .await
                .map_err(|_| BenchError::Server("did not print its addresses in time".into()))?
                .ok_or_else(|| BenchError::Server("exited before it listened".into()))?;
            let address = line
                .rsplit(' ')
                .next()
                .and_then(|text| text.parse::<SocketAddr>().ok());
            if line.starts_with("command server listening on") {
                command_addr = address;
            } else if line.starts_with("query server listening on") {
                query_addr = address;
            } else if line.starts_with("metrics listening on") {
                metrics_addr = address;
            }
        }
        let listening_after = spawned_at.elapsed();
        let missing = || BenchError::Server("printed an address that does not parse".into());
        Ok(ServerProcess {
            child,
            command_addr: command_addr.ok_or_else(missing)?,
            query_addr: query_addr.ok_or_else(missing)?,
            metrics_addr: metrics_addr.ok_or_else(missing)?,
            spawned_at,
            listening_after,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the command server answers a health check, which it does only after the
    /// whole log is replayed; returns the time from spawn to that answer (the start-up time).
    /// The `listening` lines come earlier: the ports are bound before the replay.
    pub async fn wait_ready(&self) -> Result<Duration, BenchError> {
        // One request that waits in the listen backlog until the server starts serving, so
        // the time has no polling interval in it.
        let channel = lazy_channel(self.command_addr)?;
        let mut health = HealthClient::new(channel);
        tokio::time::timeout(
            READY_TIMEOUT,
            health.check(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await
        .map_err(|_| BenchError::Server("did not answer a health check in time".into()))?
        .map_err(BenchError::rpc("the first health check"))?;
        Ok(self.spawned_at.elapsed())
    }

    /// Kills the server (SIGKILL; every acknowledged command is durable, so nothing of the
    /// data set is lost) and waits for it to exit.
    pub fn stop(mut self) -> Result<(), BenchError> {
        self.kill_and_wait()
    }

    fn kill_and_wait(&mut self) -> Result<(), BenchError> {
        if self
            .child
            .try_wait()
            .map_err(BenchError::io("checking the server"))?
            .is_none()
        {
            self.child
                .kill()
                .map_err(BenchError::io("killing the server"))?;
        }
        self.child
            .wait()
            .map_err(BenchError::io("waiting for the server"))?;
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Err(error) = self.kill_and_wait() {
            eprintln!("inventory-bench: {error}");
        }
    }
}

/// A fresh data directory under the data root, removed when dropped.
pub struct DataDir {
    pub path: PathBuf,
}

impl DataDir {
    pub fn create(data_root: &Path, label: &str) -> Result<DataDir, BenchError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let number = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = data_root.join(format!(
            "inventory-bench-{}-{number}-{label}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .map_err(BenchError::io(format!("creating {}", path.display())))?;
        Ok(DataDir { path })
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            eprintln!(
                "inventory-bench: cannot remove {}: {error}",
                self.path.display()
            );
        }
    }
}

/// The endpoint of `address` in the pass's security.
fn endpoint(address: SocketAddr) -> Result<(Endpoint, Bearer), BenchError> {
    let security = Security::current();
    let scheme = if security.is_some() { "https" } else { "http" };
    let connect_error = |source| BenchError::Connect { address, source };
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{address}")).map_err(connect_error)?;
    if let Some(security) = &security {
        endpoint = endpoint
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(security.ca.clone())
                    .domain_name("localhost"),
            )
            .map_err(connect_error)?;
    }
    let bearer = Bearer(security.map(|security| security.authorization.clone()));
    Ok((endpoint, bearer))
}

/// A channel that connects on first use (and reconnects after a failure).
pub fn lazy_channel(address: SocketAddr) -> Result<BenchChannel, BenchError> {
    let (endpoint, bearer) = endpoint(address)?;
    Ok(InterceptedService::new(endpoint.connect_lazy(), bearer))
}

/// A connected channel: one HTTP/2 connection.
pub async fn connect(address: SocketAddr) -> Result<BenchChannel, BenchError> {
    let (endpoint, bearer) = endpoint(address)?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| BenchError::Connect { address, source })?;
    Ok(InterceptedService::new(channel, bearer))
}

/// Where the bench reads server-side figures from, when it can.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerProbe {
    pub pid: Option<u32>,
    pub metrics_addr: Option<SocketAddr>,
}

/// The server-side figures at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerSnapshot {
    pub cpu_ticks: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub log_appends: Option<f64>,
    pub log_events: Option<f64>,
}

impl ServerProbe {
    pub async fn snapshot(&self) -> Result<ServerSnapshot, BenchError> {
        let mut snapshot = ServerSnapshot::default();
        if let Some(pid) = self.pid {
            snapshot.cpu_ticks = Some(machine::cpu_ticks(pid)?);
            snapshot.rss_bytes = Some(machine::resident_bytes(pid)?);
        }
        if let Some(address) = self.metrics_addr {
            let samples = scrape_metrics(address).await?;
            snapshot.log_appends = samples.get("inventory_log_appends_total").copied();
            snapshot.log_events = samples.get("inventory_log_events_appended_total").copied();
        }
        Ok(snapshot)
    }
}

/// `GET /metrics` over plain HTTP/1.0: each sample's series (name and labels) and value.
pub async fn scrape_metrics(address: SocketAddr) -> Result<HashMap<String, f64>, BenchError> {
    let problem = |problem: String| BenchError::Metrics { address, problem };
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|error| problem(error.to_string()))?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .map_err(|error| problem(error.to_string()))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|error| problem(error.to_string()))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| problem("not an HTTP response".to_owned()))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(problem(format!(
            "answered {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect())
}
