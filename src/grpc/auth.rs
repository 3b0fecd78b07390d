//! Authentication at the edge: a tower layer that reads each request's
//! `authorization: Bearer <token>` header (or, without one, the common name of the connection's
//! client certificate), resolves it to a [`Principal`] through the application's
//! [`Authenticator`], asks the principal's role whether it may send this kind of
//! request, and hands the principal on in the request's extensions for the services, which
//! check its stores. Health checks need no credential. Without an authenticator every request
//! is [`Principal::anonymous`]. The token is never logged.

use std::sync::Arc;
use std::task::{Context, Poll};

use dashmap::DashMap;
use tokio::sync::Semaphore;
use tonic::codegen::http;
use tower::{Layer, Service};

use super::ResponseFuture;
use super::status::{access_error, auth_error};
use super::tls::ConnectionInfo;
use crate::app::access::{Action, AuthError, Authenticated, Authenticator, Principal};

const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

/// What a request asks for, by its path: the role decides whether it may.
fn action(path: &str) -> Action {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    match (service, method) {
        (
            "inventory.v1.CommandService",
            "ReserveStock" | "CommitReservation" | "ReleaseReservation" | "ExtendReservation",
        ) => Action::SalesCommand,
        ("inventory.v1.CommandService", _) => Action::StockCommand,
        ("inventory.v1.QueryService", _) => Action::Query,
        ("inventory.v1.EventService", _) => Action::Subscribe,
        ("inventory.v1.DeliveryService", _) => Action::Administer,
        // Reflection, and paths no service has (tonic answers UNIMPLEMENTED once the caller
        // is known).
        _ => Action::Describe,
    }
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
        .get::<Principal>()
        .ok_or_else(|| tonic::Status::internal("the request has no principal"))
}

/// A principal's own budget of requests in flight, so that one client cannot take every slot
/// of the server's.
struct PrincipalLimit {
    permits: Arc<Semaphore>,
    limit: usize,
}

/// At most this many principals' budgets are kept; past it those with nothing in flight are
/// dropped (one JWT subject after another could otherwise grow the map without end).
const MAX_PRINCIPAL_LIMITS: usize = 65_536;

/// Each principal's budget, made at its first request: API tokens and JWT subjects alike.
#[derive(Default)]
struct PrincipalLimits {
    by_name: DashMap<Arc<str>, PrincipalLimit>,
}

impl PrincipalLimits {
    /// A slot of `name`'s budget of `limit`, or `Err(limit)` when all are taken.
    fn acquire(
        &self,
        name: &Arc<str>,
        limit: usize,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, usize> {
        let limit = limit.max(1);
        if let Some(own) = self.by_name.get(name)
            && own.limit == limit
        {
            return own
                .permits
                .clone()
                .try_acquire_owned()
                .map_err(|_| own.limit);
        }
        if self.by_name.len() >= MAX_PRINCIPAL_LIMITS {
            self.by_name
                .retain(|_, own| own.permits.available_permits() < own.limit);
        }
        let own = self
            .by_name
            .entry(name.clone())
            .and_modify(|own| {
                if own.limit != limit {
                    *own = PrincipalLimit::new(limit);
                }
            })
            .or_insert_with(|| PrincipalLimit::new(limit));
        own.permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| own.limit)
    }
}

impl PrincipalLimit {
    fn new(limit: usize) -> PrincipalLimit {
        PrincipalLimit {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Option<Arc<Authenticator>>,
    limits: Arc<PrincipalLimits>,
}

impl AuthLayer {
    pub fn new(authenticator: Option<Arc<Authenticator>>) -> AuthLayer {
        AuthLayer {
            authenticator,
            limits: Arc::default(),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            authenticator: self.authenticator.clone(),
            limits: self.limits.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    authenticator: Option<Arc<Authenticator>>,
    limits: Arc<PrincipalLimits>,
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
        let action = action(request.uri().path());
        let found = match &self.authenticator {
            None => Ok(Authenticated {
                principal: Principal::anonymous(),
                max_in_flight: None,
            }),
            Some(authenticator) => principal(authenticator, &request),
        };
        let mut permit = None;
        let refusal = match found {
            Err(error) => Some(auth_error(error)),
            Ok(Authenticated {
                principal,
                max_in_flight,
            }) => match principal.authorize(action) {
                Err(error) => Some(access_error(&error)),
                Ok(()) => {
                    match max_in_flight.map(|limit| self.limits.acquire(&principal.name, limit)) {
                        Some(Err(limit)) => Some(tonic::Status::resource_exhausted(format!(
                            "this credential has its limit of {limit} requests in flight; retry with backoff"
                        ))),
                        acquired => {
                            permit = acquired.and_then(Result::ok);
                            request.extensions_mut().insert(principal);
                            None
                        }
                    }
                }
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

    #[test]
    fn every_rpc_is_one_kind_of_request() {
        assert_eq!(
            action("/inventory.v1.CommandService/ReserveStock"),
            Action::SalesCommand
        );
        assert_eq!(
            action("/inventory.v1.CommandService/ExtendReservation"),
            Action::SalesCommand
        );
        assert_eq!(
            action("/inventory.v1.CommandService/AddStock"),
            Action::StockCommand
        );
        assert_eq!(
            action("/inventory.v1.CommandService/ShipTransfer"),
            Action::StockCommand
        );
        assert_eq!(action("/inventory.v1.QueryService/GetStock"), Action::Query);
        assert_eq!(
            action("/inventory.v1.EventService/Subscribe"),
            Action::Subscribe
        );
        assert_eq!(
            action("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Action::Describe
        );
    }
}
