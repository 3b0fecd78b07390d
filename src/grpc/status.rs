//! The one mapping from application and domain errors to gRPC statuses, with google.rpc error
//! details: `BadRequest` for invalid fields, `ErrorInfo` and `PreconditionFailure` for business
//! rules. Internal failures are logged in full where they happen and returned without
//! internals.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::app::CommandError;
use crate::app::query::QueryError;
use crate::domain::{DomainError, ReservationStatus};
use crate::log::LogError;

/// The `domain` of every `ErrorInfo` this service returns.
pub const ERROR_DOMAIN: &str = "inventory.v1";

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: &'static str,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: &'static str, description: impl ToString) -> FieldViolation {
        FieldViolation {
            field,
            description: description.to_string(),
        }
    }
}

/// `INVALID_ARGUMENT` naming every invalid field.
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let message = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::new();
    for violation in violations {
        details.add_bad_request_violation(violation.field, &violation.description);
    }
    details.set_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(Code::InvalidArgument, message, details)
}

fn error_info(
    code: Code,
    message: String,
    reason: &str,
    metadata: &[(&str, String)],
    precondition: Option<(&str, String)>,
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
        .collect();
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    if let Some((subject, description)) = precondition {
        details.add_precondition_failure_violation(reason, subject, description);
    }
    Status::with_error_details(code, message, details)
}

pub fn domain_error(error: &DomainError) -> Status {
    let message = error.to_string();
    match error {
        DomainError::InsufficientStock {
            requested,
            available,
        } => error_info(
            Code::FailedPrecondition,
            message.clone(),
            "INSUFFICIENT_STOCK",
            &[
                ("requested", requested.to_string()),
                ("available", available.to_string()),
            ],
            Some(("quantity", message)),
        ),
        DomainError::AdjustBelowReserved {
            requested_on_hand,
            reserved,
        } => error_info(
            Code::FailedPrecondition,
            message.clone(),
            "ON_HAND_BELOW_RESERVED",
            &[
                ("requested_on_hand", requested_on_hand.to_string()),
                ("reserved", reserved.to_string()),
            ],
            Some(("on_hand", message)),
        ),
        DomainError::OnHandOverflow { .. } => {
            invalid_argument(&[FieldViolation::new("quantity", message)])
        }
        DomainError::ReservationNotFound { reservation_id } => error_info(
            Code::NotFound,
            message,
            "RESERVATION_NOT_FOUND",
            &[("reservation_id", reservation_id.to_string())],
            None,
        ),
        DomainError::ReservationNotActive {
            reservation_id,
            status,
        } => error_info(
            Code::FailedPrecondition,
            message.clone(),
            reservation_not_active_reason(*status),
            &[
                ("reservation_id", reservation_id.to_string()),
                ("status", status.to_string()),
            ],
            Some(("reservation_id", message)),
        ),
        DomainError::ReservationAlreadyExists { reservation_id } => error_info(
            Code::AlreadyExists,
            message,
            "RESERVATION_EXISTS",
            &[("reservation_id", reservation_id.to_string())],
            None,
        ),
    }
}

/// The `ErrorInfo` reason of a command on a reservation that is no longer active: part of the
/// public contract, so spelled out here rather than derived from the status's text.
fn reservation_not_active_reason(status: ReservationStatus) -> &'static str {
    match status {
        ReservationStatus::Active => "RESERVATION_ACTIVE",
        ReservationStatus::Committed => "RESERVATION_COMMITTED",
        ReservationStatus::Released => "RESERVATION_RELEASED",
        ReservationStatus::Expired => "RESERVATION_EXPIRED",
    }
}

pub fn command_error(error: CommandError) -> Status {
    match &error {
        CommandError::Domain(domain) => domain_error(domain),
        CommandError::WrongExpectedVersion {
            stream,
            expected,
            current,
        } => error_info(
            Code::Aborted,
            error.to_string(),
            "WRONG_EXPECTED_VERSION",
            &[
                ("product_id", stream.product_id.to_string()),
                ("store_id", stream.store_id.to_string()),
                ("expected_version", expected.to_string()),
                ("current_version", current.to_string()),
            ],
            None,
        ),
        CommandError::CommandIdReused { command_id } => {
            let mut details = ErrorDetails::with_error_info(
                "COMMAND_ID_REUSED",
                ERROR_DOMAIN,
                HashMap::from([("command_id".to_owned(), command_id.to_string())]),
            );
            details.add_bad_request_violation(
                "command_id",
                "already used for a different request; use a new command_id for a new request",
            );
            Status::with_error_details(Code::AlreadyExists, error.to_string(), details)
        }
        CommandError::LogUnavailable(_) => {
            // The cause was logged in full by the writer.
            let mut details = ErrorDetails::with_retry_info(Some(Duration::from_secs(1)));
            details.set_error_info("LOG_UNAVAILABLE", ERROR_DOMAIN, HashMap::new());
            Status::with_error_details(
                Code::Unavailable,
                "the event log could not store the command; nothing was written, retry later",
                details,
            )
        }
        CommandError::CircuitOpen { retry_after } => {
            let mut details = ErrorDetails::with_retry_info(Some(*retry_after));
            details.set_error_info("CIRCUIT_OPEN", ERROR_DOMAIN, HashMap::new());
            Status::with_error_details(
                Code::Unavailable,
                format!(
                    "the event log's storage is failing; commands are refused until it recovers \
                     (retry in {} ms); nothing was written",
                    retry_after.as_millis()
                ),
                details,
            )
        }
        CommandError::ShuttingDown => {
            let details = ErrorDetails::with_retry_info(Some(Duration::from_secs(1)));
            Status::with_error_details(
                Code::Unavailable,
                "the server is shutting down; nothing was written",
                details,
            )
        }
    }
}

pub fn query_error(error: &QueryError) -> Status {
    match error {
        QueryError::NotFound { .. } => Status::not_found(error.to_string()),
        QueryError::MinPositionNotReached { .. } => Status::deadline_exceeded(error.to_string()),
        QueryError::Log(log) => log_error(log),
    }
}

pub fn log_error(error: &LogError) -> Status {
    tracing::error!(%error, "event log read failed");
    match error {
        LogError::Io { .. } | LogError::Backend { .. } => {
            Status::unavailable("the event log could not be read; retry later")
        }
        LogError::HeadMoved { .. }
        | LogError::CommandIdsTaken { .. }
        | LogError::VersionConflict { .. }
        | LogError::AppendTooLarge { .. }
        | LogError::Corrupt { .. }
        | LogError::CorruptRow { .. }
        | LogError::FoldMismatch { .. } => Status::internal("internal error in the event log"),
    }
}
