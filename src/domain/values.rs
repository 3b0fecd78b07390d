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

/// A state that units on hand can be in. `Available` units are the good ones: what no
/// reservation holds is what reservations, removals, moves and transfers take from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum StockState {
    Available,
    Damaged,
    QualityControl,
}

impl fmt::Display for StockState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            StockState::Available => "available",
            StockState::Damaged => "damaged",
            StockState::QualityControl => "quality_control",
        })
    }
}

/// Every quantity of one item at one moment, and its policy.
///
/// `on_hand` is everything physically in the store, whatever its state; `reserved`,
/// `damaged` and `quality_control` are parts of it that cannot be sold. `safety_stock` is a
/// buffer the web shop must not sell, `incoming` is on its way and not on hand, and
/// `low_stock_threshold` is where the item counts as low (0: never). Invariants:
/// `damaged + quality_control <= on_hand`, and `reserved` fits in what is left except after a
/// physical count found less than that (see [`StockLevel::shortfall`]); every quantity is at
/// most [`MAX_ON_HAND`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct StockLevel {
    on_hand: u64,
    reserved: u64,
    damaged: u64,
    quality_control: u64,
    safety_stock: u64,
    incoming: u64,
    low_stock_threshold: u64,
}

/// The parts of a [`StockLevel`], to build one with [`StockLevel::from_parts`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct StockParts {
    pub on_hand: u64,
    pub reserved: u64,
    pub damaged: u64,
    pub quality_control: u64,
    pub safety_stock: u64,
    pub incoming: u64,
    pub low_stock_threshold: u64,
}

impl StockLevel {
    /// A stock level of on-hand and reserved units only; `None` when `reserved > on_hand` or
    /// `on_hand > MAX_ON_HAND`.
    pub fn new(on_hand: u64, reserved: u64) -> Option<StockLevel> {
        (reserved <= on_hand && on_hand <= MAX_ON_HAND).then_some(StockLevel {
            on_hand,
            reserved,
            ..StockLevel::default()
        })
    }

    /// A stock level of any parts each at most [`MAX_ON_HAND`]; `None` otherwise. It may hold
    /// a shortfall.
    pub fn from_parts(parts: StockParts) -> Option<StockLevel> {
        let StockParts {
            on_hand,
            reserved,
            damaged,
            quality_control,
            safety_stock,
            incoming,
            low_stock_threshold,
        } = parts;
        [
            on_hand,
            reserved,
            damaged,
            quality_control,
            safety_stock,
            incoming,
            low_stock_threshold,
        ]
        .iter()
        .all(|quantity| *quantity <= MAX_ON_HAND)
        .then_some(StockLevel {
            on_hand,
            reserved,
            damaged,
            quality_control,
            safety_stock,
            incoming,
            low_stock_threshold,
        })
    }

    pub fn parts(self) -> StockParts {
        StockParts {
            on_hand: self.on_hand,
            reserved: self.reserved,
            damaged: self.damaged,
            quality_control: self.quality_control,
            safety_stock: self.safety_stock,
            incoming: self.incoming,
            low_stock_threshold: self.low_stock_threshold,
        }
    }

    pub fn on_hand(self) -> u64 {
        self.on_hand
    }

    pub fn reserved(self) -> u64 {
        self.reserved
    }

    pub fn damaged(self) -> u64 {
        self.damaged
    }

    pub fn quality_control(self) -> u64 {
        self.quality_control
    }

    pub fn safety_stock(self) -> u64 {
        self.safety_stock
    }

    pub fn incoming(self) -> u64 {
        self.incoming
    }

    pub fn low_stock_threshold(self) -> u64 {
        self.low_stock_threshold
    }

    /// What on-hand must cover: the reserved, damaged and quality-control units.
    pub fn held(self) -> u64 {
        self.reserved
            .saturating_add(self.damaged)
            .saturating_add(self.quality_control)
    }

    /// The good units no reservation holds: `on_hand − reserved − damaged − quality_control`
    /// (0 when that is negative). Removals, moves and transfers from `Available` take from
    /// these, the safety buffer included.
    pub fn unreserved(self) -> u64 {
        self.on_hand.saturating_sub(self.held())
    }

    /// What may be reserved: the unreserved units beyond the safety stock.
    pub fn available(self) -> u64 {
        self.unreserved().saturating_sub(self.safety_stock)
    }

    /// How many units on-hand lacks to cover what is reserved, damaged or in quality control:
    /// 0 except after a physical count found fewer units than that.
    pub fn shortfall(self) -> u64 {
        self.held().saturating_sub(self.on_hand)
    }

    /// How many units are in `state`.
    pub fn in_state(self, state: StockState) -> u64 {
        match state {
            StockState::Available => self.unreserved(),
            StockState::Damaged => self.damaged,
            StockState::QualityControl => self.quality_control,
        }
    }

    /// Whether the item is at or below its low-stock threshold (never when it has none).
    pub fn is_low(self) -> bool {
        self.low_stock_threshold > 0 && self.available() <= self.low_stock_threshold
    }

    /// The same level with `change` applied to its parts, every quantity saturating in
    /// `0..=MAX_ON_HAND`: the fold never fails, and a faulty log folds into a level that a
    /// caller can compare with what it recorded.
    pub fn changed(self, change: impl FnOnce(&mut StockParts)) -> StockLevel {
        let mut parts = self.parts();
        change(&mut parts);
        let clamp = |quantity: u64| quantity.min(MAX_ON_HAND);
        StockLevel {
            on_hand: clamp(parts.on_hand),
            reserved: clamp(parts.reserved),
            damaged: clamp(parts.damaged),
            quality_control: clamp(parts.quality_control),
            safety_stock: clamp(parts.safety_stock),
            incoming: clamp(parts.incoming),
            low_stock_threshold: clamp(parts.low_stock_threshold),
        }
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
