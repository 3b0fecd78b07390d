//! JWT bearer tokens from an identity provider (`[auth.jwt]`), over real gRPC: tokens signed
//! with RS256, ES256 and EdDSA keys made at test time (the RSA key is a test-only fixture: ring
//! verifies RSA but does not make RSA keys) name their subject, role and stores; every way a
//! token can be wrong is refused with only the reason; and the binary reads `[auth.jwt]` from
//! the configuration file, refusing a bad one with the key named.
//!
//! Over 600 lines: the test identity provider (keys of three algorithms, a signer) is shared
//! by every test here, and each JWT rule is one scenario.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};
use tonic::Code;

use inventory::app::access::{Authenticator, Role};
use inventory::app::jwt::{Algorithm, JwtConfig, JwtVerifier, VerificationKey};
use inventory::app::{ManualClock, SystemClock};
use inventory::domain::Timestamp;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use support::secured::{Server, as_, assert_refused, credential};
use support::{add_stock, get_stock, reserve_stock};

const ISSUER: &str = "https://id.example.com/realms/shop";
const AUDIENCE: &str = "inventory";
/// The verifier's clock: tokens are made around it.
const NOW: u64 = 1_800_000_000;

/// The identity provider of a test: one key of each kind, each with its `kid`.
struct Provider {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
    ed: Ed25519KeyPair,
    random: SystemRandom,
}

impl Provider {
    fn new() -> Provider {
        let random = SystemRandom::new();
        // PKCS#1 DER, made once with `openssl genpkey -algorithm RSA` for these tests only.
        let rsa =
            RsaKeyPair::from_der(&std::fs::read("tests/fixtures/jwt/rs256-test-only.der").unwrap())
                .unwrap();
        let ec_pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &random)
                .unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            ec_pkcs8.as_ref(),
            &random,
        )
        .unwrap();
        let ed =
            Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&random).unwrap().as_ref())
                .unwrap();
        Provider {
            rsa,
            ec,
            ed,
            random,
        }
    }

    /// The JWKS document the provider publishes.
    fn jwks(&self) -> String {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let rsa = signature::RsaPublicKeyComponents::<Vec<u8>>::from(self.rsa.public());
        let point = self.ec.public_key().as_ref();
        json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": b64(&rsa.n), "e": b64(&rsa.e)},
            {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])},
            {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64(self.ed.public_key().as_ref())},
            // An encryption key and a key of a type the server does not use: skipped.
            {"kty": "RSA", "kid": "enc-1", "use": "enc", "n": b64(&rsa.n), "e": b64(&rsa.e)},
            {"kty": "oct", "kid": "sym-1", "k": "c2VjcmV0"},
        ]})
        .to_string()
    }

    /// A token of `claims` signed with `algorithm` (`kid` as given).
    fn sign(&self, algorithm: &str, kid: Option<&str>, claims: &Value) -> String {
        let mut header = json!({"alg": algorithm, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match algorithm {
            "RS256" => {
                let mut signature = vec![0; self.rsa.public().modulus_len()];
                self.rsa
                    .sign(
                        &signature::RSA_PKCS1_SHA256,
                        &self.random,
                        signed.as_bytes(),
                        &mut signature,
                    )
                    .unwrap();
                signature
            }
            "ES256" => self
                .ec
                .sign(&self.random, signed.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            "EdDSA" => self.ed.sign(signed.as_bytes()).as_ref().to_vec(),
            "none" => Vec::new(),
            other => panic!("no key for {other}"),
        };
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// The verifier the server uses: this provider's JWKS, roles in a nested claim.
    fn verifier(&self, clock: Arc<ManualClock>, max_in_flight: Option<usize>) -> JwtVerifier {
        let keys = VerificationKey::from_jwks(&self.jwks()).unwrap();
        assert_eq!(
            keys.len(),
            3,
            "the encryption key and the oct key are skipped"
        );
        JwtVerifier::new(
            JwtConfig {
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                algorithms: vec![Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa],
                keys,
                role_claim: "realm_access.roles".into(),
                stores_claim: "stores".into(),
                leeway_seconds: 60,
                max_in_flight,
            },
            clock,
        )
    }
}

/// The claims of a good token for `subject` with `role` in `stores`, valid for an hour.
fn claims(subject: &str, role: &str, stores: &[&str]) -> Value {
    json!({
        "iss": ISSUER,
        "aud": [AUDIENCE, "account"],
        "sub": subject,
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 3600,
        "realm_access": {"roles": ["offline_access", role]},
        "stores": stores,
    })
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_unix_millis(NOW * 1000)))
}

/// A token per algorithm names its subject (the actor of its events), its role and its stores.
#[tokio::test]
async fn a_jwt_names_its_subject_role_and_stores() {
    let provider = Provider::new();
    let admin = credential("back-office", Role::Admin, &[], None);
    let authenticator =
        Authenticator::new(vec![admin.entry.clone()]).with_jwt(provider.verifier(clock(), None));
    let server = Server::start_with(authenticator, Arc::new(SystemClock)).await;
    for store in ["store-a", "store-b"] {
        server
            .commands()
            .add_stock(as_(&admin.token, add_stock("p", store, 10)))
            .await
            .unwrap();
    }
    for (algorithm, kid) in [("RS256", "rsa-1"), ("ES256", "ec-1"), ("EdDSA", "ed-1")] {
        let subject = format!("pos-{algorithm}");
        let token = provider.sign(
            algorithm,
            Some(kid),
            &claims(&subject, "sales", &["store-a"]),
        );
        server
            .commands()
            .reserve_stock(as_(&token, reserve_stock("p", "store-a", 1)))
            .await
            .unwrap_or_else(|status| panic!("{algorithm}: {status:?}"));
        let status = server
            .commands()
            .reserve_stock(as_(&token, reserve_stock("p", "store-b", 1)))
            .await
            .unwrap_err();
        assert_refused(&status, Code::PermissionDenied, "STORE_NOT_PERMITTED");
        let status = server
            .commands()
            .add_stock(as_(&token, add_stock("p", "store-a", 1)))
            .await
            .unwrap_err();
        assert_refused(&status, Code::PermissionDenied, "ROLE_NOT_PERMITTED");
        // The same token again: answered from the cache of verified tokens, the same way.
        server
            .queries()
            .get_stock(as_(&token, get_stock("p", "store-a", 0)))
            .await
            .unwrap();
    }
    // Without a kid the token is checked against every key of its algorithm.
    let token = provider.sign("EdDSA", None, &claims("pos-no-kid", "sales", &["store-a"]));
    server
        .commands()
        .reserve_stock(as_(&token, reserve_stock("p", "store-a", 1)))
        .await
        .unwrap();
    // Stores as one space-separated string, and no stores claim: every store.
    let mut spaced = claims("reader-ab", "reader", &[]);
    spaced["stores"] = json!("store-a store-b");
    let token = provider.sign("ES256", Some("ec-1"), &spaced);
    server
        .queries()
        .get_stock(as_(&token, get_stock("p", "store-b", 0)))
        .await
        .unwrap();
    let mut everywhere = claims("ops", "operator", &[]);
    everywhere.as_object_mut().unwrap().remove("stores");
    let token = provider.sign("RS256", Some("rsa-1"), &everywhere);
    server
        .commands()
        .add_stock(as_(&token, add_stock("p", "store-b", 5)))
        .await
        .unwrap();

    let history = server.history(&admin, "p", "store-a").await;
    let actors: Vec<&str> = history.iter().map(|event| event.actor.as_str()).collect();
    assert_eq!(
        actors,
        [
            "back-office",
            "jwt:pos-RS256",
            "jwt:pos-ES256",
            "jwt:pos-EdDSA",
            "jwt:pos-no-kid"
        ]
    );
    assert_eq!(server.stock(&admin, "p", "store-a").await, (10, 4));
    assert_eq!(server.stock(&admin, "p", "store-b").await, (15, 0));
    server.stop().await;
}

/// Every wrong token is refused with `TOKEN_INVALID`, or `TOKEN_EXPIRED` for a good token past
/// its time, and nothing more; none of them stores anything.
#[tokio::test]
async fn wrong_jwts_are_refused_with_only_the_reason() {
    let provider = Provider::new();
    let clock = clock();
    let admin = credential("back-office", Role::Admin, &[], None);
    let authenticator = Authenticator::new(vec![admin.entry.clone()])
        .with_jwt(provider.verifier(clock.clone(), None));
    let server = Server::start_with(authenticator, Arc::new(SystemClock)).await;
    let good = || claims("ops", "admin", &[]);
    let with = |field: &str, value: Value| {
        let mut claims = good();
        claims[field] = value;
        claims
    };
    let without = |field: &str| {
        let mut claims = good();
        claims.as_object_mut().unwrap().remove(field);
        claims
    };
    let signed = |claims: &Value| provider.sign("ES256", Some("ec-1"), claims);
    // Another provider's key under this provider's kid.
    let impostor = Provider::new();
    let tampered = {
        let token = signed(&good());
        let parts: Vec<&str> = token.split('.').collect();
        let more = URL_SAFE_NO_PAD.encode(with("sub", json!("someone-else")).to_string());
        format!("{}.{more}.{}", parts[0], parts[2])
    };
    // HS256 keyed with the RSA key's public modulus: the confusion of a public key for a
    // shared secret that libraries have fallen for.
    let confused = {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": "rsa-1"}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(good().to_string());
        let signed = format!("{header}.{payload}");
        let rsa = signature::RsaPublicKeyComponents::<Vec<u8>>::from(provider.rsa.public());
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &rsa.n);
        let tag = ring::hmac::sign(&key, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired past the leeway",
            signed(&with("exp", json!(NOW - 61))),
            "TOKEN_EXPIRED",
        ),
        (
            "wrong audience",
            signed(&with("aud", json!("billing"))),
            "TOKEN_INVALID",
        ),
        ("no audience", signed(&without("aud")), "TOKEN_INVALID"),
        (
            "wrong issuer",
            signed(&with("iss", json!("https://evil.example.com/"))),
            "TOKEN_INVALID",
        ),
        ("no expiry", signed(&without("exp")), "TOKEN_INVALID"),
        (
            "not yet valid",
            signed(&with("nbf", json!(NOW + 120))),
            "TOKEN_INVALID",
        ),
        (
            "signed by another key",
            impostor.sign("ES256", Some("ec-1"), &good()),
            "TOKEN_INVALID",
        ),
        (
            "expired and signed by another key",
            impostor.sign("ES256", Some("ec-1"), &with("exp", json!(NOW - 3600))),
            "TOKEN_INVALID",
        ),
        ("claims changed after signing", tampered, "TOKEN_INVALID"),
        (
            "alg none",
            provider.sign("none", None, &good()),
            "TOKEN_INVALID",
        ),
        (
            "HS256 with the public key as secret",
            confused,
            "TOKEN_INVALID",
        ),
        (
            "a kid of a key of another algorithm",
            provider.sign("ES256", Some("rsa-1"), &good()),
            "TOKEN_INVALID",
        ),
        (
            "the subject the server's own events name",
            signed(&with("sub", json!("system"))),
            "TOKEN_INVALID",
        ),
        ("no subject", signed(&without("sub")), "TOKEN_INVALID"),
        (
            "no role",
            signed(&with("realm_access", json!({"roles": ["offline_access"]}))),
            "TOKEN_INVALID",
        ),
        (
            "a replica with stores",
            signed(&claims("replica-1", "replica", &["store-a"])),
            "TOKEN_INVALID",
        ),
        (
            "a store id that is not one",
            signed(&claims("pos", "sales", &[""])),
            "TOKEN_INVALID",
        ),
        ("not a JWT at all", "a.b.c".to_owned(), "TOKEN_INVALID"),
    ];
    for (case, token, reason) in &cases {
        let status = server
            .commands()
            .add_stock(as_(token, add_stock("p", "store-a", 1)))
            .await
            .unwrap_err();
        assert_refused(&status, Code::Unauthenticated, reason);
        assert!(
            !status.message().contains("aud") && !status.message().contains("iss"),
            "{case}: says which part was wrong: {status:?}"
        );
    }
    // Within the leeway an expired token still works.
    server
        .commands()
        .add_stock(as_(
            &signed(&with("exp", json!(NOW - 30))),
            add_stock("p", "store-a", 1),
        ))
        .await
        .unwrap();
    // A token verified and cached expires all the same.
    let token = signed(&with("exp", json!(NOW + 100)));
    server
        .queries()
        .get_stock(as_(&token, get_stock("p", "store-a", 0)))
        .await
        .unwrap();
    clock.advance_millis(200 * 1000);
    let status = server
        .queries()
        .get_stock(as_(&token, get_stock("p", "store-a", 0)))
        .await
        .unwrap_err();
    assert_refused(&status, Code::Unauthenticated, "TOKEN_EXPIRED");
    assert_eq!(
        server.stock(&admin, "p", "store-a").await,
        (1, 0),
        "only the token within its leeway added stock"
    );
    server.stop().await;
}

/// `[auth.jwt] max_in_flight` is each subject's own: one flooding leaves the others served.
#[tokio::test]
async fn one_jwt_subject_at_its_limit_does_not_hold_up_another() {
    let provider = Provider::new();
    let authenticator =
        Authenticator::new(Vec::new()).with_jwt(provider.verifier(clock(), Some(2)));
    let server = Server::start_with(authenticator, Arc::new(SystemClock)).await;
    let flooding = provider.sign("EdDSA", Some("ed-1"), &claims("flooding", "reader", &[]));
    let other = provider.sign("EdDSA", Some("ed-1"), &claims("other", "reader", &[]));
    let waiting = |token: String, query: tonic::transport::Channel| async move {
        let mut request = as_(&token, get_stock("p", "store-a", 1_000_000));
        request.set_timeout(Duration::from_secs(3));
        inventory::grpc::pb::query_service_client::QueryServiceClient::new(query)
            .get_stock(request)
            .await
    };
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(waiting(flooding.clone(), server.query.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = server
        .queries()
        .get_stock(as_(&flooding, get_stock("p", "store-a", 0)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        server
            .queries()
            .get_stock(as_(&other, get_stock("p", "store-a", 0))),
    )
    .await
    .expect("answered while the other subject is at its limit");
    assert_eq!(
        answer.unwrap_err().code(),
        Code::NotFound,
        "served: no such item"
    );
    for waiting in held {
        assert_eq!(
            waiting.await.unwrap().unwrap_err().code(),
            Code::DeadlineExceeded
        );
    }
    server.stop().await;
}

/// An RSA public key as a PEM `PUBLIC KEY` block, as `openssl rsa -pubout` writes it (its
/// modulus has DER's leading zero byte), verifies the provider's RS256 tokens.
#[test]
fn an_rsa_public_key_in_pem_verifies_rs256() {
    let provider = Provider::new();
    let pem = std::fs::read("tests/fixtures/jwt/rs256-test-only.pub.pem").unwrap();
    let key = VerificationKey::from_pem(&pem).unwrap();
    let verifier = JwtVerifier::new(
        JwtConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            algorithms: vec![Algorithm::Rs256],
            keys: vec![key],
            role_claim: "realm_access.roles".into(),
            stores_claim: "stores".into(),
            leeway_seconds: 60,
            max_in_flight: None,
        },
        clock(),
    );
    let token = provider.sign("RS256", None, &claims("erp", "reader", &[]));
    let principal = verifier.verify(&token).unwrap();
    assert_eq!(
        (&*principal.name, principal.role),
        ("jwt:erp", Role::Reader)
    );
    // Signed by another key: refused.
    let token = provider.sign("ES256", None, &claims("erp", "reader", &[]));
    assert!(verifier.verify(&token).is_err());
}

/// A subject cannot pass as the server, as an unauthenticated server's requests, or as a
/// configured credential, nor carry control characters into events and logs.
#[test]
fn a_jwt_subject_cannot_pass_as_another_actor() {
    let provider = Provider::new();
    let verifier = provider.verifier(clock(), None);
    for subject in [
        "system",
        "System ",
        " SYSTEM",
        "anonymous",
        "Anonymous",
        "pos\nb",
        "pos\u{1b}[31m",
        "pos\u{7f}",
        "",
    ] {
        let token = provider.sign("ES256", Some("ec-1"), &claims(subject, "admin", &[]));
        assert!(
            verifier.verify(&token).is_err(),
            "subject {subject:?} was accepted"
        );
    }
    // A subject named like an API token is kept apart from it: `jwt:pos-b`, not `pos-b`.
    let token = provider.sign("ES256", Some("ec-1"), &claims("pos-b", "sales", &[]));
    assert_eq!(&*verifier.verify(&token).unwrap().name, "jwt:pos-b");
}

use support::inventory_with_env as inventory;

/// The binary takes `[auth.jwt]` with a PEM public key, and refuses a bad section naming the
/// key.
#[tokio::test]
async fn the_binary_takes_auth_jwt_from_the_config_file() {
    let directory = tempfile::tempdir().unwrap();
    // The identity provider's key as a PEM file, made by rcgen and signed with by ring.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let pem = directory.path().join("idp.pem");
    std::fs::write(&pem, key.public_key_pem()).unwrap();
    let random = SystemRandom::new();
    let signer = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &key.serialize_der(),
        &random,
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256"}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(
            json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "erp", "exp": now + 600,
                   "https://shop.example.com/role": "operator"})
            .to_string(),
        );
        let signed = format!("{header}.{payload}");
        let signature = signer.sign(&random, signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    };
    let section = format!(
        "[auth.jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\npublic_key = \"{}\"\n\
         role_claim = \"https://shop.example.com/role\"\nmax_in_flight = 16\n",
        pem.display()
    );
    let config = directory.path().join("inventory.toml");
    std::fs::write(
        &config,
        format!(
            "log = \"{}\"\ncommand_addr = \"127.0.0.1:0\"\nquery_addr = \"127.0.0.1:0\"\n\
             metrics_addr = \"off\"\n{section}",
            directory.path().join("data").display()
        ),
    )
    .unwrap();
    let mut process =
        support::Process::start(&["--config", config.to_str().unwrap()], &["command"]).await;
    let channel = support::channel(process.address("command")).await;
    CommandServiceClient::new(channel.clone())
        .add_stock(as_(&token, add_stock("p", "store-a", 3)))
        .await
        .unwrap();
    let status = CommandServiceClient::new(channel)
        .add_stock(add_stock("p", "store-a", 3))
        .await
        .unwrap_err();
    assert_refused(&status, Code::Unauthenticated, "TOKEN_MISSING");
    process.kill().await;

    // Bad sections: refused at start, the key named.
    let base = format!("issuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n");
    let key_line = format!("public_key = \"{}\"\n", pem.display());
    for (section, key) in [
        (format!("audience = \"{AUDIENCE}\"\n{key_line}"), "issuer"),
        (base.clone(), "auth.jwt.public_key"),
        (
            format!("{base}{key_line}algorithms = [\"ES256\", \"XS1\"]\n"),
            "auth.jwt.algorithms[1]",
        ),
        (
            format!("{base}{key_line}algorithms = [\"RS256\"]\n"),
            "auth.jwt.algorithms[0]",
        ),
        (
            format!("{base}{key_line}algorithms = [\"ES256\", \"HS256\"]\n"),
            "auth.jwt.hmac_secret_env",
        ),
        (
            format!(
                "{base}{key_line}algorithms = [\"ES256\", \"HS256\"]\nhmac_secret_env = \"INVENTORY_TEST_NO_SUCH_VARIABLE\"\n"
            ),
            "auth.jwt.hmac_secret_env",
        ),
        (
            format!("{base}public_key = \"{}\"\n", config.display()),
            "auth.jwt.public_key",
        ),
        (
            format!("{base}{key_line}audiences = [\"x\"]\n"),
            "audiences",
        ),
        (
            format!("{base}{key_line}max_in_flight = 0\n"),
            "auth.jwt.max_in_flight",
        ),
    ] {
        let bad = directory.path().join("bad.toml");
        std::fs::write(&bad, format!("[auth.jwt]\n{section}")).unwrap();
        let output = inventory(&["--config", bad.to_str().unwrap()], &[]);
        assert!(!output.status.success(), "{section}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{section}: {stderr}");
    }
    // An HS256 secret too short to be one is refused.
    let hmac = directory.path().join("hmac.toml");
    std::fs::write(
        &hmac,
        format!(
            "command_addr = \"127.0.0.1:0\"\nquery_addr = \"127.0.0.1:0\"\nmetrics_addr = \"off\"\n\
             log = \"{}\"\n[auth.jwt]\n{base}algorithms = [\"HS256\"]\nhmac_secret_env = \"JWT_SECRET\"\n",
            directory.path().join("data-hmac").display()
        ),
    )
    .unwrap();
    let short = inventory(
        &["--config", hmac.to_str().unwrap()],
        &[("JWT_SECRET", "too short")],
    );
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 32 bytes"));
}

/// Issue 28, finding 10: unsigned JWTs (`algorithms = ["none"]`) make anyone admin, so with
/// them the server refuses an address beyond loopback, even with TLS, unless --insecure.
#[test]
fn unsigned_jwts_are_refused_beyond_loopback_even_with_tls() {
    let directory = tempfile::tempdir().unwrap();
    let certs = directory.path().join("certs");
    let generated = inventory(&["cert", "generate", "--out", certs.to_str().unwrap()], &[]);
    assert!(generated.status.success(), "{generated:?}");
    let config = directory.path().join("inventory.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n\n[auth.jwt]\nissuer = \"https://idp.example\"\n\
             audience = \"inventory\"\nalgorithms = [\"none\"]\n",
            certs.join("server.pem"),
            certs.join("server.key"),
        ),
    )
    .unwrap();
    let data = directory.path().join("data");
    // A server that starts instead of refusing is stopped, and the test fails.
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_inventory"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--log",
            data.to_str().unwrap(),
            "--command-addr",
            "0.0.0.0:0",
            "--query-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "off",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            server.kill().unwrap();
            panic!("the server started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0")
            && stderr.contains("\"none\"")
            && stderr.contains("--insecure"),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing started");
}
