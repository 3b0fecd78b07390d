//! The configuration file (`--config FILE`, or `INVENTORY_CONFIG`): TOML whose keys are the
//! flags' names (`command_addr` for `--command-addr`). Every key is checked when the file is
//! read (an unknown key, or a value of the wrong kind, is an error naming the key), and each
//! becomes its flag's default, so a flag or an environment variable given as well wins over
//! the file.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use inventory::app::access::{ApiToken, Authenticator, Principal, Role, StoreScope, parse_sha256};
use inventory::domain::{Actor, StoreId};
use inventory::telemetry::LogFormat;

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
    log_format: Option<String>,
    otlp_endpoint: Option<String>,
    upstream_ca: Option<PathBuf>,
    upstream_token: Option<String>,
    insecure: Option<bool>,
    tls: Option<TlsSection>,
    auth: Option<AuthSection>,
}

/// `[auth]`: the credentials the servers accept. With none, every request is served.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

/// `[[auth.tokens]]`: one API token, by the SHA-256 of its text (`inventory token new`).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    role: String,
    #[serde(default)]
    stores: Vec<String>,
    max_in_flight: Option<usize>,
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
            crate::parse_metrics_addr(metrics_addr)
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
        for (key, value) in [("log", &file.log), ("pg_schema", &file.pg_schema)] {
            if value.as_deref() == Some("") {
                return Err(invalid(key, "must not be empty".to_owned()));
            }
        }
        Ok(file)
    }

    /// The credentials of `[auth]`, checked: `None` when there are none. An error names the
    /// key (`auth.tokens[2].role`).
    pub fn authenticator(&self) -> Result<Option<Authenticator>, (String, String)> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let mut tokens = Vec::with_capacity(auth.tokens.len());
        let mut names = std::collections::HashSet::new();
        let mut digests = std::collections::HashSet::new();
        for (index, entry) in auth.tokens.iter().enumerate() {
            let key = |field: &str| format!("auth.tokens[{index}].{field}");
            if entry.name.trim().is_empty() || entry.name.len() > 128 {
                return Err((key("name"), "must be 1 to 128 characters".into()));
            }
            if Principal::RESERVED_NAMES.contains(&entry.name.as_str()) {
                return Err((
                    key("name"),
                    format!(
                        "{:?} is what events record for {}: give the token another name",
                        entry.name,
                        if entry.name == Actor::SYSTEM {
                            "what the server does by itself"
                        } else {
                            "a server without authentication"
                        }
                    ),
                ));
            }
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
            let role = Role::parse(&entry.role).ok_or_else(|| {
                let roles: Vec<&str> = Role::ALL.iter().map(|role| role.name()).collect();
                (
                    key("role"),
                    format!("{:?} is not one of {}", entry.role, roles.join(", ")),
                )
            })?;
            let mut stores = Vec::with_capacity(entry.stores.len());
            for (store_index, store) in entry.stores.iter().enumerate() {
                let parsed = StoreId::parse(store).map_err(|error| {
                    (
                        format!("auth.tokens[{index}].stores[{store_index}]"),
                        error.to_string(),
                    )
                })?;
                stores.push(parsed);
            }
            if role == Role::Replica && !stores.is_empty() {
                return Err((
                    key("stores"),
                    "a replica copies the whole log: it takes no stores".into(),
                ));
            }
            if entry.max_in_flight == Some(0) {
                return Err((key("max_in_flight"), "must be at least 1".into()));
            }
            tokens.push(ApiToken {
                max_in_flight: entry.max_in_flight,
                sha256,
                principal: Principal {
                    name: entry.name.as_str().into(),
                    role,
                    stores: StoreScope::of(stores),
                },
            });
        }
        if tokens.is_empty() {
            return Err((
                "auth.tokens".into(),
                "[auth] with no token would refuse every request; add a [[auth.tokens]] entry"
                    .into(),
            ));
        }
        Ok(Some(Authenticator::new(tokens)))
    }

    /// Each key that is set, with its flag's id (the field name clap gives the argument) and
    /// its value as the flag would take it.
    fn defaults(&self) -> Vec<(&'static str, String)> {
        let text = |value: &Option<String>| value.clone();
        let number = |value: Option<usize>| value.map(|value| value.to_string());
        let address = |value: Option<SocketAddr>| value.map(|value| value.to_string());
        let path = |value: Option<&PathBuf>| value.map(|value| value.display().to_string());
        let tls = self.tls.as_ref();
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
            ("log_format", text(&self.log_format)),
            ("otlp_endpoint", text(&self.otlp_endpoint)),
            ("upstream_ca", path(self.upstream_ca.as_ref())),
            ("upstream_token", text(&self.upstream_token)),
            (
                "insecure",
                self.insecure.map(|insecure| insecure.to_string()),
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
            command = command.mut_arg(*id, |argument| argument.default_value(value));
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
