//! Wire → domain conversions for requests. Each checks every field once, here at the edge, and
//! reports every invalid field by name; past this point the types carry the guarantees.

mod commands;
mod queries;

use crate::log::codec::stock_state_from_pb;

use crate::app::command::CommandRequest;
use crate::app::query::{DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE};
use crate::domain::{
    CommandId, LogPosition, MAX_COMMAND_LINES, MAX_ON_HAND, ProductId, Quantity, Reason,
    ReservationId, StockState, StoreId, StreamKey, StreamVersion, TimeToLive,
};

use super::status::{FieldViolation, invalid_argument};

use commands::ttl_from_pb;
pub use commands::*;
pub use queries::*;

/// The name of a request's field in a violation: a plain field, or a field of one line of a
/// repeated field (`lines[3].quantity`), rendered only when a violation is reported.
#[derive(Clone, Copy, Debug)]
pub enum FieldName {
    Plain(&'static str),
    Line {
        list: &'static str,
        index: usize,
        field: Option<&'static str>,
    },
}

impl FieldName {
    fn line(list: &'static str, index: usize, field: &'static str) -> FieldName {
        FieldName::Line {
            list,
            index,
            field: Some(field),
        }
    }
}

impl From<&'static str> for FieldName {
    fn from(field: &'static str) -> FieldName {
        FieldName::Plain(field)
    }
}

impl std::fmt::Display for FieldName {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldName::Plain(field) => formatter.write_str(field),
            FieldName::Line {
                list,
                index,
                field: None,
            } => write!(formatter, "{list}[{index}]"),
            FieldName::Line {
                list,
                index,
                field: Some(field),
            } => write!(formatter, "{list}[{index}].{field}"),
        }
    }
}

/// Collects field violations while a request is converted.
#[derive(Default)]
pub struct Fields {
    violations: Vec<FieldViolation>,
}

impl Fields {
    pub fn new() -> Fields {
        Fields::default()
    }

    /// Records a violation for `field` when `result` is an error.
    pub fn check<T, E: ToString>(
        &mut self,
        field: impl Into<FieldName>,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.violations
                    .push(FieldViolation::new(field.into().to_string(), error));
                None
            }
        }
    }

    pub fn product_id(&mut self, field: impl Into<FieldName>, text: &str) -> Option<ProductId> {
        self.check(field, ProductId::parse(text))
    }

    pub fn store_id(&mut self, field: impl Into<FieldName>, text: &str) -> Option<StoreId> {
        self.check(field, StoreId::parse(text))
    }

    /// A store id that may be left empty: `Some(None)` when it is.
    pub fn optional_store_id(
        &mut self,
        field: impl Into<FieldName>,
        text: &str,
    ) -> Option<Option<StoreId>> {
        if text.is_empty() {
            return Some(None);
        }
        self.store_id(field, text).map(Some)
    }

    pub fn stream(&mut self, product_id: &str, store_id: &str) -> Option<StreamKey> {
        let product_id = self.product_id("product_id", product_id);
        let store_id = self.store_id("store_id", store_id);
        Some(StreamKey::new(product_id?, store_id?))
    }

    /// The item of line `index` of the repeated field `list`.
    fn line_stream(
        &mut self,
        list: &'static str,
        index: usize,
        product_id: &str,
        store_id: &str,
    ) -> Option<StreamKey> {
        let product_id = self.product_id(FieldName::line(list, index, "product_id"), product_id);
        let store_id = self.store_id(FieldName::line(list, index, "store_id"), store_id);
        Some(StreamKey::new(product_id?, store_id?))
    }

    pub fn quantity(&mut self, field: impl Into<FieldName>, value: i64) -> Option<Quantity> {
        self.check(field, Quantity::from_signed(value))
    }

    fn on_hand(&mut self, field: impl Into<FieldName>, value: i64) -> Option<u64> {
        self.check(
            field,
            u64::try_from(value)
                .map_err(|_| format!("must not be negative, got {value}"))
                .and_then(|value| {
                    if value > MAX_ON_HAND {
                        Err(format!("must be at most {MAX_ON_HAND}"))
                    } else {
                        Ok(value)
                    }
                }),
        )
    }

    /// A state; `unset` is what `STOCK_STATE_UNSPECIFIED` means here (`None`: required).
    fn state(
        &mut self,
        field: impl Into<FieldName>,
        value: i32,
        unset: Option<StockState>,
    ) -> Option<StockState> {
        let result = match (value, unset) {
            (0, Some(state)) => Ok(state),
            (0, None) => Err("set AVAILABLE, DAMAGED or QUALITY_CONTROL".to_owned()),
            (value, _) => stock_state_from_pb(value).ok_or_else(|| {
                format!("{value} is not a state: AVAILABLE, DAMAGED or QUALITY_CONTROL")
            }),
        };
        self.check(field, result)
    }

    /// A policy quantity: unset stays unset; set, 0 to [`MAX_ON_HAND`].
    fn policy(&mut self, field: &'static str, value: Option<i64>) -> Option<Option<u64>> {
        match value {
            None => Some(None),
            Some(value) => self.on_hand(field, value).map(Some),
        }
    }

    pub fn reason(&mut self, field: impl Into<FieldName>, text: &str) -> Option<Reason> {
        self.check(field, Reason::parse(text))
    }

    /// Whether line `index` of `lines` is the first to name `product_id`; a later one is
    /// refused with the first one's index (`seen` holds the lines so far).
    fn first_naming<'a>(
        &mut self,
        seen: &mut std::collections::HashMap<&'a str, usize>,
        index: usize,
        product_id: &'a str,
    ) -> bool {
        match seen.entry(product_id) {
            std::collections::hash_map::Entry::Occupied(earlier) => {
                let earlier = *earlier.get();
                self.refuse(
                    FieldName::Line {
                        list: "lines",
                        index,
                        field: None,
                    },
                    format!("names the same product as lines[{earlier}]: one line per product"),
                );
                false
            }
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(index);
                true
            }
        }
    }

    /// Where a page starts, from a previous response's `page_token`: `None` for the first
    /// page (an empty token).
    fn page_token<T, E>(
        &mut self,
        token: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<Option<T>> {
        if token.is_empty() {
            return Some(None);
        }
        self.check(
            "page_token",
            parse(token)
                .map(Some)
                .map_err(|_| "not a token from a previous response".to_owned()),
        )
    }

    /// A page size: 1 to [`MAX_HISTORY_PAGE`], [`DEFAULT_HISTORY_PAGE`] when 0.
    fn page_size(&mut self, size: u32) -> Option<u32> {
        match size {
            0 => Some(DEFAULT_HISTORY_PAGE),
            size if size <= MAX_HISTORY_PAGE => Some(size),
            size => self.check(
                "page_size",
                Err(format!("must be at most {MAX_HISTORY_PAGE}, got {size}")),
            ),
        }
    }

    pub fn reservation_id(
        &mut self,
        field: impl Into<FieldName>,
        text: &str,
    ) -> Option<ReservationId> {
        self.check(field, ReservationId::parse(text))
    }

    /// The number of lines of the repeated field `list`: 1 to [`MAX_COMMAND_LINES`].
    fn line_count(&mut self, list: &'static str, count: usize) -> Option<()> {
        let result = match count {
            0 => Err("must hold at least 1 line".to_owned()),
            count if count > MAX_COMMAND_LINES => Err(format!(
                "must hold at most {MAX_COMMAND_LINES} lines, got {count}"
            )),
            _ => Ok(()),
        };
        self.check(list, result)
    }

    /// A violation for `field` that no single value check found.
    fn refuse(&mut self, field: impl Into<FieldName>, problem: impl ToString) {
        self.check::<(), _>(field, Err(problem.to_string()));
    }

    /// A reservation's time to live; [`TimeToLive::DEFAULT`] when unset.
    fn ttl(
        &mut self,
        field: &'static str,
        duration: Option<&prost_types::Duration>,
    ) -> Option<TimeToLive> {
        match duration {
            None => Some(TimeToLive::DEFAULT),
            Some(duration) => self.check(field, ttl_from_pb(duration)),
        }
    }

    fn optional_command_id(&mut self, text: &str) -> Option<Option<CommandId>> {
        if text.is_empty() {
            return Some(None);
        }
        self.check("command_id", CommandId::parse(text)).map(Some)
    }

    pub fn min_position(&mut self, value: Option<u64>) -> Option<LogPosition> {
        Some(LogPosition(value.unwrap_or(0)))
    }

    /// The command with its envelope (`command_id`, `expected_version`) when every field of
    /// the request was valid, else `INVALID_ARGUMENT` naming each invalid field.
    fn finish_command<C>(
        mut self,
        command: Option<C>,
        command_id: &str,
        expected_version: Option<u64>,
    ) -> Result<CommandRequest<C>, tonic::Status> {
        let command_id = self.optional_command_id(command_id);
        let request = (|| {
            Some(CommandRequest {
                command: command?,
                command_id: command_id?,
                expected_version: expected_version.map(StreamVersion),
            })
        })();
        self.finish(request)
    }

    /// `Ok` with the value when every field was valid, else `INVALID_ARGUMENT` naming each
    /// invalid field.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, tonic::Status> {
        match value {
            Some(value) if self.violations.is_empty() => Ok(value),
            _ => Err(invalid_argument(&self.violations)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventKind;
    use crate::grpc::pb;

    #[test]
    fn each_event_kind_is_named_as_the_proto_names_its_event_type() {
        for kind in EventKind::ALL {
            let value = pb::EventType::from_str_name(kind.name()).expect("a proto name") as i32;
            let filter = pb::SubscriptionFilter {
                event_types: vec![value],
                ..Default::default()
            };
            let parsed = event_filter(Some(&filter)).unwrap();
            assert_eq!(parsed.kinds.into_iter().collect::<Vec<_>>(), [kind]);
            assert_eq!(EventKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(
            EventKind::ALL.len(),
            pb::EventType::TransferReturned as usize
        );
    }
}
