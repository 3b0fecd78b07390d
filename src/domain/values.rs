//! Value types with their preconditions: quantities, versions, positions, times.

use std::fmt;

/// The largest on-hand quantity of one stock item. It fits the wire's `int64`, so no quantity
/// the service reports can be negative or wrap.
pub const MAX_ON_HAND: u64 = i64::MAX as u64;

/// The longest free-text reason accepted, in bytes.
pub const MAX_REASON_LEN: usize = 256;

/// Why a number is not a valid quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("must be greater than 0")]
    Zero,
    #[error("must not be negative, got {value}")]
    Negative { value: i64 },
    #[error("must be at most {MAX_ON_HAND}, got {value}")]
    TooLarge { value: u64 },
}

/// A positive number of whole units moved by one command.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Quantity(u64);

impl Quantity {
    /// A quantity from the wire's signed integer: zero and negative numbers are rejected.
    pub fn from_signed(value: i64) -> Result<Quantity, QuantityError> {
        match value {
            0 => Err(QuantityError::Zero),
            value if value < 0 => Err(QuantityError::Negative { value }),
            value => Ok(Quantity(value as u64)),
        }
    }

    pub fn new(value: u64) -> Result<Quantity, QuantityError> {
        if value == 0 {
            return Err(QuantityError::Zero);
        }
        // Quantities travel as int64; one larger than any on-hand could never be satisfied.
        if value > MAX_ON_HAND {
            return Err(QuantityError::TooLarge { value });
        }
        Ok(Quantity(value))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// The stock of one item at one moment. Invariant: `reserved <= on_hand <= MAX_ON_HAND`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct StockLevel {
    on_hand: u64,
    reserved: u64,
}

impl StockLevel {
    /// A stock level; `None` when `reserved > on_hand` or `on_hand > MAX_ON_HAND`, which no
    /// sequence of valid events can produce.
    pub fn new(on_hand: u64, reserved: u64) -> Option<StockLevel> {
        (reserved <= on_hand && on_hand <= MAX_ON_HAND).then_some(StockLevel { on_hand, reserved })
    }

    pub fn on_hand(self) -> u64 {
        self.on_hand
    }

    pub fn reserved(self) -> u64 {
        self.reserved
    }

    pub fn available(self) -> u64 {
        self.on_hand - self.reserved
    }
}

/// The version of one stream: the number of events in it. 0 means "no event yet".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct StreamVersion(pub u64);

impl StreamVersion {
    pub const INITIAL: StreamVersion = StreamVersion(0);

    pub fn next(self) -> StreamVersion {
        StreamVersion(self.0 + 1)
    }
}

impl fmt::Display for StreamVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// A position in the global log: gapless from 1. 0 means "before the first event".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct LogPosition(pub u64);

impl LogPosition {
    pub const START: LogPosition = LogPosition(0);

    pub fn next(self) -> LogPosition {
        LogPosition(self.0 + 1)
    }
}

impl fmt::Display for LogPosition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// A point in time: milliseconds since the Unix epoch. The domain never reads a clock; the
/// caller passes the time in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn from_unix_millis(unix_millis: u64) -> Timestamp {
        Timestamp(unix_millis)
    }

    pub fn unix_millis(self) -> u64 {
        self.0
    }

    pub fn saturating_add(self, ttl: TimeToLive) -> Timestamp {
        Timestamp(self.0.saturating_add(ttl.millis()))
    }

    pub fn saturating_sub_millis(self, millis: u64) -> Timestamp {
        Timestamp(self.0.saturating_sub(millis))
    }
}

/// Why a reservation's time to live is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    #[error("must be at least 1 s, got {millis} ms")]
    TooShort { millis: u64 },
    #[error("must be at most 24 h, got {millis} ms")]
    TooLong { millis: u64 },
}

/// How long a reservation holds: from 1 second to 24 hours.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TimeToLive(u64);

impl TimeToLive {
    pub const MIN_MILLIS: u64 = 1_000;
    pub const MAX_MILLIS: u64 = 24 * 60 * 60 * 1_000;
    pub const DEFAULT: TimeToLive = TimeToLive(30 * 60 * 1_000);

    pub fn from_millis(millis: u64) -> Result<TimeToLive, TtlError> {
        if millis < Self::MIN_MILLIS {
            return Err(TtlError::TooShort { millis });
        }
        if millis > Self::MAX_MILLIS {
            return Err(TtlError::TooLong { millis });
        }
        Ok(TimeToLive(millis))
    }

    pub fn millis(self) -> u64 {
        self.0
    }
}

/// Why a reason text is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReasonError {
    #[error("must be at most {MAX_REASON_LEN} bytes, got {length}")]
    TooLong { length: usize },
}

/// Free text saying why stock changed (a delivery note, "cycle count"); may be empty.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Reason(String);

impl Reason {
    pub fn parse(text: &str) -> Result<Reason, ReasonError> {
        if text.len() > MAX_REASON_LEN {
            return Err(ReasonError::TooLong { length: text.len() });
        }
        Ok(Reason(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
