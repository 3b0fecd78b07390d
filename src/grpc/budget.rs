//! Each principal's budget on one server: requests in flight (`max_in_flight`), requests and
//! command lines per second, and open subscriptions (its [`Quota`]). One credential that floods
//! is refused alone, with `RESOURCE_EXHAUSTED` and, for a rate, a `RetryInfo` saying when to
//! come back; every other principal is served as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::access::{Authenticated, Quota};

/// At most this many principals' budgets are kept; past it those with nothing in flight and
/// no subscription open are dropped (one JWT subject after another could otherwise grow the
/// map without end).
const MAX_BUDGETS: usize = 65_536;

/// A token bucket of `rate` tokens a second holding at most one second's worth, kept as one
/// atomic number (the generic cell rate algorithm): the time, in nanoseconds since `start`, at
/// which the bucket would be full again. A take of `n` moves it `n / rate` seconds on; it is
/// refused when that would put it more than a second ahead of now. A take of more than a
/// second's worth is let through once the bucket is full, and leaves it in debt: a 1,000-line
/// command under a limit of 500 lines a second then costs two seconds. No lock: one
/// compare-and-swap per take, however many requests of the principal are in flight.
struct Bucket {
    nanos_per_token: f64,
    full_again_at: AtomicU64,
    start: Instant,
}

const SECOND: u64 = 1_000_000_000;

impl Bucket {
    fn new(rate: u32) -> Option<Bucket> {
        (rate > 0).then(|| Bucket {
            nanos_per_token: SECOND as f64 / f64::from(rate),
            full_again_at: AtomicU64::new(0),
            start: Instant::now(),
        })
    }

    /// Takes `amount`, or says how long until it could be taken.
    fn take(&self, amount: f64) -> Result<(), Duration> {
        let now = self.start.elapsed().as_nanos() as u64;
        let cost = (amount * self.nanos_per_token) as u64;
        let mut current = self.full_again_at.load(Ordering::Acquire);
        loop {
            let from = current.max(now);
            // Past a second's worth it must wait for a full bucket, and then goes into debt.
            let allowed = if cost > SECOND {
                now
            } else {
                now + SECOND - cost
            };
            if from > allowed {
                return Err(Duration::from_nanos(from - allowed));
            }
            match self.full_again_at.compare_exchange_weak(
                current,
                from + cost,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }
}

/// Why a principal's request was refused by its own budget.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum OverBudget {
    InFlight { limit: usize },
    Requests { limit: u32, retry_after: Duration },
    Lines { limit: u32, retry_after: Duration },
    Subscriptions { limit: u32 },
}

impl OverBudget {
    pub fn status(self) -> tonic::Status {
        use tonic_types::{ErrorDetails, StatusExt};
        let (message, retry_after) = match self {
            OverBudget::InFlight { limit } => (
                format!(
                    "this credential has its limit of {limit} requests in flight; retry with backoff"
                ),
                None,
            ),
            OverBudget::Requests { limit, retry_after } => (
                format!(
                    "this credential sent more than its {limit} requests a second; retry after the delay given"
                ),
                Some(retry_after),
            ),
            OverBudget::Lines { limit, retry_after } => (
                format!(
                    "this credential's commands wrote more than its {limit} lines a second; retry after the delay given"
                ),
                Some(retry_after),
            ),
            OverBudget::Subscriptions { limit } => (
                format!(
                    "this credential has its limit of {limit} subscriptions open on this server; close one first"
                ),
                None,
            ),
        };
        let mut details = ErrorDetails::new();
        details.set_error_info("QUOTA_EXCEEDED", "inventory.v1", []);
        if let Some(retry_after) = retry_after {
            details.set_retry_info(Some(retry_after.max(Duration::from_millis(1))));
        }
        tonic::Status::with_error_details(tonic::Code::ResourceExhausted, message, details)
    }
}

/// One principal's budget on this server.
pub struct Budget {
    /// The credential's `max_in_flight`, as configured: with `quota`, what the budget was made
    /// from.
    max_in_flight: Option<usize>,
    in_flight: Option<(Arc<Semaphore>, usize)>,
    requests: Option<Bucket>,
    lines: Option<Bucket>,
    subscriptions: Option<(Arc<Semaphore>, u32)>,
    quota: Quota,
}

impl Budget {
    fn new(max_in_flight: Option<usize>, quota: Quota) -> Budget {
        let bucket = |rate: Option<u32>| rate.and_then(Bucket::new);
        Budget {
            max_in_flight,
            in_flight: max_in_flight
                .map(|limit| limit.max(1))
                .map(|limit| (Arc::new(Semaphore::new(limit)), limit)),
            requests: bucket(quota.requests_per_second),
            lines: bucket(quota.lines_per_second),
            subscriptions: quota
                .max_subscriptions
                .filter(|limit| *limit > 0)
                .map(|limit| (Arc::new(Semaphore::new(limit as usize)), limit)),
            quota,
        }
    }

    fn idle(&self) -> bool {
        let free = |pool: &Option<(Arc<Semaphore>, usize)>| {
            pool.as_ref()
                .is_none_or(|(permits, limit)| permits.available_permits() == *limit)
        };
        free(&self.in_flight)
            && self
                .subscriptions
                .as_ref()
                .is_none_or(|(permits, limit)| permits.available_permits() == *limit as usize)
    }

    /// One request: a slot in flight (held until the answer's head is sent) and a token.
    fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, OverBudget> {
        if let Some(requests) = &self.requests {
            requests
                .take(1.0)
                .map_err(|retry_after| OverBudget::Requests {
                    limit: self.quota.requests_per_second.unwrap_or_default(),
                    retry_after,
                })?;
        }
        self.in_flight
            .as_ref()
            .map(|(permits, limit)| {
                permits
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| OverBudget::InFlight { limit: *limit })
            })
            .transpose()
    }

    /// A command of `lines` lines (each an item it changes).
    pub fn charge_lines(&self, lines: usize) -> Result<(), OverBudget> {
        let Some(bucket) = &self.lines else {
            return Ok(());
        };
        bucket
            .take(lines as f64)
            .map_err(|retry_after| OverBudget::Lines {
                limit: self.quota.lines_per_second.unwrap_or_default(),
                retry_after,
            })
    }

    /// A subscription's slot, held as long as the stream.
    pub fn open_subscription(&self) -> Result<Option<OwnedSemaphorePermit>, OverBudget> {
        self.subscriptions
            .as_ref()
            .map(|(permits, limit)| {
                permits
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| OverBudget::Subscriptions { limit: *limit })
            })
            .transpose()
    }
}

/// Every principal's budget on one server, made at its first request: API tokens, certificates
/// and JWT subjects alike (a JWT subject is `jwt:<sub>`, apart from any token's name).
#[derive(Default)]
pub struct Budgets {
    by_name: DashMap<Arc<str>, Arc<Budget>>,
}

impl Budgets {
    /// Admits one request of `credential`: its budget, and the slot in flight it holds.
    pub fn admit(
        &self,
        credential: &Authenticated,
    ) -> Result<(Arc<Budget>, Option<OwnedSemaphorePermit>), OverBudget> {
        let budget = self.of(credential);
        let permit = budget.admit()?;
        Ok((budget, permit))
    }

    /// The credential's budget; a new one when its limits changed (a restart with another
    /// configuration keeps no budget, but a JWT's may differ from the last token's).
    fn of(&self, credential: &Authenticated) -> Arc<Budget> {
        let name = &credential.principal.name;
        let made_for = |budget: &Budget| {
            (budget.max_in_flight, budget.quota) == (credential.max_in_flight, credential.quota)
        };
        if let Some(own) = self.by_name.get(name)
            && made_for(&own)
        {
            return own.clone();
        }
        if self.by_name.len() >= MAX_BUDGETS {
            self.by_name.retain(|_, budget| !budget.idle());
        }
        let fresh = || Arc::new(Budget::new(credential.max_in_flight, credential.quota));
        self.by_name
            .entry(name.clone())
            .and_modify(|own| {
                if !made_for(own) {
                    *own = fresh();
                }
            })
            .or_insert_with(fresh)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_one_seconds_worth_and_says_when_to_come_back() {
        let bucket = Bucket::new(10).unwrap();
        for _ in 0..10 {
            bucket.take(1.0).unwrap();
        }
        let wait = bucket.take(1.0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(Bucket::new(0).is_none(), "0: no limit");
        // More than a second's worth: taken from a full bucket, leaving a debt.
        let bucket = Bucket::new(10).unwrap();
        bucket.take(25.0).unwrap();
        let wait = bucket.take(1.0).unwrap_err();
        assert!(wait > Duration::from_secs(1), "{wait:?}");
    }
}
