//! The `[auth]` section: API tokens, client certificates and JWTs.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::app::access::{Principal, Quota, Role, StoreScope};
use crate::app::jwt::{Algorithm, JwtConfig, VerificationKey, algorithms_of};
use crate::domain::StoreId;

/// `[auth]`: the credentials the servers accept. With none, every request is served.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthSection {
    #[serde(default)]
    pub(super) tokens: Vec<TokenEntry>,
    /// Every principal's quota where its token sets none (see [`Quota`]; 0: no limit).
    pub(super) requests_per_second: Option<u32>,
    pub(super) lines_per_second: Option<u32>,
    pub(super) max_subscriptions: Option<u32>,
    pub(super) jwt: Option<JwtSection>,
    #[serde(default)]
    pub(super) certificates: Vec<CertificateEntry>,
}

/// `[[auth.certificates]]`: under mutual TLS, a client certificate's subject common name taken
/// as a credential for requests without a token.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct CertificateEntry {
    pub(super) common_name: String,
    pub(super) role: String,
    #[serde(default)]
    pub(super) stores: Vec<String>,
    pub(super) max_in_flight: Option<usize>,
}

/// `[auth.jwt]`: bearer JWTs from the retailer's identity provider.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct JwtSection {
    pub(super) issuer: String,
    pub(super) audience: String,
    /// A PEM `PUBLIC KEY` file.
    pub(super) public_key: Option<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`), as the identity provider publishes it.
    pub(super) jwks: Option<PathBuf>,
    /// Which `alg` a token may name; by default those of the keys. `HS256` needs
    /// `hmac_secret_env`; `none` takes unsigned tokens.
    pub(super) algorithms: Option<Vec<String>>,
    /// The environment variable holding the HS256 secret (never the file itself).
    pub(super) hmac_secret_env: Option<String>,
    pub(super) role_claim: Option<String>,
    pub(super) stores_claim: Option<String>,
    pub(super) leeway_seconds: Option<u64>,
    pub(super) max_in_flight: Option<usize>,
}

/// `[[auth.tokens]]`: one API token, by the SHA-256 of its text (`inventory token new`).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenEntry {
    pub(super) name: String,
    pub(super) sha256: String,
    pub(super) role: String,
    #[serde(default)]
    pub(super) stores: Vec<String>,
    pub(super) max_in_flight: Option<usize>,
    /// This token's own quota (see [`Quota`]; 0: no limit).
    pub(super) requests_per_second: Option<u32>,
    pub(super) lines_per_second: Option<u32>,
    pub(super) max_subscriptions: Option<u32>,
}

macro_rules! quota_of {
    ($entry:expr) => {
        Quota {
            requests_per_second: $entry.requests_per_second,
            lines_per_second: $entry.lines_per_second,
            max_subscriptions: $entry.max_subscriptions,
        }
    };
}

impl AuthSection {
    /// Every principal's quota where its token sets none.
    pub(super) fn quota(&self) -> Quota {
        quota_of!(self)
    }
}

impl TokenEntry {
    /// The token's own quota.
    pub(super) fn quota(&self) -> Quota {
        quota_of!(self)
    }
}

/// The principal a credential entry names, checked: its name (`name_field`), role, stores
/// and limit, each error naming its key through `key`.
pub(super) fn checked_principal(
    key: &dyn Fn(&str) -> String,
    (name_field, name): (&str, &str),
    role: &str,
    stores: &[String],
    max_in_flight: Option<usize>,
) -> Result<Principal, (String, String)> {
    if let Some(problem) = Principal::name_problem(name) {
        return Err((key(name_field), problem));
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

/// The key of a field of `[auth.jwt]`, as errors name it.
fn jwt_key(field: &str) -> String {
    format!("auth.jwt.{field}")
}

impl JwtSection {
    /// The checked configuration, its key files read. An error names the key.
    pub(super) fn config(&self) -> Result<JwtConfig, (String, String)> {
        for (field, value) in [("issuer", &self.issuer), ("audience", &self.audience)] {
            if value.trim().is_empty() {
                return Err((jwt_key(field), "must not be empty".into()));
            }
        }
        let mut keys = self.public_keys()?;
        let algorithms = self.algorithms(&keys)?;
        self.add_shared_secret(&algorithms, &mut keys)?;
        if keys.is_empty() && algorithms != [Algorithm::None] {
            return Err((
                jwt_key("public_key"),
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
        self.check_claims_and_limits()?;
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

    /// The issuer's public keys, from `public_key` (PEM) and `jwks`.
    fn public_keys(&self) -> Result<Vec<VerificationKey>, (String, String)> {
        let read = |field: &str, path: &Path| {
            std::fs::read(path).map_err(|error| {
                (
                    jwt_key(field),
                    format!("cannot read {}: {error}", path.display()),
                )
            })
        };
        let mut keys = Vec::new();
        if let Some(path) = &self.public_key {
            let pem = read("public_key", path)?;
            keys.push(VerificationKey::from_pem(&pem).map_err(|problem| {
                (
                    jwt_key("public_key"),
                    format!("{}: {problem}", path.display()),
                )
            })?);
        }
        if let Some(path) = &self.jwks {
            let text = String::from_utf8(read("jwks", path)?)
                .map_err(|_| (jwt_key("jwks"), format!("{}: not UTF-8", path.display())))?;
            keys.extend(
                VerificationKey::from_jwks(&text).map_err(|problem| {
                    (jwt_key("jwks"), format!("{}: {problem}", path.display()))
                })?,
            );
        }
        Ok(keys)
    }

    /// The algorithms accepted: those listed, or by default those of the keys.
    fn algorithms(&self, keys: &[VerificationKey]) -> Result<Vec<Algorithm>, (String, String)> {
        let Some(names) = &self.algorithms else {
            return Ok(algorithms_of(keys));
        };
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
        Ok(algorithms)
    }

    /// The HS256 secret from `hmac_secret_env`, which goes with "HS256" in the algorithms and
    /// only with it.
    fn add_shared_secret(
        &self,
        algorithms: &[Algorithm],
        keys: &mut Vec<VerificationKey>,
    ) -> Result<(), (String, String)> {
        match (
            &self.hmac_secret_env,
            algorithms.contains(&Algorithm::Hs256),
        ) {
            (Some(variable), true) => {
                let secret = std::env::var(variable).map_err(|_| {
                    (
                        jwt_key("hmac_secret_env"),
                        format!("the environment variable {variable} is not set"),
                    )
                })?;
                keys.push(
                    VerificationKey::hmac(secret.as_bytes())
                        .map_err(|problem| (jwt_key("hmac_secret_env"), problem))?,
                );
                Ok(())
            }
            (Some(_), false) => Err((
                jwt_key("hmac_secret_env"),
                "a shared secret is used only with \"HS256\" in `auth.jwt.algorithms`".into(),
            )),
            (None, true) => Err((
                jwt_key("hmac_secret_env"),
                "missing: \"HS256\" in `auth.jwt.algorithms` needs the shared secret".into(),
            )),
            (None, false) => Ok(()),
        }
    }

    /// The claims' paths are not empty; the limit and the leeway are in range.
    fn check_claims_and_limits(&self) -> Result<(), (String, String)> {
        for (field, value) in [
            ("role_claim", &self.role_claim),
            ("stores_claim", &self.stores_claim),
        ] {
            if value
                .as_deref()
                .is_some_and(|claim| claim.trim().is_empty())
            {
                return Err((jwt_key(field), "must not be empty".into()));
            }
        }
        if self.max_in_flight == Some(0) {
            return Err((jwt_key("max_in_flight"), "must be at least 1".into()));
        }
        if self.leeway_seconds.is_some_and(|leeway| leeway > 600) {
            return Err((jwt_key("leeway_seconds"), "at most 600 (10 minutes)".into()));
        }
        Ok(())
    }
}
