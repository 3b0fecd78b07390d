//! Overload protection: a server answers at most [`MAX_IN_FLIGHT_REQUESTS`] requests at once
//! and refuses the rest at once with `RESOURCE_EXHAUSTED`, instead of queueing them without
//! bound. Health checks are never refused, so an overloaded server still answers its
//! orchestrator. Client deadlines (`grpc-timeout`) are honoured by tonic itself, capped by
//! [`MAX_REQUEST_DURATION`]. A server keeps at most [`MAX_CONNECTIONS`] client connections
//! open; a connection past that is closed as soon as it is accepted, so the client fails at
//! once (`UNAVAILABLE`) and can try another server, instead of waiting in the listen backlog.

use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::{Layer, Service};

use super::ResponseFuture;
use super::connection_guard::{ConnectionGuard, ConnectionTimeouts, unproven_budget};

/// The most requests one server works on at once. The command queue and group commit absorb
/// far more than the cores can decode, so past this a request would only wait.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 4096;

/// The longest any unary request may take, whatever deadline the client sent.
pub const MAX_REQUEST_DURATION: Duration = Duration::from_secs(30);

/// The most client connections one server keeps open. Each costs a file descriptor and a few
/// tens of KiB of buffers; store backends multiplex their calls over a few connections.
pub const MAX_CONNECTIONS: usize = 4096;

/// Requests per connection handled at once (HTTP/2 streams beyond it wait for the connection).
pub const MAX_CONCURRENT_STREAMS_PER_CONNECTION: u32 = 1024;

const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

/// The layer: shares one budget of permits among all requests of a server.
#[derive(Clone)]
pub struct InFlightLimitLayer {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl InFlightLimitLayer {
    pub fn new(limit: usize) -> InFlightLimitLayer {
        InFlightLimitLayer {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> Layer<S> for InFlightLimitLayer {
    type Service = InFlightLimit<S>;

    fn layer(&self, inner: S) -> InFlightLimit<S> {
        InFlightLimit {
            inner,
            permits: self.permits.clone(),
            limit: self.limit,
        }
    }
}

#[derive(Clone)]
pub struct InFlightLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
    limit: usize,
}

impl<S, B> Service<http::Request<B>> for InFlightLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path().starts_with(HEALTH_PATH) {
            return Box::pin(self.inner.call(request));
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let response = response.await;
                    // A streaming response keeps going after this; subscriptions have their
                    // own limit.
                    drop(permit);
                    response
                })
            }
            Err(_) => {
                metrics_refused();
                let limit = self.limit;
                Box::pin(async move {
                    Ok(tonic::Status::resource_exhausted(format!(
                        "the server is working on its limit of {limit} requests; retry with backoff"
                    ))
                    .into_http())
                })
            }
        }
    }
}

fn metrics_refused() {
    tracing::debug!("request refused: too many in flight");
}

/// The connections a server accepts: Nagle's algorithm off, and at most `max_connections`
/// open at once; one past the limit is closed at once and counted in
/// `inventory_connections_refused_total`.
///
/// tonic sets TCP_NODELAY only on listeners it binds itself; without it a small write (a
/// subscription's event, a response) can wait for the peer's delayed ACK, up to 40 ms on
/// Linux. The benchmark found exactly that tail.
pub fn incoming(
    server: &'static str,
    listener: TcpListener,
    max_connections: usize,
    timeouts: ConnectionTimeouts,
) -> impl tokio_stream::Stream<Item = std::io::Result<LimitedConnection>> {
    let permits = Arc::new(Semaphore::new(max_connections));
    let unproven = Arc::new(Semaphore::new(unproven_budget(max_connections)));
    let open = metrics::gauge!("inventory_connections_open", "server" => server);
    let refused = metrics::counter!("inventory_connections_refused_total", "server" => server);
    let mut last_warning: Option<std::time::Instant> = None;
    admitted(listener, move |stream: TcpStream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY on a connection");
        }
        let admitted = permits.clone().try_acquire_owned().and_then(|permit| {
            let own = unproven.clone().try_acquire_owned()?;
            Ok((permit, own))
        });
        match admitted {
            Ok((permit, own)) => {
                // A duplicate of the descriptor, for the watchdog to shut the socket down.
                let duplicate = match stream.as_fd().try_clone_to_owned() {
                    Ok(duplicate) => std::net::TcpStream::from(duplicate),
                    Err(error) => {
                        tracing::warn!(%error, "cannot duplicate a connection's descriptor");
                        return None;
                    }
                };
                open.increment(1.0);
                let guard = Arc::new(ConnectionGuard::new(duplicate, own));
                tokio::spawn(guard.clone().watch(timeouts));
                Some(LimitedConnection {
                    stream,
                    _permit: permit,
                    open: open.clone(),
                    guard,
                })
            }
            Err(_) => {
                refused.increment(1);
                // One warning per burst, not one per connection.
                let now = std::time::Instant::now();
                if last_warning.is_none_or(|at| now.duration_since(at) > Duration::from_secs(10)) {
                    last_warning = Some(now);
                    tracing::warn!(
                        server,
                        max_connections,
                        "connection limit reached (of all connections, or of those that have \
                         not yet sent an authenticated request): closing new connections"
                    );
                }
                // Dropping the stream closes it.
                None
            }
        }
    })
}

/// Accepted connections, passed through `admit`; those it refuses are skipped.
fn admitted(
    listener: TcpListener,
    mut admit: impl FnMut(TcpStream) -> Option<LimitedConnection> + Send + 'static,
) -> impl tokio_stream::Stream<Item = std::io::Result<LimitedConnection>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |accepted| {
        match accepted {
            Ok(stream) => admit(stream).map(Ok),
            Err(error) => Some(Err(error)),
        }
    })
}

/// An accepted connection holding one of the server's connection permits until it closes.
pub struct LimitedConnection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    open: metrics::Gauge,
    guard: Arc<ConnectionGuard>,
}

impl LimitedConnection {
    pub fn nodelay(&self) -> std::io::Result<bool> {
        self.stream.nodelay()
    }

    pub fn guard(&self) -> Arc<ConnectionGuard> {
        self.guard.clone()
    }
}

impl Drop for LimitedConnection {
    fn drop(&mut self) {
        // Before the stream's descriptor is closed (fields drop after this).
        self.guard.dropped();
        self.open.decrement(1.0);
    }
}

impl Connected for LimitedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, buffer)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut connections = Box::pin(super::incoming(
            "test",
            listener,
            8,
            super::ConnectionTimeouts::DEFAULT,
        ));
        let _client = tokio::net::TcpStream::connect(address).await.unwrap();
        let accepted = connections.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_until_one_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut connections = Box::pin(super::incoming(
            "test",
            listener,
            2,
            super::ConnectionTimeouts::DEFAULT,
        ));
        let _first_client = tokio::net::TcpStream::connect(address).await.unwrap();
        let first = connections.next().await.unwrap().unwrap();
        // Proven (as by a first authenticated request): it leaves the unproven budget.
        first.guard().prove();
        let _second_client = tokio::net::TcpStream::connect(address).await.unwrap();
        let second = connections.next().await.unwrap().unwrap();
        second.guard().prove();
        // The third is accepted and closed: its client reads end-of-stream at once.
        let mut third_client = tokio::net::TcpStream::connect(address).await.unwrap();
        let stream = tokio::spawn(async move {
            let next = connections.next().await.unwrap().unwrap();
            (connections, next)
        });
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), third_client.read(&mut byte))
            .await
            .expect("the refused connection is closed at once");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(
            !stream.is_finished(),
            "the refused connection was not handed to the server"
        );
        // Once a connection closes, a new one is admitted.
        drop(first);
        let _fourth_client = tokio::net::TcpStream::connect(address).await.unwrap();
        let (_connections, fourth) = tokio::time::timeout(Duration::from_secs(5), stream)
            .await
            .expect("a connection is admitted once a permit is free")
            .unwrap();
        assert!(fourth.nodelay().unwrap());
    }

    use std::time::Duration;
}
