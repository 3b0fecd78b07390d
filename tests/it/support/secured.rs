//! A server with authentication, for the tests of tokens, JWTs and roles: started in-process on
//! `127.0.0.1:0` with the credentials a test gives, and clients that send a bearer token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Request};

use inventory::app::access::{
    ApiToken, Authenticator, Principal, Quota, Role, StoreScope, new_token, parse_sha256,
};
use inventory::app::{Clock, ShutdownSignal, SystemClock};
use inventory::certificates::CertificateAuthority;
use inventory::domain::StoreId;
use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::grpc::pb::event_service_client::EventServiceClient;
use inventory::grpc::pb::query_service_client::QueryServiceClient;
use inventory::grpc::tls::{ServerTls, TlsFiles};
use inventory::server::{self, CommandConfig, Limits, LogConfig, ServerError, ServerListener};

use super::{error_reason, get_stock};

/// A credential made for a test: its token and what it is configured as.
pub struct Credential {
    pub token: String,
    pub entry: ApiToken,
}

pub fn credential(
    name: &str,
    role: Role,
    stores: &[&str],
    max_in_flight: Option<usize>,
) -> Credential {
    let (token, sha256) = new_token().unwrap();
    Credential {
        token,
        entry: ApiToken {
            sha256: parse_sha256(&sha256).unwrap(),
            principal: Principal {
                name: name.into(),
                role,
                stores: StoreScope::of(stores.iter().map(|store| StoreId::parse(store).unwrap())),
            },
            max_in_flight,
            quota: Quota::default(),
        },
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn as_<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Both servers in one process on `127.0.0.1:0`, on an embedded log in a temporary folder,
/// with the TLS and the credentials given: what every secured test server is.
pub struct Guarded {
    pub command_addr: SocketAddr,
    pub query_addr: SocketAddr,
    signal: ShutdownSignal,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
    data: tempfile::TempDir,
}

impl Guarded {
    pub async fn start(
        tls: Option<ServerTls>,
        auth: Option<Arc<Authenticator>>,
        clock: Arc<dyn Clock>,
    ) -> Guarded {
        Guarded::start_with_limits(tls, auth, clock, Limits::default()).await
    }

    pub async fn start_with_limits(
        tls: Option<ServerTls>,
        auth: Option<Arc<Authenticator>>,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Guarded {
        let data = tempfile::tempdir().unwrap();
        let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
        let (command, query) = (bind().await, bind().await);
        let (command_addr, query_addr) =
            (command.local_addr().unwrap(), query.local_addr().unwrap());
        let listener = |tcp| ServerListener {
            tcp,
            tls: tls.clone(),
            auth: auth.clone(),
        };
        let (signal, shutdown) = ShutdownSignal::new();
        let config = CommandConfig {
            log: LogConfig::Embedded {
                data_dir: data.path().to_owned(),
            },
            clock,
            limits,
            sinks: Vec::new(),
            snapshots: inventory::app::snapshot::SnapshotPolicy::DEFAULT,
        };
        let task = tokio::spawn(server::run_combined(
            config,
            listener(command),
            listener(query),
            shutdown,
        ));
        Guarded {
            command_addr,
            query_addr,
            signal,
            task,
            data,
        }
    }

    /// Stops the servers (within 10 s) and hands over the data directory, which lives as long
    /// as the result.
    pub async fn stop_keeping_data(self) -> tempfile::TempDir {
        self.signal.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within 10 s")
            .unwrap()
            .unwrap();
        self.data
    }
}

/// Both servers with API tokens (over TLS or not), and a channel to each.
pub struct Server {
    pub command: Channel,
    pub query: Channel,
    servers: Guarded,
    /// The TLS files, when the server has TLS: they live as long as the server.
    _tls: Option<tempfile::TempDir>,
    /// The PEM certificate of the CA that issued the server's, when it has TLS.
    pub ca_pem: Option<String>,
    pub command_addr: SocketAddr,
}

impl Server {
    pub async fn start(credentials: &[&Credential]) -> Server {
        Server::start_with_clock(credentials, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(credentials: &[&Credential], clock: Arc<dyn Clock>) -> Server {
        let authenticator =
            Authenticator::new(credentials.iter().map(|c| c.entry.clone()).collect());
        Server::start_with(authenticator, clock).await
    }

    pub async fn start_with(authenticator: Authenticator, clock: Arc<dyn Clock>) -> Server {
        let servers = Guarded::start(None, Some(Arc::new(authenticator)), clock).await;
        Server {
            command: super::channel(servers.command_addr).await,
            query: super::channel(servers.query_addr).await,
            command_addr: servers.command_addr,
            servers,
            _tls: None,
            ca_pem: None,
        }
    }

    /// Both servers on TLS (a certificate for 127.0.0.1 from a CA made here) with API tokens,
    /// and channels over TLS: the deployment README describes.
    pub async fn start_tls(credentials: &[&Credential]) -> Server {
        Server::start_tls_with(credentials, Limits::default()).await
    }

    /// [`Server::start_tls`] with `limits`.
    pub async fn start_tls_with(credentials: &[&Credential], limits: Limits) -> Server {
        let authenticator =
            Authenticator::new(credentials.iter().map(|c| c.entry.clone()).collect());
        let folder = tempfile::tempdir().unwrap();
        let authority = CertificateAuthority::new("test CA").unwrap();
        let server = authority.server(&["127.0.0.1".to_owned()]).unwrap();
        let files = TlsFiles {
            cert: folder.path().join("server.pem"),
            key: folder.path().join("server.key"),
            client_ca: None,
        };
        std::fs::write(&files.cert, &server.certificate_pem).unwrap();
        std::fs::write(&files.key, &server.key_pem).unwrap();
        let tls = ServerTls::start(files).unwrap();
        let servers = Guarded::start_with_limits(
            Some(tls),
            Some(Arc::new(authenticator)),
            Arc::new(SystemClock),
            limits,
        )
        .await;
        Server {
            command: tls_channel(servers.command_addr, authority.certificate_pem()).await,
            query: tls_channel(servers.query_addr, authority.certificate_pem()).await,
            command_addr: servers.command_addr,
            servers,
            _tls: Some(folder),
            ca_pem: Some(authority.certificate_pem().to_owned()),
        }
    }

    pub fn commands(&self) -> CommandServiceClient<Channel> {
        CommandServiceClient::new(self.command.clone())
    }

    pub fn queries(&self) -> QueryServiceClient<Channel> {
        QueryServiceClient::new(self.query.clone())
    }

    pub fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(self.command.clone())
    }

    /// The stock of an item as an unrestricted credential sees it: (on hand, reserved).
    pub async fn stock(&self, admin: &Credential, product: &str, store: &str) -> (i64, i64) {
        match self
            .queries()
            .get_stock(as_(&admin.token, get_stock(product, store, 0)))
            .await
        {
            Ok(answer) => {
                let stock = answer.into_inner().item.unwrap().stock.unwrap();
                (stock.on_hand, stock.reserved)
            }
            Err(status) if status.code() == Code::NotFound => (0, 0),
            Err(status) => panic!("{status:?}"),
        }
    }

    /// The first page of an item's history, as an unrestricted credential sees it.
    pub async fn history(
        &self,
        admin: &Credential,
        product: &str,
        store: &str,
    ) -> Vec<pb::InventoryEvent> {
        let request = pb::GetHistoryRequest {
            product_id: product.into(),
            store_id: store.into(),
            ..Default::default()
        };
        self.queries()
            .get_history(as_(&admin.token, request))
            .await
            .unwrap()
            .into_inner()
            .events
    }

    pub async fn stop(self) {
        self.stop_keeping_data().await;
    }

    /// Stops the server and hands over its data directory, which lives as long as the result.
    pub async fn stop_keeping_data(self) -> tempfile::TempDir {
        self.servers.stop_keeping_data().await
    }
}

/// A channel over TLS to `address`, trusting `ca_pem`.
pub async fn tls_channel(address: SocketAddr, ca_pem: &str) -> Channel {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    Channel::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

pub fn assert_refused(status: &tonic::Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(error_reason(status), reason, "{status:?}");
}
