//! The circuit breaker between the command writer and the log's storage. After
//! [`FAILURES_TO_OPEN`] storage failures in a row it opens: commands fail at once with
//! `UNAVAILABLE` and a retry delay instead of queueing behind a dead disk or database. After a
//! cool-down one batch is let through as a probe (half-open); its success closes the breaker,
//! its failure opens it again for twice as long (up to [`COOLDOWN_MAX`]).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Storage failures in a row that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 3;

/// The first and the longest cool-down of an open breaker.
pub const COOLDOWN_MIN: Duration = Duration::from_millis(500);
pub const COOLDOWN_MAX: Duration = Duration::from_secs(10);

/// What the breaker lets through, for health reporting and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The value of the `inventory_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

pub struct CircuitBreaker {
    state: BreakerState,
    failures_in_a_row: u32,
    cooldown: Duration,
    open_until: Instant,
    published: watch::Sender<BreakerState>,
}

impl CircuitBreaker {
    pub fn new() -> (CircuitBreaker, watch::Receiver<BreakerState>) {
        let (published, receiver) = watch::channel(BreakerState::Closed);
        let breaker = CircuitBreaker {
            state: BreakerState::Closed,
            failures_in_a_row: 0,
            cooldown: COOLDOWN_MIN,
            open_until: Instant::now(),
            published,
        };
        metrics::gauge!("inventory_breaker_state").set(BreakerState::Closed.gauge_value());
        (breaker, receiver)
    }

    /// Whether a batch may try the storage now; if not, how long until it may.
    pub fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state {
            BreakerState::Closed | BreakerState::HalfOpen => Ok(()),
            BreakerState::Open if now >= self.open_until => {
                self.set(BreakerState::HalfOpen);
                Ok(())
            }
            BreakerState::Open => Err(self.open_until - now),
        }
    }

    pub fn record_success(&mut self) {
        self.failures_in_a_row = 0;
        self.cooldown = COOLDOWN_MIN;
        if self.state != BreakerState::Closed {
            tracing::info!("the log's storage is back; circuit breaker closed");
            self.set(BreakerState::Closed);
        }
    }

    pub fn record_failure(&mut self, now: Instant) {
        self.failures_in_a_row += 1;
        let open = match self.state {
            BreakerState::HalfOpen => {
                self.cooldown = (self.cooldown * 2).min(COOLDOWN_MAX);
                true
            }
            BreakerState::Closed => self.failures_in_a_row >= FAILURES_TO_OPEN,
            BreakerState::Open => false,
        };
        if open {
            self.open_until = now + self.cooldown;
            tracing::warn!(
                failures_in_a_row = self.failures_in_a_row,
                cooldown_ms = self.cooldown.as_millis() as u64,
                "the log's storage keeps failing; circuit breaker open"
            );
            self.set(BreakerState::Open);
        }
    }

    fn set(&mut self, state: BreakerState) {
        self.state = state;
        metrics::gauge!("inventory_breaker_state").set(state.gauge_value());
        if state == BreakerState::Open {
            metrics::counter!("inventory_breaker_opened_total").increment(1);
        }
        self.published.send_replace(state);
    }
}
