//! TLS on the servers' connections, with certificates swapped without a restart.
//!
//! tonic's own `ServerTlsConfig` fixes the certificate when the server starts, so the servers
//! do the handshake themselves (rustls, through tokio-rustls, on the ring provider) and hand
//! tonic the decrypted stream. [`ServerTls`] holds the current rustls configuration; a
//! background task re-reads the files when they change (polled every
//! [`RELOAD_POLL_INTERVAL`]) or on SIGHUP. A new configuration replaces the old only when
//! every file parses and the key matches the certificate: a bad file keeps the old one, with
//! the error logged and counted (`inventory_tls_reloads_total{result="error"}`). Connections
//! already open keep the certificate they were made with.
//!
//! With `client_ca`, a client must present a certificate issued by that authority (mutual
//! TLS); its subject's common name is the connection's [`ConnectionInfo::client_name`].

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;

use super::connection_guard::ConnectionGuard;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::overload::LimitedConnection;

/// How often the certificate files are checked for changes.
pub const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The longest a client may take to finish its handshake; a slower one is disconnected, so
/// that idle half-open connections cannot hold connection slots.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for tonic to take them.
const HANDSHAKES_QUEUED: usize = 64;

/// The PEM files of a server's TLS configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// With it, clients must present a certificate issued by one of these authorities.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {problem}", path.display())]
    File { path: PathBuf, problem: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A server's TLS configuration, reloaded from its files while the server runs.
#[derive(Clone)]
pub struct ServerTls {
    shared: Arc<Shared>,
}

struct Shared {
    files: TlsFiles,
    config: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Reads the files and starts watching them. Must be called within a tokio runtime; the
    /// watcher stops when the last clone of the returned value is dropped.
    pub fn start(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let config = server_config(&files)?;
        let shared = Arc::new(Shared {
            files,
            config: RwLock::new(Arc::new(config)),
        });
        // Listening before this returns: a SIGHUP sent once the server is up must never meet
        // the default action, which ends the process.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .inspect_err(|error| {
                tracing::warn!(%error, "cannot listen for SIGHUP: TLS files reload on change only");
            })
            .ok();
        tokio::spawn(watch(Arc::downgrade(&shared), hangup));
        Ok(ServerTls { shared })
    }

    /// Re-reads the files now. On an error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let result = server_config(&self.shared.files);
        match &result {
            Ok(_) => {
                metrics::counter!("inventory_tls_reloads_total", "result" => "ok").increment(1);
                tracing::info!(cert = %self.shared.files.cert.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                metrics::counter!("inventory_tls_reloads_total", "result" => "error").increment(1);
                tracing::error!(%error, "TLS reload failed: the certificate in use stays");
            }
        }
        let config = result?;
        *self
            .shared
            .config
            .write()
            .expect("TLS config lock poisoned") = Arc::new(config);
        Ok(())
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.shared.files.client_ca.is_some()
    }

    /// An acceptor of the same certificate for an HTTP/1 endpoint (`/metrics`): it offers no
    /// ALPN protocol, so that a client speaks HTTP/1.1 rather than the servers' h2.
    pub fn http1_acceptor(&self) -> TlsAcceptor {
        let mut config =
            ServerConfig::clone(&self.shared.config.read().expect("TLS config lock poisoned"));
        config.alpn_protocols.clear();
        TlsAcceptor::from(Arc::new(config))
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.shared
                .config
                .read()
                .expect("TLS config lock poisoned")
                .clone(),
        )
    }
}

/// What a file looked like when it was last read: a change of either means it was rewritten.
type Stamp = Option<(SystemTime, u64)>;

fn stamps(files: &TlsFiles) -> [Stamp; 3] {
    let stamp = |path: Option<&Path>| {
        let metadata = std::fs::metadata(path?).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    };
    [
        stamp(Some(&files.cert)),
        stamp(Some(&files.key)),
        stamp(files.client_ca.as_deref()),
    ]
}

/// Reloads on SIGHUP, or when a file's modification time or length changed.
async fn watch(shared: Weak<Shared>, mut hangup: Option<tokio::signal::unix::Signal>) {
    let mut last = match shared.upgrade() {
        Some(shared) => stamps(&shared.files),
        None => return,
    };
    loop {
        let asked = tokio::select! {
            _ = tokio::time::sleep(RELOAD_POLL_INTERVAL) => false,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(hangup) => hangup.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = stamps(&shared.files);
        // A failed reload is not retried until a file changes again (or SIGHUP): one error
        // per bad edit, not one a second.
        if asked || now != last {
            last = now;
            let _ = ServerTls { shared }.reload();
        }
    }
}

fn file_error(path: &Path, problem: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, error))?;
    if certificates.is_empty() {
        return Err(file_error(path, "holds no PEM certificate"));
    }
    Ok(certificates)
}

/// The ring provider, the one in the tree (tonic's client uses it too).
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| {
        file_error(
            &files.key,
            format!("holds no usable PEM private key ({error})"),
        )
    })?;
    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path)? {
                roots
                    .add(certificate)
                    .map_err(|error| file_error(path, error))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| file_error(path, error))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => file_error(
                &files.key,
                format!("is not the key of {}", files.cert.display()),
            ),
            error => file_error(&files.cert, error),
        })?;
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// What the server knows of a connection's peer.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub tcp: TcpConnectInfo,
    /// Under mutual TLS, the common name of the client certificate's subject (or the whole
    /// subject when it has none).
    pub client_name: Option<Arc<str>>,
    /// What the connection may hold without using it.
    pub guard: Arc<ConnectionGuard>,
}

/// An accepted connection, in plain text or after its TLS handshake.
pub enum Connection {
    Plain(LimitedConnection),
    Tls(Box<tokio_rustls::server::TlsStream<LimitedConnection>>),
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        match self {
            Connection::Plain(connection) => ConnectionInfo {
                tcp: connection.connect_info(),
                client_name: None,
                guard: connection.guard(),
            },
            Connection::Tls(stream) => {
                let (connection, session) = stream.get_ref();
                ConnectionInfo {
                    tcp: connection.connect_info(),
                    guard: connection.guard(),
                    client_name: session
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|leaf| subject_name(leaf)),
                }
            }
        }
    }
}

fn subject_name(certificate: &CertificateDer<'_>) -> Option<Arc<str>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| subject.to_string());
    Some(name.into())
}

/// Forwards each poll to whichever connection this is.
macro_rules! delegate {
    ($self:ident, $connection:ident => $call:expr) => {
        match $self.get_mut() {
            Connection::Plain($connection) => {
                let $connection = Pin::new($connection);
                $call
            }
            Connection::Tls(stream) => {
                let $connection = Pin::new(stream.as_mut());
                $call
            }
        }
    };
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, connection => connection.poll_read(context, buffer))
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, connection => connection.poll_write(context, buffer))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, connection => connection.poll_write_vectored(context, buffers))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Connection::Plain(connection) => connection.is_write_vectored(),
            Connection::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, connection => connection.poll_flush(context))
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, connection => connection.poll_shutdown(context))
    }
}

/// The connections to serve: `connections` as they are without TLS, or each after its
/// handshake. Handshakes run in their own tasks, so a slow client delays no other; one that
/// fails or takes over [`HANDSHAKE_TIMEOUT`] is closed and counted in
/// `inventory_tls_handshake_failures_total`.
pub fn secured(
    server: &'static str,
    connections: impl Stream<Item = io::Result<LimitedConnection>> + Send + 'static,
    tls: Option<ServerTls>,
) -> Pin<Box<dyn Stream<Item = io::Result<Connection>> + Send>> {
    let Some(tls) = tls else {
        return Box::pin(connections.map(|connection| connection.map(Connection::Plain)));
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(HANDSHAKES_QUEUED);
    let failures = metrics::counter!("inventory_tls_handshake_failures_total", "server" => server);
    tokio::spawn(async move {
        let mut connections = std::pin::pin!(connections);
        loop {
            // The listener is dropped as soon as the server stops taking connections.
            let next = tokio::select! {
                next = connections.next() => next,
                () = sender.closed() => return,
            };
            let connection = match next {
                None => return,
                Some(Err(error)) => {
                    if sender.send(Err(error)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(Ok(connection)) => connection,
            };
            let acceptor = tls.acceptor();
            let sender = sender.clone();
            let failures = failures.clone();
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(connection)).await;
                match handshake {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(Connection::Tls(Box::new(stream)))).await;
                    }
                    Ok(Err(error)) => {
                        failures.increment(1);
                        tracing::debug!(%error, "TLS handshake failed");
                    }
                    Err(_) => {
                        failures.increment(1);
                        tracing::debug!("TLS handshake timed out");
                    }
                }
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::CertificateAuthority;
    use rustls_pki_types::ServerName;

    fn write(directory: &Path, name: &str, text: &str) -> PathBuf {
        let path = directory.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[tokio::test]
    async fn a_client_certificate_names_the_connection_s_principal() {
        let directory = tempfile::tempdir().unwrap();
        let authority = CertificateAuthority::new("test CA").unwrap();
        let server = authority
            .server(&["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
        let files = TlsFiles {
            cert: write(directory.path(), "server.pem", &server.certificate_pem),
            key: write(directory.path(), "server.key", &server.key_pem),
            client_ca: Some(write(
                directory.path(),
                "ca.pem",
                authority.certificate_pem(),
            )),
        };
        let tls = ServerTls::start(files).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut connections = secured(
            "test",
            super::super::overload::incoming(
                "test",
                listener,
                8,
                super::super::connection_guard::ConnectionTimeouts::DEFAULT,
            ),
            Some(tls),
        );

        let client = authority.client("pos-a").unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(authority.certificate_pem().as_bytes()).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(client.certificate_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let handshake = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
            connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap()
        });
        let accepted = tokio::time::timeout(Duration::from_secs(10), connections.next())
            .await
            .expect("the handshake finishes")
            .unwrap()
            .unwrap();
        assert!(matches!(accepted, Connection::Tls(_)));
        let info = accepted.connect_info();
        assert_eq!(info.client_name.as_deref(), Some("pos-a"));
        assert_eq!(info.tcp.local_addr(), Some(address));
        let _client = handshake.await.unwrap();
    }
}
