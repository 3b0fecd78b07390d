//! Certificates for TLS: a private certificate authority that issues server and client
//! certificates, for `inventory cert generate` (a demo or a first deployment) and for the tests.
//! A retailer with its own PKI uses its own files instead; the servers only read PEM files.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// How long an issued certificate is valid.
pub const VALIDITY_DAYS: u64 = 365;

/// How far back an issued certificate's validity starts, so that a peer whose clock is a
/// little behind accepts it at once.
const BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
#[error("cannot make a certificate: {0}")]
pub struct CertificateError(#[from] rcgen::Error);

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertifiedKey {
    pub certificate_pem: String,
    pub key_pem: String,
}

/// A self-signed certificate authority.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
    key_pem: String,
}

impl CertificateAuthority {
    /// A new authority whose certificate's common name is `name`.
    pub fn new(name: &str) -> Result<CertificateAuthority, CertificateError> {
        let key = KeyPair::generate()?;
        let mut params = valid_params(Vec::new(), name)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(CertificateAuthority {
            certificate_pem: certificate.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The authority's certificate: what clients trust (`-cacert`, `--upstream-ca`) and what a
    /// server given `client_ca` checks client certificates against.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The authority's private key.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A server certificate for `hosts` (DNS names or IP addresses, each a subject alternative
    /// name; the first is also the common name).
    pub fn server(&self, hosts: &[String]) -> Result<CertifiedKey, CertificateError> {
        let name = hosts.first().map(String::as_str).unwrap_or("inventory");
        let mut params = valid_params(hosts.to_vec(), name)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate for mutual TLS whose common name, `name`, names the principal.
    pub fn client(&self, name: &str) -> Result<CertifiedKey, CertificateError> {
        let mut params = valid_params(Vec::new(), name)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> Result<CertifiedKey, CertificateError> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn valid_params(
    subject_alt_names: Vec<String>,
    common_name: &str,
) -> Result<CertificateParams, CertificateError> {
    let mut params = CertificateParams::new(subject_alt_names)?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, common_name);
    params.distinguished_name = subject;
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + Duration::from_secs(VALIDITY_DAYS * 24 * 3600)).into();
    Ok(params)
}
