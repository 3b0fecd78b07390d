//! What every RPC leaves behind: a count by status code and a latency in Prometheus, and,
//! when traces are exported, a server span that continues the client's W3C trace context.
//!
//! The status of a gRPC call is known only at its end: in the response headers for an error
//! answered at once ("trailers-only"), otherwise in the trailers after the last message. The
//! layer therefore wraps the response body and records the call when the trailers go out, or
//! as `CANCELLED` when the body is dropped before that (the client went away).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prost::Message;
use tonic::codegen::http;
use tower::{Layer, Service};

use super::ResponseFuture;
use super::connection_guard::Activity;
use super::tls::ConnectionInfo;
use tracing::Instrument;

use crate::telemetry;

/// Buckets of `inventory_grpc_request_duration_seconds`: from a fast read (tens of µs) to the
/// longest request a server allows.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 5.0, 30.0,
];

/// One RPC the servers answer.
#[derive(Debug)]
struct Method {
    /// `package.Service/Method`, the span name and the `method` label.
    name: &'static str,
    /// The part after the slash, for the span's `rpc.method`.
    method: &'static str,
    /// The service, for the span's `rpc.service`.
    service: &'static str,
    /// Streams have no meaningful latency: their duration is the subscription's life.
    server_streaming: bool,
}

/// Requests for paths no server answers share one label value, so that clients cannot grow
/// the metrics without bound by sending made-up paths.
static UNKNOWN: Method = Method {
    name: "unknown",
    method: "unknown",
    service: "unknown",
    server_streaming: false,
};

/// Every method of the services the servers run, from their descriptor sets.
fn methods() -> &'static HashMap<String, Method> {
    static METHODS: OnceLock<HashMap<String, Method>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let mut methods = HashMap::new();
        for set in [
            super::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let set = prost_types::FileDescriptorSet::decode(set)
                .expect("the compiled-in descriptor set decodes");
            for file in set.file {
                let package = file.package();
                for service in &file.service {
                    let service_name: &'static str =
                        Box::leak(format!("{package}.{}", service.name()).into_boxed_str());
                    for method in &service.method {
                        let name: &'static str =
                            Box::leak(format!("{service_name}/{}", method.name()).into_boxed_str());
                        methods.insert(
                            format!("/{name}"),
                            Method {
                                name,
                                method: &name[service_name.len() + 1..],
                                service: service_name,
                                server_streaming: method.server_streaming(),
                            },
                        );
                    }
                }
            }
        }
        for name in [
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            let (service, method) = name.split_once('/').expect("a slash");
            methods.insert(
                format!("/{name}"),
                Method {
                    name,
                    method,
                    service,
                    server_streaming: true,
                },
            );
        }
        methods
    })
}

/// The name of a gRPC status code, as the `code` label.
fn code_name(code: &[u8]) -> &'static str {
    match code {
        b"0" => "OK",
        b"1" => "CANCELLED",
        b"2" => "UNKNOWN",
        b"3" => "INVALID_ARGUMENT",
        b"4" => "DEADLINE_EXCEEDED",
        b"5" => "NOT_FOUND",
        b"6" => "ALREADY_EXISTS",
        b"7" => "PERMISSION_DENIED",
        b"8" => "RESOURCE_EXHAUSTED",
        b"9" => "FAILED_PRECONDITION",
        b"10" => "ABORTED",
        b"11" => "OUT_OF_RANGE",
        b"12" => "UNIMPLEMENTED",
        b"13" => "INTERNAL",
        b"14" => "UNAVAILABLE",
        b"15" => "DATA_LOSS",
        b"16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// One method's metric handles on one server, looked up once so that the common case (`OK`)
/// only adds to atomics.
struct Endpoint {
    method: &'static Method,
    ok: metrics::Counter,
    duration: metrics::Histogram,
}

impl Endpoint {
    fn new(server: &'static str, method: &'static Method) -> Endpoint {
        Endpoint {
            method,
            ok: metrics::counter!(
                "inventory_grpc_requests_total",
                "server" => server,
                "method" => method.name,
                "code" => "OK",
            ),
            duration: metrics::histogram!(
                "inventory_grpc_request_duration_seconds",
                "server" => server,
                "method" => method.name,
            ),
        }
    }
}

/// Every method's [`Endpoint`] on one server; the last one is for unknown paths.
struct Endpoints {
    server: &'static str,
    by_path: HashMap<&'static str, usize>,
    list: Vec<Endpoint>,
}

impl Endpoints {
    fn index(&self, path: &str) -> usize {
        self.by_path
            .get(path)
            .copied()
            .unwrap_or(self.list.len() - 1)
    }
}

/// The layer: `server` (`command` or `query`) labels everything it records. Create it after
/// the metrics recorder is installed.
#[derive(Clone)]
pub struct ObserveLayer {
    endpoints: Arc<Endpoints>,
}

impl ObserveLayer {
    pub fn new(server: &'static str) -> ObserveLayer {
        let mut by_path = HashMap::new();
        let mut list = Vec::new();
        for (path, method) in methods() {
            by_path.insert(path.as_str(), list.len());
            list.push(Endpoint::new(server, method));
        }
        list.push(Endpoint::new(server, &UNKNOWN));
        ObserveLayer {
            endpoints: Arc::new(Endpoints {
                server,
                by_path,
                list,
            }),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            endpoints: self.endpoints.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    endpoints: Arc<Endpoints>,
}

impl<S, B> Service<http::Request<B>> for Observe<S>
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
        let endpoints = self.endpoints.clone();
        let index = endpoints.index(request.uri().path());
        let method = endpoints.list[index].method;
        let span = if telemetry::enabled() && method.service != "grpc.health.v1.Health" {
            let span = tracing::info_span!(
                "grpc.server",
                otel.name = method.name,
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = method.service,
                rpc.method = method.method,
                rpc.grpc.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            telemetry::set_remote_parent(&span, &Headers(request.headers()));
            span
        } else {
            tracing::Span::none()
        };
        let call = Call {
            endpoints,
            index,
            started: Instant::now(),
            span: span.clone(),
            _activity: request
                .extensions()
                .get::<ConnectionInfo>()
                .map(|connection| connection.guard.request_started()),
        };
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let response = response.await?;
                Ok(match response.headers().get("grpc-status") {
                    // Trailers-only: an error answered at once; the body is empty.
                    Some(code) => {
                        let code = code_name(code.as_bytes());
                        call.finish(code);
                        response
                    }
                    None => response.map(|body| {
                        tonic::body::Body::new(ObservedBody {
                            inner: body,
                            call: Some(call),
                        })
                    }),
                })
            }
            .instrument(span),
        )
    }
}

/// One call being observed, recorded once.
struct Call {
    endpoints: Arc<Endpoints>,
    index: usize,
    started: Instant,
    span: tracing::Span,
    /// The request's part in its connection's activity: the connection is not idle while the
    /// call lasts (for a stream, until its body ends).
    _activity: Option<Activity>,
}

impl Call {
    fn finish(self, code: &'static str) {
        let endpoint = &self.endpoints.list[self.index];
        if code == "OK" {
            endpoint.ok.increment(1);
        } else {
            metrics::counter!(
                "inventory_grpc_requests_total",
                "server" => self.endpoints.server,
                "method" => endpoint.method.name,
                "code" => code,
            )
            .increment(1);
        }
        if !endpoint.method.server_streaming {
            endpoint
                .duration
                .record(self.started.elapsed().as_secs_f64());
        }
        if !self.span.is_none() {
            self.span.record("rpc.grpc.status_code", code);
            self.span.record(
                "otel.status_code",
                if code == "OK" { "OK" } else { "ERROR" },
            );
        }
    }
}

/// A response body that records its call when the trailers pass (or when it is dropped).
struct ObservedBody {
    inner: tonic::body::Body,
    call: Option<Call>,
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(context);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = trailers
                        .get("grpc-status")
                        .map_or("UNKNOWN", |code| code_name(code.as_bytes()));
                    if let Some(call) = self.call.take() {
                        call.finish(code);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.take() {
                    call.finish("UNKNOWN");
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = self.call.take() {
                    call.finish("OK");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // The body went away before its trailers: the client cancelled or disconnected.
        if let Some(call) = self.call.take() {
            call.finish("CANCELLED");
        }
    }
}

/// gRPC metadata (HTTP/2 headers) as a carrier of W3C trace context.
pub struct Headers<'a>(pub &'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{Method, UNKNOWN, methods};

    fn method(path: &str) -> &'static Method {
        methods().get(path).unwrap_or(&UNKNOWN)
    }

    #[test]
    fn every_method_of_the_contract_is_known() {
        let reserve = method("/inventory.v1.CommandService/ReserveStock");
        assert_eq!(reserve.name, "inventory.v1.CommandService/ReserveStock");
        assert_eq!(reserve.service, "inventory.v1.CommandService");
        assert_eq!(reserve.method, "ReserveStock");
        assert!(!reserve.server_streaming);
        assert!(method("/inventory.v1.EventService/Subscribe").server_streaming);
        assert_eq!(
            method("/grpc.health.v1.Health/Check").name,
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(method("/made.up/Path").name, "unknown");
    }
}
