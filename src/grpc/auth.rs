//! Authentication at the edge: a tower layer that reads each request's
//! `authorization: Bearer <token>` header (or, without one, the common name of the connection's
//! client certificate), resolves it to a [`Principal`] through the application's
//! [`Authenticator`], asks the principal's role whether it may send this kind of
//! request, and hands the principal on in the request's extensions for the services, which
//! check its stores. Health checks need no credential. Without an authenticator every request
//! is [`Principal::anonymous`]. The token is never logged.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tower::{Layer, Service};

use super::ResponseFuture;
use super::budget::{Budget, Budgets};
use super::status::{access_error, auth_error};
use super::tls::ConnectionInfo;
use crate::app::access::{Action, AuthError, Authenticated, Authenticator, Principal};

const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

/// Every RPC of `inventory.proto`, so that what a request asks for is an exhaustive match
/// on its method, not a guess from its path. `every_rpc_of_the_proto_has_a_method` fails when
/// the proto gains an RPC this list lacks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    AddStock,
    AdjustStock,
    ReserveStock,
    CommitReservation,
    ReleaseReservation,
    ExtendReservation,
    RemoveStock,
    ApplyStockChanges,
    MoveStock,
    SetItemPolicy,
    RecordCount,
    ShipTransfer,
    ReceiveTransfer,
    CancelTransfer,
    /// Any `QueryService` RPC: every query is one kind of request.
    Query,
    Subscribe,
    ListSinks,
    ResumeSink,
    RewindSink,
}

impl Method {
    /// The method a request's path names; `None` for reflection and for paths no service of
    /// ours has.
    fn of_path(path: &str) -> Option<Method> {
        let (service, method) = path.trim_start_matches('/').split_once('/')?;
        let method = match (service, method) {
            ("inventory.v1.CommandService", "AddStock") => Method::AddStock,
            ("inventory.v1.CommandService", "AdjustStock") => Method::AdjustStock,
            ("inventory.v1.CommandService", "ReserveStock") => Method::ReserveStock,
            ("inventory.v1.CommandService", "CommitReservation") => Method::CommitReservation,
            ("inventory.v1.CommandService", "ReleaseReservation") => Method::ReleaseReservation,
            ("inventory.v1.CommandService", "ExtendReservation") => Method::ExtendReservation,
            ("inventory.v1.CommandService", "RemoveStock") => Method::RemoveStock,
            ("inventory.v1.CommandService", "ApplyStockChanges") => Method::ApplyStockChanges,
            ("inventory.v1.CommandService", "MoveStock") => Method::MoveStock,
            ("inventory.v1.CommandService", "SetItemPolicy") => Method::SetItemPolicy,
            ("inventory.v1.CommandService", "RecordCount") => Method::RecordCount,
            ("inventory.v1.CommandService", "ShipTransfer") => Method::ShipTransfer,
            ("inventory.v1.CommandService", "ReceiveTransfer") => Method::ReceiveTransfer,
            ("inventory.v1.CommandService", "CancelTransfer") => Method::CancelTransfer,
            ("inventory.v1.QueryService", _) => Method::Query,
            ("inventory.v1.EventService", "Subscribe") => Method::Subscribe,
            ("inventory.v1.DeliveryService", "ListSinks") => Method::ListSinks,
            ("inventory.v1.DeliveryService", "ResumeSink") => Method::ResumeSink,
            ("inventory.v1.DeliveryService", "RewindSink") => Method::RewindSink,
            _ => return None,
        };
        Some(method)
    }

    /// What the method asks for: the role decides whether it may.
    /// The server that serves the method (`command` or `query`); `None` when both do.
    fn server(self) -> Option<&'static str> {
        match self {
            Method::Query => Some("query"),
            Method::Subscribe => None,
            Method::AddStock
            | Method::AdjustStock
            | Method::ReserveStock
            | Method::CommitReservation
            | Method::ReleaseReservation
            | Method::ExtendReservation
            | Method::RemoveStock
            | Method::ApplyStockChanges
            | Method::MoveStock
            | Method::SetItemPolicy
            | Method::RecordCount
            | Method::ShipTransfer
            | Method::ReceiveTransfer
            | Method::CancelTransfer
            | Method::ListSinks
            | Method::ResumeSink
            | Method::RewindSink => Some("command"),
        }
    }

    fn action(self) -> Action {
        match self {
            Method::ReserveStock
            | Method::CommitReservation
            | Method::ReleaseReservation
            | Method::ExtendReservation => Action::SalesCommand,
            Method::AddStock
            | Method::AdjustStock
            | Method::RemoveStock
            | Method::ApplyStockChanges
            | Method::MoveStock
            | Method::SetItemPolicy
            | Method::RecordCount
            | Method::ShipTransfer
            | Method::ReceiveTransfer
            | Method::CancelTransfer => Action::StockCommand,
            Method::Query => Action::Query,
            Method::Subscribe => Action::Subscribe,
            Method::ListSinks | Method::ResumeSink | Method::RewindSink => Action::Administer,
        }
    }
}

/// The answer to a request for a service this server does not run.
fn wrong_server(path: &str, server: &str) -> tonic::Status {
    let service = path
        .trim_start_matches('/')
        .split_once('/')
        .map_or(path, |(service, _)| service);
    let (elsewhere, default_address) = match server {
        "command" => ("query", "127.0.0.1:50052"),
        _ => ("command", "127.0.0.1:50051"),
    };
    tonic::Status::unimplemented(format!(
        "{service} is served by the {elsewhere} server (by default {default_address}), \
         not by this {server} server"
    ))
}

/// What a request asks for, by its method. Reflection, and paths no service has, only
/// describe (tonic answers UNIMPLEMENTED for the latter once the caller is known).
fn action(method: Option<Method>) -> Action {
    method.map_or(Action::Describe, Method::action)
}

/// The credential of a request: its bearer token or, without one, its connection's client
/// certificate when that names a principal.
fn principal<B>(
    authenticator: &Authenticator,
    request: &http::Request<B>,
) -> Result<Authenticated, AuthError> {
    let Some(value) = request.headers().get(http::header::AUTHORIZATION) else {
        return request
            .extensions()
            .get::<ConnectionInfo>()
            .and_then(|connection| connection.client_name.as_deref())
            .and_then(|name| authenticator.authenticate_certificate(name))
            .ok_or(AuthError::Missing);
    };
    let text = value.to_str().map_err(|_| AuthError::Invalid)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Invalid);
    }
    authenticator.authenticate(token.trim())
}

/// The principal the auth layer found for a request; a request that reached a service
/// without passing the layer is nobody's.
pub fn principal_of<T>(request: &tonic::Request<T>) -> Result<&Principal, tonic::Status> {
    request
        .extensions()
        .get::<Caller>()
        .map(|caller| &caller.principal)
        .ok_or_else(|| tonic::Status::internal("the request has no principal"))
}

/// The budget of the request's principal; `None` on a server without authentication.
pub fn budget_of<T>(request: &tonic::Request<T>) -> Option<&Arc<Budget>> {
    request
        .extensions()
        .get::<Caller>()
        .and_then(|caller| caller.budget.as_ref())
}

/// Who sent a request and its budget: what the layer puts into the request, once.
#[derive(Clone)]
struct Caller {
    principal: Principal,
    budget: Option<Arc<Budget>>,
}

#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Option<Arc<Authenticator>>,
    budgets: Arc<Budgets>,
    server: &'static str,
}

impl AuthLayer {
    /// The layer of the `server` (`command` or `query`): a request for the other server's
    /// service is told where that is served.
    pub fn new(authenticator: Option<Arc<Authenticator>>, server: &'static str) -> AuthLayer {
        AuthLayer {
            authenticator,
            budgets: Arc::default(),
            server,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            authenticator: self.authenticator.clone(),
            budgets: self.budgets.clone(),
            server: self.server,
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    authenticator: Option<Arc<Authenticator>>,
    budgets: Arc<Budgets>,
    server: &'static str,
}

impl<S, B> Service<http::Request<B>> for Auth<S>
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if request.uri().path().starts_with(HEALTH_PATH) {
            return Box::pin(self.inner.call(request));
        }
        let method = Method::of_path(request.uri().path());
        let action = action(method);
        let found = match &self.authenticator {
            None => Ok(None),
            Some(authenticator) => principal(authenticator, &request).map(Some),
        };
        // A valid credential (or none needed) proves the connection: see connection_guard.rs.
        if found.is_ok()
            && let Some(connection) = request.extensions().get::<ConnectionInfo>()
        {
            connection.guard.prove();
        }
        let mut permit = None;
        let served_elsewhere = method
            .and_then(Method::server)
            .filter(|server| *server != self.server);
        let refusal = match found {
            Err(error) => Some(auth_error(error)),
            // No authentication: everyone is the anonymous admin, with no budget of its own.
            Ok(None) if served_elsewhere.is_some() => {
                Some(wrong_server(request.uri().path(), self.server))
            }
            Ok(None) => {
                request.extensions_mut().insert(Caller {
                    principal: Principal::anonymous(),
                    budget: None,
                });
                None
            }
            // Only a caller who may send it learns where it is served.
            Ok(Some(credential))
                if credential.principal.authorize(action).is_ok() && served_elsewhere.is_some() =>
            {
                Some(wrong_server(request.uri().path(), self.server))
            }
            Ok(Some(credential)) => match credential.principal.authorize(action) {
                Err(error) => Some(access_error(&error)),
                Ok(()) => match self.budgets.admit(&credential) {
                    Err(over) => Some(over.status()),
                    Ok((budget, acquired)) => {
                        permit = acquired;
                        request.extensions_mut().insert(Caller {
                            principal: credential.principal,
                            budget: Some(budget),
                        });
                        None
                    }
                },
            },
        };
        match refusal {
            None => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let response = response.await;
                    // As the server's own limit: a stream goes on after this.
                    drop(permit);
                    response
                })
            }
            Some(status) => {
                tracing::debug!(
                    path = request.uri().path(),
                    code = ?status.code(),
                    "request refused: {}",
                    status.message()
                );
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action_of(path: &str) -> Action {
        action(Method::of_path(path))
    }

    #[test]
    fn every_rpc_is_one_kind_of_request() {
        assert_eq!(
            action_of("/inventory.v1.CommandService/ReserveStock"),
            Action::SalesCommand
        );
        assert_eq!(
            action_of("/inventory.v1.CommandService/ExtendReservation"),
            Action::SalesCommand
        );
        assert_eq!(
            action_of("/inventory.v1.CommandService/AddStock"),
            Action::StockCommand
        );
        assert_eq!(
            action_of("/inventory.v1.CommandService/ShipTransfer"),
            Action::StockCommand
        );
        assert_eq!(
            action_of("/inventory.v1.QueryService/GetStock"),
            Action::Query
        );
        assert_eq!(
            action_of("/inventory.v1.EventService/Subscribe"),
            Action::Subscribe
        );
        assert_eq!(
            action_of("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Action::Describe
        );
        assert_eq!(
            action_of("/inventory.v1.DeliveryService/RewindSink"),
            Action::Administer
        );
        // A method the service does not have is no command.
        assert_eq!(
            action_of("/inventory.v1.CommandService/DropEverything"),
            Action::Describe
        );
    }

    #[test]
    fn every_rpc_of_the_proto_has_a_method() {
        let descriptors = <prost_types::FileDescriptorSet as prost::Message>::decode(
            crate::grpc::FILE_DESCRIPTOR_SET,
        )
        .unwrap();
        let mut paths = Vec::new();
        for file in &descriptors.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        assert!(paths.len() > 20, "{paths:?}");
        let missing: Vec<&String> = paths
            .iter()
            .filter(|path| Method::of_path(path).is_none())
            .collect();
        assert!(missing.is_empty(), "RPCs with no Method: {missing:?}");
    }
}
