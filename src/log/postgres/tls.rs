//! TLS to PostgreSQL as the URL's `sslmode` asks, with libpq's meanings:
//!
//! - `disable`: plain text.
//! - `prefer` (the default, as libpq's): TLS when the server offers it, plain text otherwise;
//!   the server's certificate is not checked.
//! - `require`: TLS or no connection; the certificate is checked against `sslrootcert` when
//!   the URL names one (then as `verify-ca`), not checked otherwise.
//! - `verify-ca`: TLS, the certificate signed by a CA of `sslrootcert`.
//! - `verify-full`: as `verify-ca`, and the certificate is for the host connected to.
//!
//! tokio-postgres knows only the first three and no `sslrootcert`, so the URL is read here
//! first and handed on with those two rewritten into what it takes.

use std::sync::Arc;

use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::log::LogError;

/// What `sslmode` asks of the server's certificate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verification {
    /// Taken as it comes: encryption against eavesdropping, not against a server in the middle.
    None,
    /// Signed by a CA of `sslrootcert`, for any host.
    Ca,
    /// Signed by a CA of `sslrootcert`, for the host connected to.
    Full,
}

/// A URL's connection settings and the TLS connector they ask for.
pub struct PostgresTls {
    pub config: tokio_postgres::Config,
    pub connector: MakeRustlsConnect,
    pub verification: Verification,
}

fn invalid(message: String) -> LogError {
    LogError::Backend {
        context: "parsing the url",
        message,
    }
}

/// Reads `url`'s `sslmode` and `sslrootcert` and makes the connector they ask for.
/// Over 70 lines: libpq's `sslmode` values, one arm each, with the checks each implies.
pub fn configure(url: &str) -> Result<PostgresTls, LogError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let (mut mode, mut root_cert) = (None, None);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => mode = Some(value.to_owned()),
            Some(("sslrootcert", value)) => root_cert = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    let (ssl_mode, verification) = match (mode.as_deref(), &root_cert) {
        (None | Some("prefer"), _) => (SslMode::Prefer, Verification::None),
        (Some("disable"), _) => (SslMode::Disable, Verification::None),
        (Some("require"), None) => (SslMode::Require, Verification::None),
        (Some("require" | "verify-ca"), Some(_)) => (SslMode::Require, Verification::Ca),
        (Some("verify-full"), Some(_)) => (SslMode::Require, Verification::Full),
        (Some(mode @ ("verify-ca" | "verify-full")), None) => {
            return Err(invalid(format!(
                "sslmode={mode} checks the server's certificate against a CA: add \
                 sslrootcert=<a PEM file of the CA> to the URL"
            )));
        }
        (Some(other), _) => {
            return Err(invalid(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    let rebuilt = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: tokio_postgres::Config = rebuilt
        .parse()
        .map_err(|error: tokio_postgres::Error| invalid(error.to_string()))?;
    config.ssl_mode(ssl_mode);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid(format!("TLS set-up: {error}")))?;
    let client = match (&root_cert, verification) {
        (Some(path), Verification::Ca | Verification::Full) => {
            let roots = read_roots(path)?;
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|error| invalid(format!("sslrootcert {path}: {error}")))?;
            if verification == Verification::Full {
                builder.with_webpki_verifier(verifier).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyHost(verifier)))
                    .with_no_client_auth()
            }
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth(),
    };
    Ok(PostgresTls {
        config,
        connector: MakeRustlsConnect::new(client),
        verification,
    })
}

fn read_roots(path: &str) -> Result<rustls::RootCertStore, LogError> {
    use rustls::pki_types::pem::PemObject;
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| invalid(format!("sslrootcert {path}: {error}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(format!("sslrootcert {path}: {error}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|error| invalid(format!("sslrootcert {path}: {error}")))?;
    }
    if roots.is_empty() {
        return Err(invalid(format!("sslrootcert {path}: no certificate in it")));
    }
    Ok(roots)
}

/// `%XX` escapes of a URL's value (a path with spaces), nothing else.
fn percent_decode(value: &str) -> Result<String, LogError> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = value
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| invalid(format!("sslrootcert {value:?}: a bad % escape")))?;
            decoded.push(hex);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| invalid(format!("sslrootcert {value:?}: not UTF-8")))
}

/// `verify-ca`: the chain checked as `verify-full` does, a certificate for another host
/// accepted.
#[derive(Debug)]
struct AnyHost(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHost {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without `sslrootcert`: any certificate, as libpq takes it; the
/// handshake's signature is still checked against the certificate's key.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_read_and_the_rest_handed_on() {
        let plain = configure("postgres://u@h:5432/db?application_name=a&sslmode=disable").unwrap();
        assert_eq!(plain.config.get_ssl_mode(), SslMode::Disable);
        assert_eq!(plain.config.get_application_name(), Some("a"));
        let default = configure("postgres://u@h/db").unwrap();
        assert_eq!(default.config.get_ssl_mode(), SslMode::Prefer);
        assert_eq!(default.verification, Verification::None);
        let required = configure("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(required.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(required.verification, Verification::None);
        for mode in ["verify-ca", "verify-full"] {
            let Err(error) = configure(&format!("postgres://u@h/db?sslmode={mode}")) else {
                panic!("{mode} without sslrootcert")
            };
            assert!(error.to_string().contains("sslrootcert"), "{error}");
        }
        let Err(error) = configure("postgres://u@h/db?sslmode=allow-everything") else {
            panic!("an unknown sslmode")
        };
        assert!(error.to_string().contains("verify-full"), "{error}");
        let Err(error) =
            configure("postgres://u@h/db?sslmode=verify-full&sslrootcert=/no/such%20file")
        else {
            panic!("a missing sslrootcert")
        };
        assert!(error.to_string().contains("/no/such file"), "{error}");
    }
}
