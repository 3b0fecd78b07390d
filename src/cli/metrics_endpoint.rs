//! The `/metrics` endpoint: `GET /metrics` answered over HTTP/1.x with the Prometheus text
//! format, as the exporter renders it. One request per connection; anything else gets 404, a
//! request head over 8 KiB or slower than 5 s is dropped. Beyond loopback it is [`Guard`]ed:
//! served over the servers' TLS to a bearer credential of every store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::app::access::{Authenticator, StoreScope};
use crate::grpc::tls::ServerTls;

/// What a scrape must pass: the servers' TLS handshake, then `authorization: Bearer <token>`
/// naming a credential without `stores` (the metrics count every store's requests and events).
#[derive(Clone)]
pub struct Guard {
    pub tls: ServerTls,
    pub auth: Arc<Authenticator>,
}

/// How often histograms are drained into their summaries when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How `/metrics` at `address` is served: open on loopback; beyond it, over the servers' TLS to
/// a credential of every store when they have TLS and authentication; else only with
/// `--insecure` (open, with a warning), as the servers themselves.
pub fn guard(
    address: SocketAddr,
    insecure: bool,
    tls: &Option<ServerTls>,
    auth: &Option<Arc<Authenticator>>,
) -> Result<Option<Guard>, String> {
    if address.ip().is_loopback() {
        return Ok(None);
    }
    if let (Some(tls), Some(auth)) = (tls, auth) {
        return Ok(Some(Guard {
            tls: tls.clone(),
            auth: auth.clone(),
        }));
    }
    if !insecure {
        return Err(format!(
            "refusing to serve /metrics on {address} without TLS and authentication: the \
             metrics tell every store's request and event counts. Configure both (then a \
             scrape needs https and a token without stores), serve it on 127.0.0.1, turn it off \
             (metrics_addr = \"off\"), or pass --insecure (INVENTORY_INSECURE=true)"
        ));
    }
    tracing::warn!(
        %address,
        "--insecure: serving /metrics beyond loopback in plain HTTP without credentials"
    );
    Ok(None)
}

pub async fn serve(listener: TcpListener, handle: PrometheusHandle, guard: Option<Guard>) {
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            interval.tick().await;
            upkeep.run_upkeep();
        }
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let handle = handle.clone();
        let guard = guard.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, async move {
                match guard {
                    None => answer(stream, &handle, None).await,
                    Some(guard) => {
                        let stream = guard.tls.http1_acceptor().accept(stream).await?;
                        answer(stream, &handle, Some(&guard.auth)).await
                    }
                }
            })
            .await;
        });
    }
}

async fn answer(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    handle: &PrometheusHandle,
    auth: Option<&Authenticator>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 || head.len() + read > MAX_REQUEST_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (parts.next(), parts.next());
    let refusal = auth.and_then(|auth| refusal(auth, lines));
    let (status, content_type, body) = match (method, path, refusal) {
        (_, _, Some(refusal)) => refusal,
        (Some("GET"), Some("/metrics"), None) => {
            ("200 OK", "text/plain; version=0.0.4", handle.render())
        }
        _ => (
            "404 Not Found",
            "text/plain",
            "not found: the metrics are at GET /metrics\n".to_owned(),
        ),
    };
    let challenge = if status.starts_with("401") {
        "www-authenticate: Bearer\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.0 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{challenge}connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

type Answer = (&'static str, &'static str, String);

/// Why a scrape with these header lines is refused, if it is.
fn refusal<'a>(auth: &Authenticator, mut headers: impl Iterator<Item = &'a str>) -> Option<Answer> {
    let token = headers.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("authorization")
            .then(|| value.trim().strip_prefix("Bearer "))
            .flatten()
    });
    let refused = |status, body: &str| Some((status, "text/plain", format!("{body}\n")));
    let Some(token) = token else {
        return refused("401 Unauthorized", "send authorization: Bearer <token>");
    };
    match auth.authenticate(token.trim()) {
        Err(_) => refused("401 Unauthorized", "the credential is not valid"),
        Ok(authenticated) if authenticated.principal.stores != StoreScope::All => refused(
            "403 Forbidden",
            "the metrics count every store: a credential without stores reads them",
        ),
        Ok(_) => None,
    }
}
