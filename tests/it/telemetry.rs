//! Traces and logs of the real binary: with an OTLP endpoint configured, a command sent with a
//! W3C `traceparent` continues the caller's trace through the RPC, the append and the
//! projection, and the event carries the trace context to subscribers; with `--log-format
//! json` every log line is a JSON object.
//!
//! The collector is a stand-in speaking the real OTLP/gRPC protocol (`TraceService.Export`)
//! on 127.0.0.1:0; it keeps what it receives.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::io::AsyncBufReadExt;
use tokio_stream::StreamExt;

use inventory::grpc::pb;
use inventory::grpc::pb::command_service_client::CommandServiceClient;
use inventory::grpc::pb::event_service_client::EventServiceClient;
use support::{Process, add_stock};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN_ID: &str = "b7ad6b7169203331";

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves OTLP on 127.0.0.1:0 and returns its URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{address}")
    }

    /// The spans of the test's trace, once every name in `names` is among them (10 s at most).
    async fn trace_with(&self, names: &[&str]) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let spans: Vec<Span> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|span| hex(&span.trace_id) == TRACE_ID)
                .cloned()
                .collect();
            if names
                .iter()
                .all(|name| spans.iter().any(|span| span.name == *name))
            {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "spans named {names:?} were not all exported within 10 s; got {:?}",
                spans.iter().map(|span| &span.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `message` sent as part of the client's trace: `traceparent` names the client's span.
fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    request
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans.iter().find(|span| span.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_command_continues_the_callers_trace_into_the_append_and_the_projection() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().to_str().unwrap();
    let service = Process::start_with_env(
        &[
            "serve",
            "--command-addr",
            "127.0.0.1:0",
            "--query-addr",
            "127.0.0.1:0",
            "--data",
            data,
            "--otlp-endpoint",
            &endpoint,
        ],
        // Export every 100 ms rather than every 5 s.
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
        &["command", "query"],
    )
    .await;
    let mut events = EventServiceClient::new(support::channel(service.address("query")).await)
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();

    let request = traced(add_stock("sku-1", "store-1", 5));
    let mut commands =
        CommandServiceClient::new(support::channel(service.address("command")).await);
    commands.add_stock(request).await.unwrap();
    // An untraced command starts a trace of its own.
    commands
        .add_stock(add_stock("sku-2", "store-1", 1))
        .await
        .unwrap();

    let spans = collector
        .trace_with(&[
            "inventory.v1.CommandService/AddStock",
            "log.append",
            "projection.apply",
        ])
        .await;
    let server = named(&spans, "inventory.v1.CommandService/AddStock");
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN_ID);
    assert_eq!(
        server.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    let append = named(&spans, "log.append");
    assert_eq!(append.parent_span_id, server.span_id);
    let projection = named(&spans, "projection.apply");
    assert_eq!(projection.parent_span_id, server.span_id);
    assert_eq!(
        spans
            .iter()
            .filter(|span| span.name == "inventory.v1.CommandService/AddStock")
            .count(),
        1,
        "only the traced command is in the caller's trace"
    );

    // The event carries the server span's context to listeners.
    let mut trace_parents = Vec::new();
    while trace_parents.len() < 2 {
        let item = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        if let Some(pb::subscribe_response::Message::Event(event)) = item.message {
            trace_parents.push(event.trace_parent);
        }
    }
    assert_eq!(
        trace_parents[0],
        format!("00-{TRACE_ID}-{}-01", hex(&server.span_id))
    );
    assert!(trace_parents[1].starts_with("00-"), "{trace_parents:?}");
    assert!(!trace_parents[1].contains(TRACE_ID), "{trace_parents:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_events_carry_no_trace_context() {
    let directory = tempfile::tempdir().unwrap();
    let service = support::Combined::start(directory.path()).await;
    let request = traced(add_stock("sku-1", "store-1", 5));
    service.commands().await.add_stock(request).await.unwrap();
    let mut events = service
        .events()
        .await
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    loop {
        let item = events.next().await.unwrap().unwrap();
        if let Some(pb::subscribe_response::Message::Event(event)) = item.message {
            assert_eq!(event.trace_parent, "");
            break;
        }
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_object_per_line() {
    let directory = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_inventory"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--command-addr",
            "127.0.0.1:0",
            "--query-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "off",
        ])
        .arg("--data")
        .arg(directory.path())
        .env("INVENTORY_LOG_LEVEL", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Start-up logs the opened log and both listeners.
    while !seen
        .iter()
        .any(|line: &serde_json::Value| line["fields"]["message"] == "event log opened")
    {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the server logs its start-up")
            .unwrap()
            .expect("the server is running");
        let object: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
        assert!(object["timestamp"].is_string(), "{line}");
        assert_eq!(object["level"], "INFO", "{line}");
        seen.push(object);
    }
    let opened = seen
        .iter()
        .find(|line| line["fields"]["message"] == "event log opened")
        .unwrap();
    assert_eq!(opened["fields"]["events"], 0);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
