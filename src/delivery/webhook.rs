//! The webhook sink: each batch is one HTTP POST of
//! `{"sink": …, "delivery_id": …, "events": [<canonical protobuf JSON>, …]}`, signed with the
//! sink's secret. Any 2xx answer acknowledges the batch; anything else (another status, a
//! timeout, a refused connection) is a failure, retried by the deliverer.
//!
//! Headers: `Inventory-Delivery-Id` (the same on every try of a batch) and
//! `Inventory-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`. A receiver
//! recomputes the HMAC over the raw body, compares in constant time, and refuses a `t` far
//! from its clock (a replayed request).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use super::{Batch, DeliveryError, Sink};
use crate::app::Clock;
use crate::log::BoxFuture;
use crate::log::codec::json;

/// Where the system's trusted CAs are looked for when a webhook names no `ca` file:
/// `SSL_CERT_FILE`, then the usual bundles of Debian, Fedora and Alpine.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// A webhook's endpoint, checked. Credentials in the URL (`https://user:pass@host/…`) are sent
/// as an `Authorization: Basic` header, never in `Host`, and never shown.
#[derive(Clone)]
pub struct Endpoint {
    pub uri: Uri,
    host: String,
    port: u16,
    https: bool,
    /// The `Host` header: the URL's host and port, without its userinfo.
    host_header: String,
    /// `Basic …` of the URL's userinfo, percent-decoded.
    authorization: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&super::redacted(&self.uri.to_string()))
    }
}

impl Endpoint {
    /// An `http://` or `https://` URL with a host.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: Uri = url
            .parse()
            .map_err(|error| format!("{url:?} is not a URL: {error}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "{url:?}: a webhook URL starts with http:// or https://"
                ));
            }
        };
        let host = uri
            .host()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| format!("{url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri.authority().map_or("", |authority| authority.as_str());
        let (userinfo, host_header) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        let authorization = userinfo.map(|userinfo| {
            use base64::Engine;
            let decoded = percent_decoded(userinfo);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(decoded)
            )
        });
        Ok(Endpoint {
            host_header: host_header.to_owned(),
            authorization,
            uri,
            host,
            port,
            https,
        })
    }

    pub fn is_https(&self) -> bool {
        self.https
    }
}

/// `text` with its `%XX` escapes decoded (a URL's userinfo), as bytes.
fn percent_decoded(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |byte: u8| (byte as char).to_digit(16);
        match (bytes[index], bytes.get(index + 1), bytes.get(index + 2)) {
            (b'%', Some(&high), Some(&low)) if hex(high).is_some() && hex(low).is_some() => {
                decoded.push((hex(high).unwrap() * 16 + hex(low).unwrap()) as u8);
                index += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    decoded
}

/// The TLS client of `https://` webhooks: trusting the CA certificates of the PEM file `ca`,
/// or the system's when `None`.
pub fn tls_connector(ca: Option<&std::path::Path>) -> Result<TlsConnector, String> {
    use rustls::pki_types::pem::PemObject;
    let path = match ca {
        Some(path) => path.to_owned(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                SYSTEM_BUNDLES
                    .iter()
                    .map(std::path::PathBuf::from)
                    .find(|path| path.exists())
            })
            .ok_or("no system CA bundle found: name the CA of the webhook's certificate in `ca`")?,
    };
    let certificates = CertificateDer::pem_file_iter(&path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("{}: {error}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(certificates);
    if roots.is_empty() {
        return Err(format!("{}: no CA certificate in it", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS set-up: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The signature header's value for `body` sent at `unix_seconds`.
pub fn signature(secret: &[u8], unix_seconds: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(unix_seconds.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let mut hex = String::with_capacity(64);
    for byte in tag.as_ref() {
        hex.push_str(&format!("{byte:02x}"));
    }
    format!("t={unix_seconds},v1={hex}")
}

/// The JSON body of a batch.
pub fn body(sink: &str, batch: &Batch) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + batch.events.len() * 512);
    out.extend_from_slice(b"{\"sink\":");
    out.extend_from_slice(serde_json::to_string(sink).expect("a string").as_bytes());
    out.extend_from_slice(b",\"delivery_id\":");
    out.extend_from_slice(
        serde_json::to_string(&batch.delivery_id)
            .expect("a string")
            .as_bytes(),
    );
    out.extend_from_slice(b",\"events\":[");
    for (index, event) in batch.events.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        json::write_event(event, &mut out);
    }
    out.extend_from_slice(b"]}");
    out
}

pub struct WebhookSink {
    name: String,
    endpoint: Endpoint,
    secret: Vec<u8>,
    timeout: Duration,
    tls: Option<TlsConnector>,
    clock: Arc<dyn Clock>,
    /// A kept-alive connection, reused while the receiver keeps it open.
    connection: Option<SendRequest<Full<Bytes>>>,
}

impl WebhookSink {
    pub fn new(
        name: &str,
        endpoint: Endpoint,
        secret: Vec<u8>,
        timeout: Duration,
        tls: Option<TlsConnector>,
        clock: Arc<dyn Clock>,
    ) -> WebhookSink {
        WebhookSink {
            name: name.to_owned(),
            endpoint,
            secret,
            timeout,
            tls,
            clock,
            connection: None,
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, DeliveryError> {
        let failed = |what: &str, error: &dyn std::fmt::Display| {
            DeliveryError::unsent(format!(
                "{what} {}:{}: {error}",
                self.endpoint.host, self.endpoint.port
            ))
        };
        let tcp = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(|error| failed("cannot connect to", &error))?;
        let _ = tcp.set_nodelay(true);
        if let Some(tls) = &self.tls {
            let name = ServerName::try_from(self.endpoint.host.clone())
                .map_err(|error| failed("invalid TLS name", &error))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|error| failed("TLS handshake failed with", &error))?;
            self.handshake(TokioIo::new(stream)).await
        } else {
            self.handshake(TokioIo::new(tcp)).await
        }
    }

    async fn handshake<T>(&self, io: TokioIo<T>) -> Result<SendRequest<Full<Bytes>>, DeliveryError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|error| DeliveryError::unsent(format!("HTTP handshake failed: {error}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    async fn post(&mut self, batch: &Batch) -> Result<(), DeliveryError> {
        let body = body(&self.name, batch);
        let unix_seconds = self.clock.now().unix_millis() / 1000;
        let signature = signature(&self.secret, unix_seconds, &body);
        let mut sender = match self.connection.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        sender
            .ready()
            .await
            .map_err(|error| DeliveryError::unsent(format!("connection lost: {error}")))?;
        let path = self
            .endpoint
            .uri
            .path_and_query()
            .map_or("/", |path| path.as_str());
        let mut request =
            Request::post(path).header(hyper::header::HOST, self.endpoint.host_header.as_str());
        if let Some(authorization) = &self.endpoint.authorization {
            request = request.header(hyper::header::AUTHORIZATION, authorization.as_str());
        }
        let request = request
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "inventory-webhook/1")
            .header("Inventory-Delivery-Id", batch.delivery_id.as_str())
            .header("Inventory-Signature", signature)
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| DeliveryError::unsent(format!("cannot build the request: {error}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| DeliveryError::sent(format!("request failed: {error}")))?;
        let status = response.status();
        // The answer's body is read (and dropped) so the connection can be used again.
        let answer = response
            .into_body()
            .collect()
            .await
            .map_err(|error| DeliveryError::sent(format!("reading the answer failed: {error}")))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
            return Err(DeliveryError::sent(format!(
                "the endpoint answered {status}{}",
                if text.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", text.trim())
                }
            )));
        }
        self.connection = Some(sender);
        Ok(())
    }
}

impl Sink for WebhookSink {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn deliver<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let timeout = self.timeout;
            match tokio::time::timeout(timeout, self.post(batch)).await {
                Ok(result) => result,
                Err(_) => {
                    self.connection = None;
                    Err(DeliveryError::sent(format!(
                        "no answer within {} ms",
                        timeout.as_millis()
                    )))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_the_time_a_dot_and_the_body() {
        // Python: hmac.new(b"secret", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"secret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_endpoints() {
        assert!(Endpoint::parse("http://127.0.0.1:8080/hook").is_ok());
        assert!(
            Endpoint::parse("https://erp.example/hooks/stock")
                .unwrap()
                .is_https()
        );
        for bad in ["ftp://x/", "127.0.0.1:80", "http:///path", "not a url"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
