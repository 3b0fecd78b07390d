//! The one mapping from application and domain errors to gRPC statuses, with google.rpc error
//! details: `BadRequest` for invalid fields, `ErrorInfo` and `PreconditionFailure` for business
//! rules. Internal failures are logged in full where they happen and returned without
//! internals.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::app::CommandError;
use crate::app::access::{AccessError, AuthError};
use crate::app::query::QueryError;
use crate::delivery::ControlError;
use crate::domain::{DomainError, LineRule, LineViolation, ReservationStatus, TransferStatus};
use crate::log::LogError;

/// The `domain` of every `ErrorInfo` this service returns.
pub const ERROR_DOMAIN: &str = "inventory.v1";

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl ToString) -> FieldViolation {
        FieldViolation {
            field: field.into(),
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
        details.add_bad_request_violation(&violation.field, &violation.description);
    }
    details.set_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(Code::InvalidArgument, message, details)
}

fn error_info(
    code: Code,
    message: String,
    reason: &str,
    metadata: &[(&str, String)],
    preconditions: &[(&str, String, String)],
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
        .collect();
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    for (kind, subject, description) in preconditions {
        details.add_precondition_failure_violation(*kind, subject, description);
    }
    Status::with_error_details(code, message, details)
}

/// How the request of a command names its items, so that an error about one of them names
/// the field a client sent: the single-item form's own fields (`quantity`, `on_hand`), or the
/// lines of a repeated field (`lines[3]`, `changes[17].add`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lines {
    Single,
    Repeated(&'static str),
}

/// A refused command's status. Over 70 lines: one exhaustive arm per rule outcome, with its
/// code, reason and details.
pub fn domain_error(error: &DomainError, lines: Lines) -> Status {
    let message = error.to_string();
    match error {
        DomainError::LinesRefused { violations } => lines_refused(message, violations, lines),
        DomainError::ReservationNotFound { reservation_id } => error_info(
            Code::NotFound,
            message,
            "RESERVATION_NOT_FOUND",
            &[("reservation_id", reservation_id.to_string())],
            &[],
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
            &[(
                reservation_not_active_reason(*status),
                "reservation_id".to_owned(),
                message,
            )],
        ),
        DomainError::ReservationIdAmbiguous { .. } => {
            invalid_argument(&[FieldViolation::new("store_id", message)])
        }
        DomainError::TransferIdAmbiguous { .. } => {
            invalid_argument(&[FieldViolation::new("from_store_id", message)])
        }
        DomainError::ReservationAlreadyExists { reservation_id } => error_info(
            Code::AlreadyExists,
            message,
            "RESERVATION_EXISTS",
            &[("reservation_id", reservation_id.to_string())],
            &[],
        ),
        DomainError::TransferNotFound { transfer_id } => error_info(
            Code::NotFound,
            message,
            "TRANSFER_NOT_FOUND",
            &[("transfer_id", transfer_id.to_string())],
            &[],
        ),
        DomainError::NothingReceived { .. } => {
            invalid_argument(&[FieldViolation::new("lines", "name what arrived, or close")])
        }
        DomainError::TransferAlreadyExists { transfer_id } => error_info(
            Code::AlreadyExists,
            message,
            "TRANSFER_EXISTS",
            &[("transfer_id", transfer_id.to_string())],
            &[],
        ),
        DomainError::TransferNotOpen {
            transfer_id,
            status,
        } => {
            let reason = match status {
                TransferStatus::InTransit => "TRANSFER_IN_TRANSIT",
                TransferStatus::PartiallyReceived => "TRANSFER_PARTIALLY_RECEIVED",
                TransferStatus::Received => "TRANSFER_RECEIVED",
                TransferStatus::Cancelled => "TRANSFER_CANCELLED",
            };
            error_info(
                Code::FailedPrecondition,
                message.clone(),
                reason,
                &[
                    ("transfer_id", transfer_id.to_string()),
                    ("status", status.to_string()),
                ],
                &[(reason, "transfer_id".to_owned(), message)],
            )
        }
    }
}

/// The `ErrorInfo` reason of a line's broken rule: part of the public contract.
fn line_reason(rule: &LineRule) -> &'static str {
    match rule {
        LineRule::InsufficientStock { .. } => "INSUFFICIENT_STOCK",
        LineRule::OnHandBelowReserved { .. } => "ON_HAND_BELOW_RESERVED",
        LineRule::OnHandOverflow { .. } => "ON_HAND_OVERFLOW",
        LineRule::WrongExpectedVersion { .. } => "WRONG_EXPECTED_VERSION",
        LineRule::CommitExceedsReserved { .. } => "COMMIT_EXCEEDS_RESERVED",
        LineRule::NotInReservation => "NOT_IN_RESERVATION",
        LineRule::DuplicateItem { .. } => "DUPLICATE_ITEM",
        LineRule::StateHoldsLess { .. } => "INSUFFICIENT_STOCK_IN_STATE",
        LineRule::StockShort { .. } => "STOCK_SHORT",
        LineRule::NotInTransfer => "NOT_IN_TRANSFER",
        LineRule::ReceiveExceedsInTransit { .. } => "RECEIVE_EXCEEDS_IN_TRANSIT",
    }
}

/// The numbers of a line's broken rule, as `ErrorInfo` metadata.
fn line_metadata(rule: &LineRule) -> Vec<(&'static str, String)> {
    match rule {
        LineRule::InsufficientStock {
            requested,
            available,
        } => vec![
            ("requested", requested.to_string()),
            ("available", available.to_string()),
        ],
        LineRule::OnHandBelowReserved {
            requested_on_hand,
            reserved,
        } => vec![
            ("requested_on_hand", requested_on_hand.to_string()),
            ("reserved", reserved.to_string()),
        ],
        LineRule::OnHandOverflow { on_hand, quantity } => vec![
            ("on_hand", on_hand.to_string()),
            ("quantity", quantity.to_string()),
        ],
        LineRule::WrongExpectedVersion { expected, current } => vec![
            ("expected_version", expected.to_string()),
            ("current_version", current.to_string()),
        ],
        LineRule::CommitExceedsReserved {
            requested,
            reserved,
        } => vec![
            ("requested", requested.to_string()),
            ("reserved", reserved.to_string()),
        ],
        LineRule::NotInReservation => Vec::new(),
        LineRule::DuplicateItem { first_line } => vec![("first_line", first_line.to_string())],
        LineRule::NotInTransfer => Vec::new(),
        LineRule::ReceiveExceedsInTransit {
            requested,
            in_transit,
        } => vec![
            ("requested", requested.to_string()),
            ("in_transit", in_transit.to_string()),
        ],
        LineRule::StockShort { requested, on_hand } => vec![
            ("requested", requested.to_string()),
            ("on_hand", on_hand.to_string()),
        ],
        LineRule::StateHoldsLess {
            state,
            requested,
            held,
        } => vec![
            ("state", state_name(*state).to_owned()),
            ("requested", requested.to_string()),
            ("held", held.to_string()),
        ],
    }
}

/// A state as the proto names it.
fn state_name(state: crate::domain::StockState) -> &'static str {
    crate::log::codec::stock_state_to_pb(state).as_str_name()
}

/// The field of the request that a line's broken rule is about.
fn line_field(violation: &LineViolation, lines: Lines) -> String {
    let single_field = match violation.rule {
        LineRule::OnHandBelowReserved { .. } | LineRule::OnHandOverflow { quantity: 0, .. } => {
            "on_hand"
        }
        LineRule::OnHandOverflow { .. }
        | LineRule::InsufficientStock { .. }
        | LineRule::WrongExpectedVersion { .. }
        | LineRule::CommitExceedsReserved { .. }
        | LineRule::NotInReservation
        | LineRule::DuplicateItem { .. }
        | LineRule::NotInTransfer
        | LineRule::ReceiveExceedsInTransit { .. }
        | LineRule::StockShort { .. }
        | LineRule::StateHoldsLess { .. } => "quantity",
    };
    match lines {
        Lines::Single => single_field.to_owned(),
        Lines::Repeated(list) => {
            let field = match (list, &violation.rule) {
                ("changes", LineRule::OnHandBelowReserved { .. })
                | ("changes", LineRule::OnHandOverflow { quantity: 0, .. }) => Some("set_on_hand"),
                ("changes", LineRule::OnHandOverflow { .. }) => Some("add"),
                ("changes", LineRule::InsufficientStock { .. })
                | ("changes", LineRule::StateHoldsLess { .. }) => Some("remove"),
                (
                    _,
                    LineRule::InsufficientStock { .. }
                    | LineRule::CommitExceedsReserved { .. }
                    | LineRule::ReceiveExceedsInTransit { .. },
                ) => Some("quantity"),
                _ => None,
            };
            match field {
                Some(field) => format!("{list}[{}].{field}", violation.line),
                None => format!("{list}[{}]", violation.line),
            }
        }
    }
}

/// Lines that break rules of their items: one violation each. An overflow or a repeated item
/// is a bad request (`INVALID_ARGUMENT`); a version conflict is `ABORTED`; anything else is a
/// business rule (`FAILED_PRECONDITION`). The `ErrorInfo` reason and metadata are those of
/// the first line.
fn lines_refused(message: String, violations: &[LineViolation], lines: Lines) -> Status {
    // Each violation as the client sees it: its rule's reason, the field, what is wrong.
    let named: Vec<(&str, String, String)> = violations
        .iter()
        .map(|violation| {
            (
                line_reason(&violation.rule),
                line_field(violation, lines),
                describe_line(violation, lines),
            )
        })
        .collect();
    // A repeated field's lines are named as the client sent them: `lines[3].quantity: …`.
    let message = match lines {
        Lines::Single => message,
        Lines::Repeated(_) => named
            .iter()
            .map(|(_, field, description)| format!("{field}: {description}"))
            .collect::<Vec<_>>()
            .join("; "),
    };
    let bad_request = violations.iter().any(|violation| {
        matches!(
            violation.rule,
            LineRule::OnHandOverflow { .. } | LineRule::DuplicateItem { .. }
        )
    });
    if bad_request {
        let fields: Vec<FieldViolation> = named
            .into_iter()
            .map(|(_, field, description)| FieldViolation::new(field, description))
            .collect();
        return invalid_argument(&fields);
    }
    let code = if violations
        .iter()
        .any(|violation| matches!(violation.rule, LineRule::WrongExpectedVersion { .. }))
    {
        Code::Aborted
    } else {
        Code::FailedPrecondition
    };
    let first = violations.first().expect("a refused command names a line");
    let mut metadata = vec![
        ("product_id", first.stream.product_id.to_string()),
        ("store_id", first.stream.store_id.to_string()),
    ];
    metadata.extend(line_metadata(&first.rule));
    if let Lines::Repeated(_) = lines {
        metadata.push(("line", first.line.to_string()));
        metadata.push(("violations", violations.len().to_string()));
    }
    error_info(code, message, line_reason(&first.rule), &metadata, &named)
}

/// One line's broken rule, naming its item.
fn describe_line(violation: &LineViolation, lines: Lines) -> String {
    match lines {
        Lines::Single => violation.rule.to_string(),
        Lines::Repeated(_) => format!("{}: {}", violation.stream, violation.rule),
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
        ReservationStatus::PartiallyCommitted => "RESERVATION_PARTIALLY_COMMITTED",
    }
}

/// The one mapping of a command's errors to statuses. Over 70 lines: one exhaustive arm per
/// error, with its code and details, a table that reads best whole.
pub fn command_error(error: CommandError, lines: Lines) -> Status {
    match &error {
        CommandError::Domain(domain) => domain_error(domain, lines),
        CommandError::ExpectedVersionOfSeveralItems { items } => error_info(
            Code::FailedPrecondition,
            error.to_string(),
            "EXPECTED_VERSION_OF_SEVERAL_ITEMS",
            &[("items", items.to_string())],
            &[(
                "EXPECTED_VERSION_OF_SEVERAL_ITEMS",
                "expected_version".to_owned(),
                error.to_string(),
            )],
        ),
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
            &[],
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
        CommandError::CountedAt(problem) => {
            invalid_argument(&[FieldViolation::new("counted_at".to_owned(), problem)])
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
        CommandError::Access(access) => access_error(access),
        // Nobody is waiting for this answer; should a caller see it, it was not executed.
        CommandError::Abandoned => Status::cancelled(error.to_string()),
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

/// `PERMISSION_DENIED`: the credential's role does not allow the request
/// (`ROLE_NOT_PERMITTED`), or it names a store outside the credential's stores
/// (`STORE_NOT_PERMITTED`, the store in the metadata). Nothing was stored.
pub fn access_error(error: &AccessError) -> Status {
    match error {
        AccessError::Role { role, .. } => error_info(
            Code::PermissionDenied,
            error.to_string(),
            "ROLE_NOT_PERMITTED",
            &[("role", role.to_string())],
            &[],
        ),
        AccessError::Store { store } => error_info(
            Code::PermissionDenied,
            error.to_string(),
            "STORE_NOT_PERMITTED",
            &[("store_id", store.to_string())],
            &[],
        ),
    }
}

/// `UNAUTHENTICATED` with the reason `TOKEN_MISSING`, `TOKEN_INVALID` or `TOKEN_EXPIRED`, and
/// nothing more about what was wrong.
pub fn auth_error(error: AuthError) -> Status {
    let reason = match error {
        AuthError::Missing => "TOKEN_MISSING",
        AuthError::Invalid => "TOKEN_INVALID",
        AuthError::Expired => "TOKEN_EXPIRED",
    };
    error_info(Code::Unauthenticated, error.to_string(), reason, &[], &[])
}

/// An operator's request to a sink that could not be done.
pub fn control_error(error: ControlError) -> Status {
    match &error {
        ControlError::UnknownSink(name) => error_info(
            Code::NotFound,
            error.to_string(),
            "SINK_NOT_FOUND",
            &[("sink", name.to_string())],
            &[],
        ),
        ControlError::PastHead { .. } => {
            invalid_argument(&[FieldViolation::new("position", error.to_string())])
        }
        ControlError::Stopped => Status::unavailable(error.to_string()),
        ControlError::NotHere(_) => Status::failed_precondition(error.to_string()),
    }
}

pub fn query_error(error: &QueryError) -> Status {
    match error {
        QueryError::NotFound { stream } => error_info(
            Code::NotFound,
            error.to_string(),
            "ITEM_NOT_FOUND",
            &[
                ("product_id", stream.product_id.to_string()),
                ("store_id", stream.store_id.to_string()),
            ],
            &[],
        ),
        QueryError::Ambiguous(refused) => domain_error(refused, Lines::Single),
        QueryError::ReservationNotFound { reservation_id } => error_info(
            Code::NotFound,
            error.to_string(),
            "RESERVATION_NOT_FOUND",
            &[("reservation_id", reservation_id.to_string())],
            &[],
        ),
        QueryError::TransferNotFound { transfer_id } => error_info(
            Code::NotFound,
            error.to_string(),
            "TRANSFER_NOT_FOUND",
            &[("transfer_id", transfer_id.to_string())],
            &[],
        ),
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
        | LogError::SnapshotMismatch { .. }
        | LogError::FoldMismatch { .. } => Status::internal("internal error in the event log"),
    }
}
