//! The configuration file (`--config FILE`, or `INVENTORY_CONFIG`): TOML whose keys are the
//! flags' names (`command_addr` for `--command-addr`). Every key is checked when the file is
//! read (an unknown key, or a value of the wrong kind, is an error naming the key), and each
//! becomes its flag's default, so a flag or an environment variable given as well wins over
//! the file.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use inventory::app::EventFilter;
use inventory::app::SystemClock;
use inventory::app::access::{
    ApiToken, Authenticator, CertificateIdentity, Principal, Role, StoreScope, parse_sha256,
};
use inventory::app::jwt::{Algorithm, JwtConfig, JwtVerifier, VerificationKey, algorithms_of};
use inventory::app::subscription::MAX_FILTER_IDS;
use inventory::delivery::webhook::Endpoint;
use inventory::delivery::{
    DEFAULT_BATCH_MAX, DEFAULT_TIMEOUT, MAX_BATCH_MAX, RetryPolicy, SinkConfig, SinkTarget,
    check_sink_name,
};
use inventory::domain::{Actor, EventKind, ProductId, StoreId};
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
    #[serde(default)]
    webhook: Vec<WebhookEntry>,
    nats: Option<NatsSection>,
    redis: Option<RedisSection>,
}

/// `[nats]`: every event published to NATS JetStream (the sink is named `nats`).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct NatsSection {
    url: String,
    stream: String,
    subject_prefix: String,
    #[serde(default)]
    filter: FilterSection,
    batch_max: Option<usize>,
    /// How long one delivery may take: `10s`, `500ms`, `2m`.
    timeout: Option<String>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
    park_after: Option<String>,
}

/// `[redis]`: the stock cache (the sink is named `redis`). No filter: it holds every item.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RedisSection {
    url: String,
    key_prefix: String,
    batch_max: Option<usize>,
    /// How long one delivery may take: `10s`, `500ms`, `2m`.
    timeout: Option<String>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
    park_after: Option<String>,
}

/// What every sink may set: its batch size, its timeout and its retry policy. (Repeated in each
/// sink's section rather than flattened: serde's `flatten` would lose the position of an
/// unknown key's error.)
struct DeliveryKeys<'a> {
    batch_max: Option<usize>,
    timeout: &'a Option<String>,
    retry_initial: &'a Option<String>,
    retry_max: &'a Option<String>,
    park_after: &'a Option<String>,
}

/// The [`DeliveryKeys`] of a sink section.
macro_rules! delivery_keys {
    ($section:expr) => {
        DeliveryKeys {
            batch_max: $section.batch_max,
            timeout: &$section.timeout,
            retry_initial: &$section.retry_initial,
            retry_max: &$section.retry_max,
            park_after: &$section.park_after,
        }
    };
}

impl DeliveryKeys<'_> {
    /// `sink` with these keys applied, each error naming its key through `key`.
    fn apply(
        &self,
        key: &dyn Fn(&str) -> String,
        mut sink: SinkConfig,
    ) -> Result<SinkConfig, (String, String)> {
        if let Some(batch_max) = self.batch_max {
            if !(1..=MAX_BATCH_MAX).contains(&batch_max) {
                return Err((key("batch_max"), format!("must be 1 to {MAX_BATCH_MAX}")));
            }
            sink.batch_max = batch_max;
        }
        let duration = |field: &str, value: &Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => parse_duration(text).map_err(|problem| (key(field), problem)),
        };
        sink.retry = RetryPolicy {
            initial: duration("retry_initial", self.retry_initial, sink.retry.initial)?,
            max: duration("retry_max", self.retry_max, sink.retry.max)?,
            park_after: duration("park_after", self.park_after, sink.retry.park_after)?,
        };
        if sink.retry.max < sink.retry.initial {
            return Err((
                key("retry_max"),
                "must not be shorter than `retry_initial`".into(),
            ));
        }
        let timeout = duration("timeout", self.timeout, DEFAULT_TIMEOUT)?;
        match &mut sink.target {
            SinkTarget::Webhook { timeout: t, .. }
            | SinkTarget::Nats { timeout: t, .. }
            | SinkTarget::Redis { timeout: t, .. } => *t = timeout,
        }
        Ok(sink)
    }
}

/// `[[webhook]]`: an HTTP endpoint that gets the log's events, in batches, signed.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct WebhookEntry {
    name: String,
    url: String,
    /// The signing secret itself; prefer `secret_env`.
    secret: Option<String>,
    /// The environment variable holding the signing secret.
    secret_env: Option<String>,
    #[serde(default)]
    filter: FilterSection,
    /// The PEM CA of an https:// endpoint's certificate; the system's CAs by default.
    ca: Option<PathBuf>,
    batch_max: Option<usize>,
    /// How long one delivery may take: `10s`, `500ms`, `2m`.
    timeout: Option<String>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
    park_after: Option<String>,
}

/// A sink's `filter`: the fields of `SubscriptionFilter`; an empty list matches everything.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FilterSection {
    #[serde(default)]
    product_ids: Vec<String>,
    #[serde(default)]
    store_ids: Vec<String>,
    /// Event type names as the proto spells them: `STOCK_LOW`, `OUT_OF_STOCK`, …
    #[serde(default)]
    event_types: Vec<String>,
}

/// A duration as the configuration writes it: a whole number and a unit, `ms`, `s`, `m` or
/// `h` (`500ms`, `10s`, `24h`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let amount: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 10s, 5m or 24h"))?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(amount),
        "s" => Duration::from_secs(amount),
        "m" => Duration::from_secs(amount.saturating_mul(60)),
        "h" => Duration::from_secs(amount.saturating_mul(3600)),
        _ => return Err(format!("{text:?}: the unit is one of ms, s, m, h")),
    };
    if duration.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(duration)
}

/// `duration` as the configuration writes it, in its largest whole unit.
fn human(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

impl FilterSection {
    fn filter(&self, key: &dyn Fn(&str) -> String) -> Result<EventFilter, (String, String)> {
        let lists = [
            ("filter.product_ids", self.product_ids.len()),
            ("filter.store_ids", self.store_ids.len()),
            ("filter.event_types", self.event_types.len()),
        ];
        for (field, length) in lists {
            if length > MAX_FILTER_IDS {
                return Err((
                    key(field),
                    format!("at most {MAX_FILTER_IDS}, got {length}"),
                ));
            }
        }
        let mut filter = EventFilter::default();
        for (index, text) in self.product_ids.iter().enumerate() {
            let id = ProductId::parse(text).map_err(|error| {
                (
                    key(&format!("filter.product_ids[{index}]")),
                    error.to_string(),
                )
            })?;
            filter.product_ids.insert(id);
        }
        for (index, text) in self.store_ids.iter().enumerate() {
            let id = StoreId::parse(text).map_err(|error| {
                (
                    key(&format!("filter.store_ids[{index}]")),
                    error.to_string(),
                )
            })?;
            filter.store_ids.insert(id);
        }
        for (index, name) in self.event_types.iter().enumerate() {
            let kind = EventKind::parse(name).ok_or_else(|| {
                (
                    key(&format!("filter.event_types[{index}]")),
                    format!(
                        "{name:?} is not an event type (STOCK_ADDED, STOCK_LOW, OUT_OF_STOCK, …, as in the proto)"
                    ),
                )
            })?;
            filter.kinds.insert(kind);
        }
        Ok(filter)
    }
}

impl WebhookEntry {
    fn sink(&self, index: usize) -> Result<SinkConfig, (String, String)> {
        let key = |field: &str| format!("webhook[{index}].{field}");
        check_sink_name(&self.name).map_err(|problem| (key("name"), problem))?;
        let endpoint = Endpoint::parse(&self.url).map_err(|problem| (key("url"), problem))?;
        let secret = match (&self.secret, &self.secret_env) {
            (Some(_), Some(_)) => {
                return Err((
                    key("secret"),
                    "give `secret` or `secret_env`, not both".into(),
                ));
            }
            (None, None) => {
                return Err((
                    key("secret"),
                    "missing: a webhook signs what it sends; give `secret_env` (an environment \
                     variable holding the secret) or `secret`"
                        .into(),
                ));
            }
            (Some(secret), None) => secret.clone(),
            (None, Some(variable)) => std::env::var(variable).map_err(|_| {
                (
                    key("secret_env"),
                    format!("the environment variable {variable} is not set"),
                )
            })?,
        };
        if secret.len() < 16 {
            return Err((
                key(if self.secret.is_some() {
                    "secret"
                } else {
                    "secret_env"
                }),
                "the secret must be at least 16 characters".into(),
            ));
        }
        if !endpoint.is_https() && self.ca.is_some() {
            return Err((
                key("ca"),
                "a CA is given but the URL is not https://".into(),
            ));
        }
        let sink = SinkConfig {
            name: self.name.clone(),
            filter: self.filter.filter(&key)?,
            batch_max: DEFAULT_BATCH_MAX,
            retry: RetryPolicy::default(),
            target: SinkTarget::Webhook {
                endpoint,
                secret: secret.into_bytes(),
                timeout: DEFAULT_TIMEOUT,
                ca: self.ca.clone(),
            },
        };
        delivery_keys!(self).apply(&key, sink)
    }
}

/// `[auth]`: the credentials the servers accept. With none, every request is served.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    jwt: Option<JwtSection>,
    #[serde(default)]
    certificates: Vec<CertificateEntry>,
}

/// `[[auth.certificates]]`: under mutual TLS, a client certificate's subject common name taken
/// as a credential for requests without a token.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct CertificateEntry {
    common_name: String,
    role: String,
    #[serde(default)]
    stores: Vec<String>,
    max_in_flight: Option<usize>,
}

/// `[auth.jwt]`: bearer JWTs from the retailer's identity provider.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct JwtSection {
    issuer: String,
    audience: String,
    /// A PEM `PUBLIC KEY` file.
    public_key: Option<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`), as the identity provider publishes it.
    jwks: Option<PathBuf>,
    /// Which `alg` a token may name; by default those of the keys. `HS256` needs
    /// `hmac_secret_env`; `none` takes unsigned tokens.
    algorithms: Option<Vec<String>>,
    /// The environment variable holding the HS256 secret (never the file itself).
    hmac_secret_env: Option<String>,
    role_claim: Option<String>,
    stores_claim: Option<String>,
    leeway_seconds: Option<u64>,
    max_in_flight: Option<usize>,
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

/// The principal a credential entry names, checked: its name (`name_field`), role, stores
/// and limit, each error naming its key through `key`.
fn checked_principal(
    key: &dyn Fn(&str) -> String,
    (name_field, name): (&str, &str),
    role: &str,
    stores: &[String],
    max_in_flight: Option<usize>,
) -> Result<Principal, (String, String)> {
    if name.trim().is_empty() || name.len() > 128 {
        return Err((key(name_field), "must be 1 to 128 characters".into()));
    }
    if Principal::RESERVED_NAMES.contains(&name) {
        return Err((
            key(name_field),
            format!(
                "{name:?} is what events record for {}: give the credential another name",
                if name == Actor::SYSTEM {
                    "what the server does by itself"
                } else {
                    "a server without authentication"
                }
            ),
        ));
    }
    let role = Role::parse(role).ok_or_else(|| {
        let roles: Vec<&str> = Role::ALL.iter().map(|role| role.name()).collect();
        (
            key("role"),
            format!("{role:?} is not one of {}", roles.join(", ")),
        )
    })?;
    let mut parsed = Vec::with_capacity(stores.len());
    for (store_index, store) in stores.iter().enumerate() {
        let store = StoreId::parse(store)
            .map_err(|error| (key(&format!("stores[{store_index}]")), error.to_string()))?;
        parsed.push(store);
    }
    if role == Role::Replica && !parsed.is_empty() {
        return Err((
            key("stores"),
            "a replica copies the whole log: it takes no stores".into(),
        ));
    }
    if max_in_flight == Some(0) {
        return Err((key("max_in_flight"), "must be at least 1".into()));
    }
    Ok(Principal {
        name: name.into(),
        role,
        stores: StoreScope::of(parsed),
    })
}

impl JwtSection {
    /// The checked configuration, its key files read. An error names the key.
    fn config(&self) -> Result<JwtConfig, (String, String)> {
        let key = |field: &str| format!("auth.jwt.{field}");
        for (field, value) in [("issuer", &self.issuer), ("audience", &self.audience)] {
            if value.trim().is_empty() {
                return Err((key(field), "must not be empty".into()));
            }
        }
        let read = |field: &str, path: &Path| {
            std::fs::read(path).map_err(|error| {
                (
                    key(field),
                    format!("cannot read {}: {error}", path.display()),
                )
            })
        };
        let mut keys = Vec::new();
        if let Some(path) = &self.public_key {
            let pem = read("public_key", path)?;
            keys.push(VerificationKey::from_pem(&pem).map_err(|problem| {
                (key("public_key"), format!("{}: {problem}", path.display()))
            })?);
        }
        if let Some(path) = &self.jwks {
            let text = String::from_utf8(read("jwks", path)?)
                .map_err(|_| (key("jwks"), format!("{}: not UTF-8", path.display())))?;
            keys.extend(
                VerificationKey::from_jwks(&text)
                    .map_err(|problem| (key("jwks"), format!("{}: {problem}", path.display())))?,
            );
        }
        let algorithms = match &self.algorithms {
            None => algorithms_of(&keys),
            Some(names) => {
                let mut algorithms = Vec::with_capacity(names.len());
                for (index, name) in names.iter().enumerate() {
                    let algorithm = Algorithm::parse(name).ok_or_else(|| {
                        let known: Vec<&str> = Algorithm::ALL
                            .iter()
                            .map(|algorithm| algorithm.name())
                            .collect();
                        (
                            format!("auth.jwt.algorithms[{index}]"),
                            format!("{name:?} is not one of {}", known.join(", ")),
                        )
                    })?;
                    algorithms.push(algorithm);
                }
                algorithms
            }
        };
        match (
            &self.hmac_secret_env,
            algorithms.contains(&Algorithm::Hs256),
        ) {
            (Some(variable), true) => {
                let secret = std::env::var(variable).map_err(|_| {
                    (
                        key("hmac_secret_env"),
                        format!("the environment variable {variable} is not set"),
                    )
                })?;
                keys.push(
                    VerificationKey::hmac(secret.as_bytes())
                        .map_err(|problem| (key("hmac_secret_env"), problem))?,
                );
            }
            (Some(_), false) => {
                return Err((
                    key("hmac_secret_env"),
                    "a shared secret is used only with \"HS256\" in `auth.jwt.algorithms`".into(),
                ));
            }
            (None, true) => {
                return Err((
                    key("hmac_secret_env"),
                    "missing: \"HS256\" in `auth.jwt.algorithms` needs the shared secret".into(),
                ));
            }
            (None, false) => {}
        }
        if keys.is_empty() && algorithms != [Algorithm::None] {
            return Err((
                key("public_key"),
                "missing: give the identity provider's `public_key` (PEM) or `jwks` file".into(),
            ));
        }
        for (index, algorithm) in algorithms.iter().enumerate() {
            if *algorithm != Algorithm::None
                && !keys.iter().any(|key| key.algorithm() == *algorithm)
            {
                return Err((
                    format!("auth.jwt.algorithms[{index}]"),
                    format!("no configured key checks {}", algorithm.name()),
                ));
            }
        }
        for (field, value) in [
            ("role_claim", &self.role_claim),
            ("stores_claim", &self.stores_claim),
        ] {
            if value
                .as_deref()
                .is_some_and(|claim| claim.trim().is_empty())
            {
                return Err((key(field), "must not be empty".into()));
            }
        }
        if self.max_in_flight == Some(0) {
            return Err((key("max_in_flight"), "must be at least 1".into()));
        }
        if self.leeway_seconds.is_some_and(|leeway| leeway > 600) {
            return Err((key("leeway_seconds"), "at most 600 (10 minutes)".into()));
        }
        Ok(JwtConfig {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            keys,
            algorithms,
            role_claim: self
                .role_claim
                .clone()
                .unwrap_or_else(|| JwtConfig::DEFAULT_ROLE_CLAIM.into()),
            stores_claim: self
                .stores_claim
                .clone()
                .unwrap_or_else(|| JwtConfig::DEFAULT_STORES_CLAIM.into()),
            leeway_seconds: self
                .leeway_seconds
                .unwrap_or(JwtConfig::DEFAULT_LEEWAY_SECONDS),
            max_in_flight: self.max_in_flight,
        })
    }
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
        let mut authenticator = Authenticator::new(tokens).with_certificates(certificates);
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
