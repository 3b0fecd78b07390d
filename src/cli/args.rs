//! The flags that several modes share: where the log is, the limits, TLS and the metrics
//! endpoint, and how a listener is made from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::app::access::Authenticator;
use crate::app::snapshot::SnapshotPolicy;
use crate::grpc::tls::{ServerTls, TlsFiles};
use crate::server::{ConnectionTimeouts, Limits, LogConfig, ServerListener};

/// Where the Prometheus metrics endpoint listens, if anywhere.
#[derive(Clone, Copy, Debug)]
pub(super) enum MetricsAddr {
    Off,
    On(SocketAddr),
}

pub(super) fn parse_metrics_addr(text: &str) -> Result<MetricsAddr, String> {
    if text == "off" {
        return Ok(MetricsAddr::Off);
    }
    text.parse()
        .map(MetricsAddr::On)
        .map_err(|error| format!("{error} (expected an address such as 127.0.0.1:9464, or off)"))
}

#[derive(clap::Args, Debug)]
pub(super) struct LogArgs {
    /// The event log: a directory for the embedded log (created if missing), or a
    /// postgres:// URL for a log shared by several servers.
    #[arg(
        long = "log",
        visible_alias = "data",
        env = "INVENTORY_EVENT_LOG",
        hide_env_values = true,
        default_value = "./data"
    )]
    pub(super) target: String,
    /// Schema of the PostgreSQL log (several logs can share one database).
    #[arg(long, env = "INVENTORY_PG_SCHEMA", default_value = "inventory")]
    pub(super) pg_schema: String,
}

/// `[snapshots]`: when the embedded log's state is written as a snapshot (docs/operations.md).
#[derive(clap::Args, Debug, Clone, Copy)]
pub(super) struct SnapshotArgs {
    /// Events appended between two snapshots of the embedded log's state, taken in the
    /// background; 0: only at a clean shutdown.
    #[arg(long, env = "INVENTORY_SNAPSHOT_EVERY_EVENTS", default_value_t = SnapshotPolicy::DEFAULT.every_events)]
    pub(super) snapshot_every_events: u64,
    /// Snapshots kept (the newest); 0: none written or loaded, every start replays the log.
    #[arg(long, env = "INVENTORY_SNAPSHOT_KEEP", default_value_t = SnapshotPolicy::DEFAULT.keep)]
    pub(super) snapshot_keep: usize,
}

impl SnapshotArgs {
    pub(super) fn policy(self) -> SnapshotPolicy {
        SnapshotPolicy {
            every_events: self.snapshot_every_events,
            keep: self.snapshot_keep,
        }
    }
}

#[derive(clap::Args, Debug, Clone, Copy)]
pub(super) struct LimitArgs {
    /// Requests a server works on at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "INVENTORY_MAX_IN_FLIGHT", default_value_t = crate::grpc::overload::MAX_IN_FLIGHT_REQUESTS)]
    pub(super) max_in_flight: usize,
    /// Client connections a server keeps open at once; more are closed when accepted.
    #[arg(long, env = "INVENTORY_MAX_CONNECTIONS", default_value_t = crate::grpc::overload::MAX_CONNECTIONS)]
    pub(super) max_connections: usize,
    /// Seconds a new connection has to send its first request with a valid credential; until
    /// then it holds one of at most half the --max-connections slots.
    #[arg(long, env = "INVENTORY_FIRST_REQUEST_TIMEOUT", default_value_t = ConnectionTimeouts::DEFAULT.first_request.as_secs())]
    pub(super) first_request_timeout: u64,
    /// Seconds a connection may stay open with no request in progress (an open subscription is
    /// one); dead peers are found sooner, by HTTP/2 pings.
    #[arg(long, env = "INVENTORY_IDLE_TIMEOUT", default_value_t = ConnectionTimeouts::DEFAULT.idle.as_secs())]
    pub(super) idle_timeout: u64,
}

impl LimitArgs {
    pub(super) fn limits(self) -> Limits {
        Limits {
            max_in_flight_requests: self.max_in_flight.max(1),
            max_connections: self.max_connections.max(1),
            connection_timeouts: ConnectionTimeouts {
                first_request: std::time::Duration::from_secs(self.first_request_timeout.max(1)),
                idle: std::time::Duration::from_secs(self.idle_timeout.max(1)),
            },
            ..Limits::default()
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub(super) struct TlsArgs {
    /// TLS: the server's PEM certificate chain (with --tls-key). Reloaded when the file
    /// changes or on SIGHUP.
    #[arg(long, env = "INVENTORY_TLS_CERT", requires = "tls_key")]
    pub(super) tls_cert: Option<PathBuf>,
    /// TLS: the PEM private key of --tls-cert.
    #[arg(long, env = "INVENTORY_TLS_KEY", requires = "tls_cert")]
    pub(super) tls_key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate issued by a CA in this PEM file.
    #[arg(long, env = "INVENTORY_TLS_CLIENT_CA", requires = "tls_cert")]
    pub(super) tls_client_ca: Option<PathBuf>,
    /// Listen beyond loopback without TLS and authentication anyway (a warning is logged at
    /// start and every hour). Without it such a server refuses to start.
    #[arg(long, env = "INVENTORY_INSECURE")]
    pub(super) insecure: bool,
}

/// How often a server listening beyond loopback without TLS and authentication says so.
pub(super) const INSECURE_WARNING_INTERVAL: std::time::Duration =
    std::time::Duration::from_secs(3600);

impl TlsArgs {
    /// Refuses to serve `addresses` beyond loopback without both TLS and authentication,
    /// unless `--insecure` was given; then warns now and every hour.
    pub(super) fn check_exposure(
        &self,
        addresses: &[SocketAddr],
        auth: &Option<Arc<Authenticator>>,
    ) -> Result<(), String> {
        let tls = self.tls_cert.is_some() && self.tls_key.is_some();
        if auth.as_ref().is_some_and(|auth| auth.names_certificates())
            && self.tls_client_ca.is_none()
        {
            return Err(
                "[[auth.certificates]] names clients by their certificate: it needs mutual TLS \
                 ([tls] client_ca, or --tls-client-ca)"
                    .into(),
            );
        }
        let exposed: Vec<String> = addresses
            .iter()
            .filter(|address| !address.ip().is_loopback())
            .map(ToString::to_string)
            .collect();
        let unsigned = auth
            .as_ref()
            .is_some_and(|auth| auth.accepts_unsigned_jwts());
        if !exposed.is_empty() && unsigned && !self.insecure {
            return Err(format!(
                "refusing to listen on {} with [auth.jwt] algorithms listing \"none\": anyone \
                 who reaches it could claim any role. Remove \"none\", listen on 127.0.0.1 only, \
                 or pass --insecure (INVENTORY_INSECURE=true) to serve anyway",
                exposed.join(", ")
            ));
        }
        if exposed.is_empty() || (tls && auth.is_some()) {
            return Ok(());
        }
        let missing = match (tls, auth.is_some()) {
            (false, false) => {
                "TLS ([tls] cert and key) and authentication ([[auth.tokens]] or [auth.jwt])"
            }
            (false, true) => "TLS ([tls] cert and key, or --tls-cert and --tls-key)",
            _ => {
                "authentication ([[auth.tokens]], [auth.jwt] or [[auth.certificates]] in the config file)"
            }
        };
        let exposed = exposed.join(", ");
        if !self.insecure {
            return Err(format!(
                "refusing to listen on {exposed} without {missing}: anyone who reaches it could \
                 change any store's stock. Configure them (docs/security.md: TLS, tokens and \
                 roles), listen on 127.0.0.1 only, or pass --insecure (INVENTORY_INSECURE=true) \
                 to serve anyway"
            ));
        }
        let warn = move || {
            tracing::warn!(
                addresses = %exposed,
                "--insecure: serving beyond loopback without {missing}; anyone who reaches these addresses can change any store's stock"
            );
        };
        warn();
        tokio::spawn(async move {
            let mut every_hour = tokio::time::interval(INSECURE_WARNING_INTERVAL);
            every_hour.tick().await;
            loop {
                every_hour.tick().await;
                warn();
            }
        });
        Ok(())
    }

    /// The servers' TLS configuration, or `None` for plain text.
    pub(super) fn load(&self) -> Result<Option<ServerTls>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.tls_client_ca.clone(),
        };
        let tls = ServerTls::start(files).map_err(|error| format!("TLS: {error}"))?;
        tracing::info!(
            cert = %cert.display(),
            mutual = tls.mutual(),
            "TLS on"
        );
        Ok(Some(tls))
    }
}

pub(super) fn listener(
    tcp: TcpListener,
    tls: &Option<ServerTls>,
    auth: &Option<Arc<Authenticator>>,
) -> ServerListener {
    ServerListener {
        tcp,
        tls: tls.clone(),
        auth: auth.clone(),
    }
}

impl LogArgs {
    pub(super) fn config(&self) -> LogConfig {
        LogConfig::parse(&self.target, &self.pg_schema)
    }
}
