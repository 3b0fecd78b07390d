//! The application layer: the command side's single writer, the read model and its
//! projection, and subscriptions. It drives the domain and the log; it knows nothing of gRPC.

pub mod breaker;
pub mod clock;
pub mod command;
pub mod projection;
pub mod replay;
pub mod sharded_map;
pub mod shutdown;
pub mod subscription;

pub use breaker::BreakerState;
pub use clock::{Clock, ManualClock, SystemClock};
pub use command::{
    CommandError, CommandHandle, CommandOutcome, CommandRequest, CommandSide,
    IDEMPOTENCY_WINDOW_MILLIS, fingerprint,
};
pub use projection::{ReadModel, StockView};
pub use shutdown::{Shutdown, ShutdownSignal};
pub use subscription::{EventFilter, SubscriptionItem, subscribe};
