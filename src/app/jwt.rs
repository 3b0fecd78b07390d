//! JWT bearer tokens from the retailer's identity provider (`[auth.jwt]`): a token signed by one
//! of the configured public keys (RS256, ES256 or EdDSA; HS256 and `none` only when listed in
//! `algorithms`), issued by the configured issuer for the configured audience, within its
//! `exp` and `nbf` give or take the leeway, names a principal: its `sub`, the role in its role
//! claim and the stores in its stores claim.
//!
//! Verification is a signature check (tens of microseconds for RSA), so each accepted token's
//! principal is cached under the token's SHA-256 until the token expires: a client sending the
//! same token on every request pays for one check. A refused token is never cached. Key
//! material comes in as bytes: the binary reads the files.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::Value;

use super::access::{AuthError, Principal, Role, StoreScope, sha256};
use super::clock::Clock;
use crate::domain::StoreId;

/// The signature algorithms a token's header may name (JOSE `alg`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Algorithm {
    Rs256,
    Es256,
    EdDsa,
    /// A secret shared with the identity provider: only when configured.
    Hs256,
    /// No signature at all: only when configured, for a trusted network's test set-up.
    None,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Rs256,
        Algorithm::Es256,
        Algorithm::EdDsa,
        Algorithm::Hs256,
        Algorithm::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Hs256 => "HS256",
            Algorithm::None => "none",
        }
    }

    pub fn parse(text: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.name() == text)
    }
}

/// A key that checks signatures, and the algorithm it checks.
#[derive(Clone)]
enum KeyMaterial {
    /// The modulus and exponent, big-endian.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point `04 ‖ x ‖ y` on P-256.
    P256(Vec<u8>),
    /// The 32 bytes of an Ed25519 public key.
    Ed25519(Vec<u8>),
    Hmac(ring::hmac::Key),
}

/// One verification key, with the `kid` a JWKS gives it.
#[derive(Clone)]
pub struct VerificationKey {
    kid: Option<String>,
    material: KeyMaterial,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the material: an HMAC key is a secret.
        formatter
            .debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm())
            .finish()
    }
}

impl VerificationKey {
    pub fn algorithm(&self) -> Algorithm {
        match self.material {
            KeyMaterial::Rsa { .. } => Algorithm::Rs256,
            KeyMaterial::P256(_) => Algorithm::Es256,
            KeyMaterial::Ed25519(_) => Algorithm::EdDsa,
            KeyMaterial::Hmac(_) => Algorithm::Hs256,
        }
    }

    /// The key of a PEM `PUBLIC KEY` block (SubjectPublicKeyInfo): RSA, EC P-256 or Ed25519.
    pub fn from_pem(pem: &[u8]) -> Result<VerificationKey, String> {
        use rustls_pki_types::SubjectPublicKeyInfoDer;
        use rustls_pki_types::pem::PemObject;
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem)
            .map_err(|error| format!("expected a PEM PUBLIC KEY block: {error}"))?;
        VerificationKey::from_spki(der.as_ref())
    }

    fn from_spki(der: &[u8]) -> Result<VerificationKey, String> {
        use x509_parser::prelude::FromDer;
        use x509_parser::public_key::PublicKey;
        use x509_parser::x509::SubjectPublicKeyInfo;
        let (_, info) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|error| format!("not a public key: {error}"))?;
        let material = match info.parsed() {
            // DER integers carry a leading zero byte when their top bit is set (every 2048-bit
            // modulus does); ring takes the minimal big-endian form, as a JWKS's `n` holds it.
            Ok(PublicKey::RSA(rsa)) => KeyMaterial::Rsa {
                n: without_leading_zeros(rsa.modulus),
                e: without_leading_zeros(rsa.exponent),
            },
            Ok(PublicKey::EC(point))
                if info
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|parameters| parameters.as_oid().ok())
                    == Some(x509_parser::oid_registry::OID_EC_P256) =>
            {
                KeyMaterial::P256(point.data().to_vec())
            }
            _ if info.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 => {
                KeyMaterial::Ed25519(info.subject_public_key.data.to_vec())
            }
            _ => {
                return Err(format!(
                    "a key of type {} is not one of RSA, EC P-256 or Ed25519",
                    info.algorithm.algorithm
                ));
            }
        };
        VerificationKey::checked(None, material)
    }

    /// Every key of a JWKS document (`{"keys": [...]}`) this server can use: RSA, EC P-256 and
    /// Ed25519 signing keys. A key for encryption (`"use": "enc"`) or of another type is
    /// skipped; a malformed key of a known type is an error.
    pub fn from_jwks(text: &str) -> Result<Vec<VerificationKey>, String> {
        let document: Value =
            serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("expected a JWKS document: {\"keys\": [...]}")?;
        let mut found = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            let field = |name: &str| key.get(name).and_then(Value::as_str);
            if field("use").is_some_and(|usage| usage != "sig") {
                continue;
            }
            let bytes = |name: &str| {
                let text = field(name).ok_or_else(|| format!("keys[{index}]: no {name:?}"))?;
                URL_SAFE_NO_PAD
                    .decode(text)
                    .map_err(|_| format!("keys[{index}].{name}: not base64url"))
            };
            let material = match (field("kty"), field("crv")) {
                (Some("RSA"), _) => KeyMaterial::Rsa {
                    n: bytes("n")?,
                    e: bytes("e")?,
                },
                (Some("EC"), Some("P-256")) => {
                    let (x, y) = (bytes("x")?, bytes("y")?);
                    if x.len() != 32 || y.len() != 32 {
                        return Err(format!("keys[{index}]: x and y must be 32 bytes each"));
                    }
                    KeyMaterial::P256([&[4u8][..], &x, &y].concat())
                }
                (Some("OKP"), Some("Ed25519")) => KeyMaterial::Ed25519(bytes("x")?),
                _ => continue,
            };
            let kid = field("kid").map(str::to_owned);
            found.push(
                VerificationKey::checked(kid, material)
                    .map_err(|problem| format!("keys[{index}]: {problem}"))?,
            );
        }
        if found.is_empty() {
            return Err("no RSA, EC P-256 or Ed25519 signing key in the document".into());
        }
        Ok(found)
    }

    /// A shared secret for HS256.
    pub fn hmac(secret: &[u8]) -> Result<VerificationKey, String> {
        if secret.len() < 32 {
            return Err("an HS256 secret must be at least 32 bytes".into());
        }
        VerificationKey::checked(
            None,
            KeyMaterial::Hmac(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)),
        )
    }

    /// The key, if its size and form are ones the signature checks take.
    fn checked(kid: Option<String>, material: KeyMaterial) -> Result<VerificationKey, String> {
        match &material {
            KeyMaterial::Rsa { n, .. } => {
                let bits = (n.len() - n.iter().take_while(|byte| **byte == 0).count()) * 8;
                if !(2048..=8192).contains(&bits) {
                    return Err(format!(
                        "an RSA key must have 2048 to 8192 bits, not about {bits}"
                    ));
                }
            }
            KeyMaterial::P256(point) if point.len() != 65 || point[0] != 4 => {
                return Err("an EC key must be an uncompressed P-256 point".into());
            }
            KeyMaterial::Ed25519(x) if x.len() != 32 => {
                return Err("an Ed25519 key must be 32 bytes".into());
            }
            _ => {}
        }
        Ok(VerificationKey { kid, material })
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            KeyMaterial::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            KeyMaterial::P256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            KeyMaterial::Ed25519(x) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, signature)
                .is_ok(),
            KeyMaterial::Hmac(key) => ring::hmac::verify(key, message, signature).is_ok(),
        }
    }
}

/// `[auth.jwt]`, checked.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// `iss` must be exactly this.
    pub issuer: String,
    /// `aud` must be this, or a list holding it.
    pub audience: String,
    pub keys: Vec<VerificationKey>,
    /// The algorithms a token may use: by default those of the keys.
    pub algorithms: Vec<Algorithm>,
    /// Where the role is: a claim name, or a dotted path into nested claims
    /// (`realm_access.roles`). Its value is a role's name or a list holding one.
    pub role_claim: String,
    /// Where the stores are: a list of store ids, or one string of ids separated by spaces.
    /// Absent or empty: every store (as an API token without `stores`).
    pub stores_claim: String,
    /// How far past `exp` (and before `nbf`) a token is still taken, for clocks that differ.
    pub leeway_seconds: u64,
    /// The most requests of one subject a server works on at once.
    pub max_in_flight: Option<usize>,
}

impl JwtConfig {
    pub const DEFAULT_ROLE_CLAIM: &'static str = "role";
    pub const DEFAULT_STORES_CLAIM: &'static str = "stores";
    pub const DEFAULT_LEEWAY_SECONDS: u64 = 60;
}

/// At most this many verified tokens are cached; past it the cache starts over.
const MAX_CACHED_TOKENS: usize = 65_536;

/// A verified token: its principal, and the last second it may be used in.
#[derive(Clone)]
struct Verified {
    principal: Principal,
    not_before: u64,
    usable_until: u64,
}

/// Checks JWT bearer tokens.
pub struct JwtVerifier {
    config: JwtConfig,
    clock: Arc<dyn Clock>,
    cache: DashMap<[u8; 32], Verified>,
}

impl JwtVerifier {
    /// Whether tokens signed with `algorithm` (or, for `None`, unsigned) are taken.
    pub fn accepts(&self, algorithm: Algorithm) -> bool {
        self.config.algorithms.contains(&algorithm)
    }
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("JwtVerifier")
            .field("config", &self.config)
            .field("cached", &self.cache.len())
            .finish()
    }
}

/// Whether `token` has the form of a JWT (three base64url parts), not of an API token.
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|byte| *byte == b'.').count() == 2
}

impl JwtVerifier {
    pub fn new(config: JwtConfig, clock: Arc<dyn Clock>) -> JwtVerifier {
        JwtVerifier {
            config,
            clock,
            cache: DashMap::new(),
        }
    }

    pub fn max_in_flight(&self) -> Option<usize> {
        self.config.max_in_flight
    }

    /// The principal `token` names, or why it names none: `Expired` only for a token whose
    /// signature and claims were good; anything else wrong is `Invalid`, with no more detail.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let now = self.clock.now().unix_millis() / 1000;
        let leeway = self.config.leeway_seconds;
        let digest = sha256(token.as_bytes());
        if let Some(verified) = self.cache.get(&digest) {
            return verified.usable(now, leeway);
        }
        let verified = self.check(token)?;
        let answer = verified.usable(now, leeway);
        if answer.is_ok() {
            if self.cache.len() >= MAX_CACHED_TOKENS {
                self.cache.clear();
            }
            self.cache.insert(digest, verified);
        }
        answer
    }

    fn check(&self, token: &str) -> Result<Verified, AuthError> {
        fn invalid<E>(_: E) -> AuthError {
            AuthError::Invalid
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Invalid);
        };
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).map_err(invalid)?)
                .map_err(invalid)?;
        // An extension the token says must be understood is one this server does not know.
        if header.get("crit").is_some() {
            return Err(AuthError::Invalid);
        }
        let algorithm = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(Algorithm::parse)
            .filter(|algorithm| self.config.algorithms.contains(algorithm))
            .ok_or(AuthError::Invalid)?;
        let signed = &token[..token.len() - signature.len() - 1];
        if algorithm == Algorithm::None {
            if !signature.is_empty() {
                return Err(AuthError::Invalid);
            }
        } else {
            let signature = URL_SAFE_NO_PAD.decode(signature).map_err(invalid)?;
            let kid = header.get("kid").and_then(Value::as_str);
            let by_kid = |key: &&VerificationKey| match (kid, &key.kid) {
                (Some(wanted), Some(has)) => wanted == has,
                _ => true,
            };
            let good = self
                .config
                .keys
                .iter()
                .filter(|key| key.algorithm() == algorithm)
                .filter(by_kid)
                .any(|key| key.verifies(signed.as_bytes(), &signature));
            if !good {
                return Err(AuthError::Invalid);
            }
        }
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).map_err(invalid)?)
                .map_err(invalid)?;
        self.principal(&claims)
    }

    /// The principal of verified claims, and their time window.
    fn principal(&self, claims: &Value) -> Result<Verified, AuthError> {
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        if text("iss") != Some(self.config.issuer.as_str()) {
            return Err(AuthError::Invalid);
        }
        let audience_matches = match claims.get("aud") {
            Some(Value::String(audience)) => *audience == self.config.audience,
            Some(Value::Array(audiences)) => audiences
                .iter()
                .any(|audience| audience.as_str() == Some(self.config.audience.as_str())),
            _ => false,
        };
        if !audience_matches {
            return Err(AuthError::Invalid);
        }
        let seconds = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .or_else(|| value.as_f64().filter(|s| *s >= 0.0).map(|s| s as u64))
                .map(Some)
                .ok_or(AuthError::Invalid),
        };
        let expires = seconds("exp")?.ok_or(AuthError::Invalid)?;
        let not_before = seconds("nbf")?.unwrap_or(0);
        let name = text("sub")
            .filter(|sub| Principal::subject_problem(sub).is_none())
            .ok_or(AuthError::Invalid)?;
        let role = match claim(claims, &self.config.role_claim) {
            Some(Value::String(role)) => Role::parse(role),
            Some(Value::Array(roles)) => {
                roles.iter().filter_map(Value::as_str).find_map(Role::parse)
            }
            _ => None,
        }
        .ok_or(AuthError::Invalid)?;
        let stores: Vec<&str> = match claim(claims, &self.config.stores_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(stores)) => stores.split_whitespace().collect(),
            Some(Value::Array(stores)) => stores
                .iter()
                .map(|store| store.as_str().ok_or(AuthError::Invalid))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(AuthError::Invalid),
        };
        let stores = stores
            .into_iter()
            .map(|store| StoreId::parse(store).map_err(|_| AuthError::Invalid))
            .collect::<Result<Vec<_>, _>>()?;
        if role == Role::Replica && !stores.is_empty() {
            return Err(AuthError::Invalid);
        }
        Ok(Verified {
            principal: Principal {
                name: format!("{}{name}", Principal::JWT_PREFIX).into(),
                role,
                stores: StoreScope::of(stores),
            },
            not_before,
            usable_until: expires,
        })
    }
}

impl Verified {
    fn usable(&self, now: u64, leeway: u64) -> Result<Principal, AuthError> {
        if now.saturating_add(leeway) < self.not_before {
            Err(AuthError::Invalid)
        } else if now >= self.usable_until.saturating_add(leeway) {
            Err(AuthError::Expired)
        } else {
            Ok(self.principal.clone())
        }
    }
}

/// The value at `path` (`a.b.c`) in `claims`. A claim whose own name holds dots is found as
/// well.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    path.split('.')
        .try_fold(claims, |value, name| value.as_object()?.get(name))
}

/// A big-endian unsigned integer without its leading zero bytes.
fn without_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let first = bytes
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(bytes.len());
    bytes[first..].to_vec()
}

/// The algorithms of `keys`, each once, in the order first seen: the default of `algorithms`.
pub fn algorithms_of(keys: &[VerificationKey]) -> Vec<Algorithm> {
    let mut seen = HashMap::new();
    for key in keys {
        let next = seen.len();
        seen.entry(key.algorithm()).or_insert(next);
    }
    let mut algorithms: Vec<(Algorithm, usize)> = seen.into_iter().collect();
    algorithms.sort_by_key(|(_, order)| *order);
    algorithms
        .into_iter()
        .map(|(algorithm, _)| algorithm)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_found_by_its_name_or_by_a_dotted_path() {
        let claims = serde_json::json!({
            "role": "sales",
            "realm_access": {"roles": ["offline", "reader"]},
            "https://example.com/stores": ["s-1"],
        });
        assert_eq!(claim(&claims, "role"), Some(&serde_json::json!("sales")));
        assert_eq!(
            claim(&claims, "realm_access.roles"),
            Some(&serde_json::json!(["offline", "reader"]))
        );
        assert_eq!(
            claim(&claims, "https://example.com/stores"),
            Some(&serde_json::json!(["s-1"]))
        );
        assert_eq!(claim(&claims, "realm_access.missing"), None);
    }

    /// HS256 and `none` work only where configured: `algorithms` lists them.
    #[test]
    fn a_shared_secret_and_unsigned_tokens_work_only_when_listed() {
        let b64 = |text: String| URL_SAFE_NO_PAD.encode(text);
        let claims = serde_json::json!({
            "iss": "i", "aud": "a", "sub": "erp", "exp": 2_000_000_000u64, "role": "reader",
        });
        let secret = [7u8; 32];
        let signed = format!(
            "{}.{}",
            b64(serde_json::json!({"alg": "HS256"}).to_string()),
            b64(claims.to_string())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let hs256 = format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, signed.as_bytes()))
        );
        let unsigned = format!(
            "{}.{}.",
            b64(serde_json::json!({"alg": "none"}).to_string()),
            b64(claims.to_string())
        );
        let verifier = |algorithms: Vec<Algorithm>| {
            JwtVerifier::new(
                JwtConfig {
                    issuer: "i".into(),
                    audience: "a".into(),
                    keys: vec![VerificationKey::hmac(&secret).unwrap()],
                    algorithms,
                    role_claim: JwtConfig::DEFAULT_ROLE_CLAIM.into(),
                    stores_claim: JwtConfig::DEFAULT_STORES_CLAIM.into(),
                    leeway_seconds: 0,
                    max_in_flight: None,
                },
                Arc::new(crate::app::ManualClock::new(crate::domain::Timestamp(
                    1_900_000_000_000,
                ))),
            )
        };
        let strict = verifier(vec![Algorithm::Rs256]);
        assert_eq!(strict.verify(&hs256), Err(AuthError::Invalid));
        assert_eq!(strict.verify(&unsigned), Err(AuthError::Invalid));
        let shared = verifier(vec![Algorithm::Hs256]);
        assert_eq!(shared.verify(&hs256).unwrap().name.as_ref(), "jwt:erp");
        assert_eq!(shared.verify(&unsigned), Err(AuthError::Invalid));
        let open = verifier(vec![Algorithm::None]);
        assert_eq!(open.verify(&unsigned).unwrap().role, Role::Reader);
        assert!(VerificationKey::hmac(b"short").is_err());
    }

    #[test]
    fn every_algorithm_name_parses_back() {
        for algorithm in Algorithm::ALL {
            assert_eq!(Algorithm::parse(algorithm.name()), Some(algorithm));
        }
        assert_eq!(Algorithm::parse("HS512"), None);
        assert_eq!(Algorithm::parse("NONE"), None);
    }
}
