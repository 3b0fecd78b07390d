//! A webhook receiver for the tests: a real HTTP/1 server on 127.0.0.1, which records every
//! call (headers and raw body), checks nothing itself, and answers 500 while told to fail.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// One POST the receiver got.
#[derive(Clone, Debug)]
pub struct Call {
    pub delivery_id: String,
    pub signature: String,
    pub host: String,
    pub authorization: String,
    pub body: Bytes,
    /// Whether the receiver answered 2xx.
    pub accepted: bool,
}

impl Call {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }

    /// The `position` of each event in the body.
    pub fn positions(&self) -> Vec<u64> {
        self.json()["events"]
            .as_array()
            .expect("events is an array")
            .iter()
            .map(|event| {
                event["position"]
                    .as_str()
                    .expect("a uint64 is a string in the JSON mapping")
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    /// Whether `Inventory-Signature` is the HMAC-SHA256 of `t.body` with `secret`.
    pub fn signed_with(&self, secret: &[u8]) -> bool {
        let Some((t, v1)) = self
            .signature
            .strip_prefix("t=")
            .and_then(|rest| rest.split_once(",v1="))
        else {
            return false;
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let mut signed = t.as_bytes().to_vec();
        signed.push(b'.');
        signed.extend_from_slice(&self.body);
        let Some(tag) = hex(v1) else { return false };
        ring::hmac::verify(&key, &signed, &tag).is_ok()
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok())
        .collect()
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// Calls still to answer 500.
    fail_next: usize,
    /// Answer 500 to every call while set.
    failing: bool,
    /// How long each answer waits.
    delay: std::time::Duration,
}

pub struct Receiver {
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
    tasks: JoinSet<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// A receiver on `address` (one a stopped receiver had, to bring an endpoint back).
    pub async fn start_on(address: SocketAddr) -> Receiver {
        Receiver::serve(
            TcpListener::bind(address).await.unwrap(),
            Arc::default(),
            None,
        )
    }

    /// A receiver speaking HTTPS with `certified` (a certificate for 127.0.0.1 and its key).
    pub async fn start_tls(certified: &inventory::certificates::CertifiedKey) -> Receiver {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(certified.certificate_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(certified.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Receiver::serve(listener, Arc::default(), Some(acceptor))
    }

    /// Serves again on `address` with the calls recorded so far.
    pub async fn restart(self, address: SocketAddr) -> Receiver {
        let state = self.state.clone();
        drop(self);
        let listener = loop {
            match TcpListener::bind(address).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        Receiver::serve(listener, state, None)
    }

    fn serve(
        listener: TcpListener,
        state: Arc<Mutex<State>>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Receiver {
        let address = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        let shared = state.clone();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move { answer(request, &state).await }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Receiver {
            address,
            state,
            tasks,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/inventory", self.address)
    }

    /// The URL of a receiver started with [`Receiver::start_tls`].
    pub fn https_url(&self) -> String {
        format!("https://{}/hooks/inventory", self.address)
    }

    pub fn fail_next(&self, calls: usize) {
        self.state.lock().unwrap().fail_next = calls;
    }

    pub fn set_failing(&self, failing: bool) {
        self.state.lock().unwrap().failing = failing;
    }

    /// Makes every answer wait `delay`: a slow endpoint.
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The positions of the events of accepted calls, in the order they arrived.
    pub fn accepted_positions(&self) -> Vec<u64> {
        self.calls()
            .iter()
            .filter(|call| call.accepted)
            .flat_map(Call::positions)
            .collect()
    }

    /// The positions of every event received, accepted or not, in the order they arrived.
    pub fn received_positions(&self) -> Vec<u64> {
        self.calls().iter().flat_map(Call::positions).collect()
    }
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    state: &Mutex<State>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (delivery_id, signature) = (
        header("inventory-delivery-id"),
        header("inventory-signature"),
    );
    let (host, authorization) = (header("host"), header("authorization"));
    let body = request.into_body().collect().await?.to_bytes();
    let delay = state.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let accepted = {
        let mut state = state.lock().unwrap();
        let fail = state.failing || state.fail_next > 0;
        state.fail_next = state.fail_next.saturating_sub(1);
        state.calls.push(Call {
            delivery_id,
            signature,
            host,
            authorization,
            body,
            accepted: !fail,
        });
        !fail
    };
    let status = if accepted {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"")))
        .unwrap())
}
