//! The configuration file (`--config FILE`, or `INVENTORY_CONFIG`): TOML whose keys are the
//! flags' names (`command_addr` for `--command-addr`). Every key is checked when the file is
//! read (an unknown key, or a value of the wrong kind, is an error naming the key), and each
//! becomes its flag's default, so a flag or an environment variable given as well wins over
//! the file.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::app::SystemClock;
use crate::app::access::{ApiToken, Authenticator, CertificateIdentity, parse_sha256};
use crate::app::jwt::JwtVerifier;
use crate::delivery::SinkConfig;
use crate::telemetry::LogFormat;

mod auth;
mod sinks;

use auth::{AuthSection, JwtSection, checked_principal};
use sinks::{DeliveryKeys, NatsSection, RedisSection, WebhookEntry, delivery_keys, human};

/// Every key the file may hold. A key a mode has no flag for is ignored by that mode (a
/// `follow` in a file that `serve` reads), so one file can serve every mode.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    log: Option<String>,
    pg_schema: Option<String>,
    command_addr: Option<SocketAddr>,
    query_addr: Option<SocketAddr>,
    metrics_addr: Option<String>,
    follow: Option<String>,
    data: Option<PathBuf>,
    max_in_flight: Option<usize>,
    max_connections: Option<usize>,
    first_request_timeout: Option<u64>,
    idle_timeout: Option<u64>,
    log_format: Option<String>,
    otlp_endpoint: Option<String>,
    upstream_ca: Option<PathBuf>,
    upstream_token: Option<String>,
    insecure: Option<bool>,
    tls: Option<TlsSection>,
    auth: Option<AuthSection>,
    #[serde(default)]
    webhook: Vec<WebhookEntry>,
    nats: Option<NatsSection>,
    redis: Option<RedisSection>,
    snapshots: Option<SnapshotsSection>,
}

/// `[snapshots]`: when the embedded log's state is written as a snapshot (the flags
/// `--snapshot-every-events`, `--snapshot-keep`).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct SnapshotsSection {
    every_events: Option<u64>,
    keep: Option<usize>,
}

/// `[tls]`: the servers' certificate and key, and the CA of client certificates for mutual
/// TLS (the flags `--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
}

/// The file `--config` (or `INVENTORY_CONFIG`) names, if any, found before the flags are
/// parsed: its values are the defaults the parser then uses.
pub fn path_from(arguments: &[OsString]) -> Option<PathBuf> {
    let mut arguments = arguments.iter().skip(1);
    while let Some(argument) = arguments.next() {
        let text = argument.to_string_lossy();
        if text == "--config" {
            return arguments.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("INVENTORY_CONFIG")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

impl ConfigFile {
    /// Reads and checks the file.
    pub fn read(path: &Path) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the config file {}: {error}", path.display()))?;
        let file: ConfigFile = toml::from_str(&text)
            .map_err(|error| format!("config file {}: {error}", path.display()))?;
        let invalid = |key: &str, problem: String| {
            format!("config file {}: key `{key}`: {problem}", path.display())
        };
        if let Some(metrics_addr) = &file.metrics_addr {
            super::parse_metrics_addr(metrics_addr)
                .map_err(|problem| invalid("metrics_addr", problem))?;
        }
        if let Some(log_format) = &file.log_format {
            log_format
                .parse::<LogFormat>()
                .map_err(|problem| invalid("log_format", problem))?;
        }
        if let Some(tls) = &file.tls {
            match (&tls.cert, &tls.key) {
                (Some(_), None) => {
                    return Err(invalid(
                        "tls.key",
                        "missing: `tls.cert` needs its key".into(),
                    ));
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        "tls.cert",
                        "missing: `tls.key` needs its certificate".into(),
                    ));
                }
                (None, None) if tls.client_ca.is_some() => {
                    return Err(invalid(
                        "tls.cert",
                        "missing: mutual TLS (`tls.client_ca`) needs the server's own certificate and key"
                            .into(),
                    ));
                }
                _ => {}
            }
        }
        file.authenticator()
            .map_err(|(key, problem)| invalid(&key, problem))?;
        file.sinks()
            .map_err(|(key, problem)| invalid(&key, problem))?;
        for (key, value) in [("log", &file.log), ("pg_schema", &file.pg_schema)] {
            if value.as_deref() == Some("") {
                return Err(invalid(key, "must not be empty".to_owned()));
            }
        }
        Ok(file)
    }

    /// The credentials of `[auth]`, checked: `None` when there are none. An error names the
    /// key (`auth.tokens[2].role`).
    /// Over 70 lines: tokens, certificates and the JWT issuer are checked in turn, each
    /// error naming its key.
    pub fn authenticator(&self) -> Result<Option<Authenticator>, (String, String)> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let mut tokens = Vec::with_capacity(auth.tokens.len());
        let mut names = std::collections::HashSet::new();
        let mut digests = std::collections::HashSet::new();
        for (index, entry) in auth.tokens.iter().enumerate() {
            let key = |field: &str| format!("auth.tokens[{index}].{field}");
            let principal = checked_principal(
                &key,
                ("name", &entry.name),
                &entry.role,
                &entry.stores,
                entry.max_in_flight,
            )?;
            if !names.insert(entry.name.as_str()) {
                return Err((
                    key("name"),
                    format!("{:?} names another token too", entry.name),
                ));
            }
            let sha256 = parse_sha256(&entry.sha256.to_ascii_lowercase()).ok_or_else(|| {
                (
                    key("sha256"),
                    "expected the 64 hex digits of the token's SHA-256 (inventory token new prints it)"
                        .to_owned(),
                )
            })?;
            if !digests.insert(sha256) {
                return Err((key("sha256"), "is another token's too".into()));
            }
            tokens.push(ApiToken {
                max_in_flight: entry.max_in_flight,
                quota: entry.quota(),
                sha256,
                principal,
            });
        }
        let mut certificates = Vec::with_capacity(auth.certificates.len());
        let mut common_names = std::collections::HashSet::new();
        for (index, entry) in auth.certificates.iter().enumerate() {
            let key = |field: &str| format!("auth.certificates[{index}].{field}");
            let principal = checked_principal(
                &key,
                ("common_name", &entry.common_name),
                &entry.role,
                &entry.stores,
                entry.max_in_flight,
            )?;
            if !common_names.insert(entry.common_name.as_str()) {
                return Err((
                    key("common_name"),
                    format!("{:?} names another certificate too", entry.common_name),
                ));
            }
            certificates.push(CertificateIdentity {
                principal,
                max_in_flight: entry.max_in_flight,
            });
        }
        let jwt = auth.jwt.as_ref().map(JwtSection::config).transpose()?;
        if tokens.is_empty() && jwt.is_none() && certificates.is_empty() {
            return Err((
                "auth.tokens".into(),
                "[auth] with no token, no [auth.jwt] and no [[auth.certificates]] would refuse \
                 every request; add one of them"
                    .into(),
            ));
        }
        let mut authenticator = Authenticator::new(tokens)
            .with_certificates(certificates)
            .with_quota(auth.quota());
        if let Some(jwt) = jwt {
            authenticator = authenticator.with_jwt(JwtVerifier::new(jwt, Arc::new(SystemClock)));
        }
        Ok(Some(authenticator))
    }

    /// The outbound sinks (`[[webhook]]`), checked: an error names the key
    /// (`webhook[1].url`).
    pub fn sinks(&self) -> Result<Vec<SinkConfig>, (String, String)> {
        let mut sinks: Vec<SinkConfig> = Vec::with_capacity(self.webhook.len() + 2);
        if let Some(nats) = &self.nats {
            let key = |field: &str| format!("nats.{field}");
            if !(nats.url.starts_with("nats://") || nats.url.starts_with("tls://")) {
                return Err((
                    key("url"),
                    format!("{:?}: a NATS URL starts with nats://", nats.url),
                ));
            }
            let mut sink = SinkConfig::nats(&nats.url, &nats.stream, &nats.subject_prefix)
                .map_err(|problem| {
                    let field = if problem.contains("separated by") {
                        "subject_prefix"
                    } else {
                        "stream"
                    };
                    (key(field), problem)
                })?;
            sink.filter = nats.filter.filter(&key)?;
            sinks.push(delivery_keys!(nats).apply(&key, sink)?);
        }
        if let Some(redis) = &self.redis {
            let key = |field: &str| format!("redis.{field}");
            if !(redis.url.starts_with("redis://") || redis.url.starts_with("rediss://")) {
                return Err((
                    key("url"),
                    format!("{:?}: a Redis URL starts with redis://", redis.url),
                ));
            }
            let sink = SinkConfig::redis(&redis.url, &redis.key_prefix)
                .map_err(|problem| (key("key_prefix"), problem))?;
            sinks.push(delivery_keys!(redis).apply(&key, sink)?);
        }
        for (index, entry) in self.webhook.iter().enumerate() {
            let sink = entry.sink(index)?;
            if sinks.iter().any(|other| other.name == sink.name) {
                return Err((
                    format!("webhook[{index}].name"),
                    format!("{:?} names another sink too", sink.name),
                ));
            }
            sinks.push(sink);
        }
        Ok(sinks)
    }

    /// What `inventory config check` prints of a file that was read and checked.
    /// Over 70 lines: one paragraph per section of the file, in the file's order.
    pub fn summary(&self, path: &Path) -> String {
        use std::fmt::Write;
        let mut out = format!("config file {}: ok\n", path.display());
        let tls = self.tls.as_ref().filter(|tls| tls.cert.is_some());
        let _ = writeln!(
            out,
            "tls: {}",
            match tls {
                None => "off",
                Some(tls) if tls.client_ca.is_some() => "on, mutual (client certificates)",
                Some(_) => "on",
            }
        );
        match &self.auth {
            None => out.push_str("auth: none (every request is served)\n"),
            Some(auth) => {
                let _ = writeln!(
                    out,
                    "auth: {} API token(s), {} client certificate name(s), JWT {}",
                    auth.tokens.len(),
                    auth.certificates.len(),
                    auth.jwt.as_ref().map_or("off".to_owned(), |jwt| format!(
                        "from issuer {:?}",
                        jwt.issuer
                    ))
                );
            }
        }
        let sinks = self.sinks().unwrap_or_default();
        let _ = writeln!(out, "sinks: {}", sinks.len());
        for sink in &sinks {
            let mut filter = Vec::new();
            let sorted = |values: Vec<&str>| {
                let mut values = values;
                values.sort_unstable();
                values.join(", ")
            };
            let products: Vec<&str> = sink
                .filter
                .product_ids
                .iter()
                .map(|id| id.as_str())
                .collect();
            let stores: Vec<&str> = sink.filter.store_ids.iter().map(|id| id.as_str()).collect();
            let kinds: Vec<&str> = sink.filter.kinds.iter().map(|kind| kind.name()).collect();
            for (field, values) in [
                ("product_ids", products),
                ("store_ids", stores),
                ("event_types", kinds),
            ] {
                if !values.is_empty() {
                    filter.push(format!("{field} {}", sorted(values)));
                }
            }
            let signing = match self.webhook.iter().find(|entry| entry.name == sink.name) {
                Some(WebhookEntry {
                    secret_env: Some(variable),
                    ..
                }) => format!("; signed with ${variable}"),
                Some(_) => "; signed with the `secret` in the file".to_owned(),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {} {} -> {} (batch_max {}, events: {}{signing}; retry {} doubling to {}, parked after {})",
                sink.kind(),
                sink.name,
                sink.destination(),
                sink.batch_max,
                if filter.is_empty() {
                    "all".to_owned()
                } else {
                    filter.join("; ")
                },
                human(sink.retry.initial),
                human(sink.retry.max),
                human(sink.retry.park_after),
            );
        }
        out
    }

    /// Whether `[auth.jwt]` takes unsigned tokens (`algorithms` lists `none`).
    pub fn takes_unsigned_jwts(&self) -> bool {
        self.auth
            .as_ref()
            .and_then(|auth| auth.jwt.as_ref())
            .and_then(|jwt| jwt.algorithms.as_ref())
            .is_some_and(|algorithms| algorithms.iter().any(|name| name == "none"))
    }

    /// Each key that is set, with its flag's id (the field name clap gives the argument) and
    /// its value as the flag would take it.
    fn defaults(&self) -> Vec<(&'static str, String)> {
        let text = |value: &Option<String>| value.clone();
        let number = |value: Option<usize>| value.map(|value| value.to_string());
        let address = |value: Option<SocketAddr>| value.map(|value| value.to_string());
        let path = |value: Option<&PathBuf>| value.map(|value| value.display().to_string());
        let tls = self.tls.as_ref();
        let snapshots = self.snapshots.as_ref();
        let mut defaults = vec![
            ("target", text(&self.log)),
            ("pg_schema", text(&self.pg_schema)),
            ("command_addr", address(self.command_addr)),
            ("query_addr", address(self.query_addr)),
            ("metrics_addr", text(&self.metrics_addr)),
            ("follow", text(&self.follow)),
            ("data", path(self.data.as_ref())),
            ("max_in_flight", number(self.max_in_flight)),
            ("max_connections", number(self.max_connections)),
            (
                "first_request_timeout",
                self.first_request_timeout
                    .map(|seconds| seconds.to_string()),
            ),
            (
                "idle_timeout",
                self.idle_timeout.map(|seconds| seconds.to_string()),
            ),
            ("log_format", text(&self.log_format)),
            ("otlp_endpoint", text(&self.otlp_endpoint)),
            ("upstream_ca", path(self.upstream_ca.as_ref())),
            ("upstream_token", text(&self.upstream_token)),
            (
                "insecure",
                self.insecure.map(|insecure| insecure.to_string()),
            ),
            (
                "snapshot_every_events",
                snapshots.and_then(|snapshots| snapshots.every_events.map(|n| n.to_string())),
            ),
            (
                "snapshot_keep",
                number(snapshots.and_then(|snapshots| snapshots.keep)),
            ),
            ("tls_cert", path(tls.and_then(|tls| tls.cert.as_ref()))),
            ("tls_key", path(tls.and_then(|tls| tls.key.as_ref()))),
            (
                "tls_client_ca",
                path(tls.and_then(|tls| tls.client_ca.as_ref())),
            ),
        ];
        // A query server on its own reads only a PostgreSQL log (its `--log`); an embedded
        // log's directory in the file is for the other modes.
        if let Some(log) = &self.log
            && log.starts_with("postgres://")
        {
            defaults.push(("log", Some(log.clone())));
        }
        defaults
            .into_iter()
            .filter_map(|(id, value)| value.map(|value| (id, value)))
            .collect()
    }

    /// `command` with the file's values as the defaults of the flags they name, in it and in
    /// every subcommand.
    pub fn apply(&self, command: clap::Command) -> clap::Command {
        let defaults = self.defaults();
        with_defaults(command, &defaults)
    }
}

fn with_defaults(mut command: clap::Command, defaults: &[(&'static str, String)]) -> clap::Command {
    for (id, value) in defaults {
        if command
            .get_arguments()
            .any(|argument| argument.get_id() == *id)
        {
            // Parsed once per process: leaking the few bytes gives clap the 'static it asks for.
            let value: &'static str = Box::leak(value.clone().into_boxed_str());
            // A secret (the upstream token, a password or key in a URL) is used but never
            // shown by `--help` as the default.
            let secret = *id == "upstream_token" || crate::delivery::redacted(value) != *value;
            command = command.mut_arg(*id, |argument| {
                argument.default_value(value).hide_default_value(secret)
            });
        }
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|subcommand| subcommand.get_name().to_owned())
        .collect();
    for name in names {
        command = command.mut_subcommand(name, |subcommand| with_defaults(subcommand, defaults));
    }
    command
}
