//! Overload protection: a server answers at most [`MAX_IN_FLIGHT_REQUESTS`] requests at once
//! and refuses the rest at once with `RESOURCE_EXHAUSTED`, instead of queueing them without
//! bound. Health checks are never refused, so an overloaded server still answers its
//! orchestrator. Client deadlines (`grpc-timeout`) are honoured by tonic itself, capped by
//! [`MAX_REQUEST_DURATION`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::codegen::http;
use tower::{Layer, Service};

/// The most requests one server works on at once. The command queue and group commit absorb
/// far more than the cores can decode, so past this a request would only wait.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 4096;

/// The longest any unary request may take, whatever deadline the client sent.
pub const MAX_REQUEST_DURATION: Duration = Duration::from_secs(30);

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

type ResponseFuture<E> =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

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
