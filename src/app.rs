//! The application layer: the command side's single writer, the read model and its
//! projection, the queries over them, and subscriptions. It drives the domain and the log; it
//! knows nothing of gRPC.

pub mod access;
pub mod breaker;
pub mod clock;
pub mod command;
pub mod jwt;
pub mod projection;
pub mod query;
pub mod replay;
pub mod sharded_map;
pub mod shutdown;
pub mod snapshot;
pub mod subscription;

pub use breaker::BreakerState;
pub use clock::{Clock, ManualClock, SystemClock};
pub use command::{
    CommandError, CommandHandle, CommandRequest, CommandSide, IDEMPOTENCY_WINDOW_MILLIS,
};
pub use projection::{ReadModel, StockView};
pub use shutdown::{Shutdown, ShutdownSignal};
pub use subscription::{
    EventFilter, STALLED_AFTER, Subscription, SubscriptionItem, subscribe, subscribe_with_stall,
};
