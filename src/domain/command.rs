//! What a client asks the inventory to do: one type per command, in the imperative, each in the
//! module of its family with the rules that decide it.
//!
//! An accepted command becomes one event per stock item it touches; a multi-line command is
//! accepted or refused whole. Every layer that needs something of a command dispatches here
//! through [`dispatch!`], so a new command is a type in its family's module and one line in
//! that macro.

mod counts;
mod quantities;
mod reservations;
mod transfers;

pub use counts::{CountLine, RecordCount};
pub use quantities::{
    AddStock, AdjustStock, ApplyStockChanges, MoveStock, RemoveStock, SameState, SetItemPolicy,
    StateMove, StockChangeKind, StockChangeLine,
};
pub use reservations::{
    CommitLine, CommitReservation, ExpireReservation, ExtendReservation, ReleaseReservation,
    ReservationLine, ReserveStock,
};
pub use transfers::{CancelTransfer, ReceiveTransfer, ShipTransfer, TransferLine};

use super::error::DomainError;
use super::event::MAX_ALERTS_PER_ITEM;
use super::ids::StoreId;
use super::inventory::{Decision, Inventory};
use super::values::Timestamp;

/// The most lines of one multi-line command (a cart's reservation lines, a delivery's stock
/// changes, a partial commit's lines).
pub const MAX_COMMAND_LINES: usize = 1_000;

/// The most events of one command: an event per line and its item's alerts.
pub const MAX_COMMAND_EVENTS: usize = MAX_COMMAND_LINES * (1 + MAX_ALERTS_PER_ITEM);

/// Every command. Each variant holds the command's own type, which says everything about it:
/// its fields, how it is decided ([`Command::decide_lines`]), which stores it touches and how
/// many items it may touch.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Command {
    AddStock(AddStock),
    AdjustStock(AdjustStock),
    RemoveStock(RemoveStock),
    MoveStock(MoveStock),
    SetItemPolicy(SetItemPolicy),
    ApplyStockChanges(ApplyStockChanges),
    ReserveStock(ReserveStock),
    CommitReservation(CommitReservation),
    ReleaseReservation(ReleaseReservation),
    ExtendReservation(ExtendReservation),
    ExpireReservation(ExpireReservation),
    ShipTransfer(ShipTransfer),
    ReceiveTransfer(ReceiveTransfer),
    CancelTransfer(CancelTransfer),
    RecordCount(RecordCount),
}

/// Runs `$body` with `$command` bound to the command's own type, whichever it is: the one list
/// of every command, so that each use of it stays exhaustive without naming them again.
macro_rules! dispatch {
    ($value:expr, $command:ident => $body:expr) => {
        match $value {
            Command::AddStock($command) => $body,
            Command::AdjustStock($command) => $body,
            Command::RemoveStock($command) => $body,
            Command::MoveStock($command) => $body,
            Command::SetItemPolicy($command) => $body,
            Command::ApplyStockChanges($command) => $body,
            Command::ReserveStock($command) => $body,
            Command::CommitReservation($command) => $body,
            Command::ReleaseReservation($command) => $body,
            Command::ExtendReservation($command) => $body,
            Command::ExpireReservation($command) => $body,
            Command::ShipTransfer($command) => $body,
            Command::ReceiveTransfer($command) => $body,
            Command::CancelTransfer($command) => $body,
            Command::RecordCount($command) => $body,
        }
    };
}

/// The stores and the size of a command whose every entry of `self.$lines` names one item
/// (`.stream`): a cart's lines, a delivery's changes, a count's lines.
macro_rules! one_item_per_line {
    ($lines:ident) => {
        fn find_store<'a>(
            &'a self,
            _inventory: &'a Inventory,
            refused: &mut dyn FnMut(&StoreId) -> bool,
        ) -> Option<&'a StoreId> {
            self.$lines
                .iter()
                .map(|line| &line.stream.store_id)
                .find(|store| refused(store))
        }

        fn item_bound(&self, _inventory: &Inventory) -> usize {
            self.$lines.len()
        }

        fn lines(&self) -> usize {
            self.$lines.len()
        }
    };
}
use one_item_per_line;

/// What the inventory needs of every command. Implemented by each command type, beside its
/// rules.
pub trait Decide {
    /// The events the command becomes against `inventory` at `now`, one per item it touches,
    /// before alerts; or why it is refused. Pure.
    fn decide(&self, inventory: &Inventory, now: Timestamp) -> Result<Vec<Decision>, DomainError>;

    /// The first store the command touches for which `refused` says true, judged against the
    /// state it is decided on (a reservation's or a transfer's stores are in the state, not in
    /// the command). A transfer is the act of one store at a time: shipping and cancelling are
    /// the source's, receiving the destination's.
    fn find_store<'a>(
        &'a self,
        inventory: &'a Inventory,
        refused: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Option<&'a StoreId>;

    /// At most how many items the command touches (an event each, before alerts).
    fn item_bound(&self, inventory: &Inventory) -> usize;

    /// How many lines the client sent: what a principal's `lines_per_second` counts. A
    /// command on an existing reservation counts one (its lines were counted when reserved).
    fn lines(&self) -> usize {
        1
    }

    /// For a command naming an existing reservation by an id that names reservations in
    /// several stores (ids are unique per store) without saying which: picks the one the
    /// caller may see (`sees`), or refuses as if the id were unknown (none seen) or as
    /// ambiguous (several seen, named by the stores the caller sees). Nothing to do for other
    /// commands.
    fn narrow(
        &mut self,
        _inventory: &Inventory,
        _sees: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Result<(), DomainError> {
        Ok(())
    }

    /// For a command on an existing reservation or transfer, named by its id: the answer for a
    /// caller that may see none of its stores (`sees` says false for each), the same as for an
    /// unknown id, so that the id's existence is not told. `None` for every other command.
    fn unseen(
        &self,
        _inventory: &Inventory,
        _sees: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Option<DomainError> {
        None
    }
}

/// What [`Decide::narrow`] does with the stores a caller may see of the reservations (or the
/// transfers' sources) an id names, when it names several (`seen` is `None` when it names at
/// most one): nothing when the command already names a store or there is nothing to choose;
/// otherwise the one seen goes into `store`, and none seen or several seen are the error.
pub(super) fn pick_seen(
    store: &mut Option<StoreId>,
    seen: impl FnOnce() -> Option<Vec<StoreId>>,
) -> Result<(), PickRefused> {
    if store.is_some() {
        return Ok(());
    }
    let Some(mut seen) = seen() else {
        return Ok(());
    };
    match seen.len() {
        0 => Err(PickRefused::NoneSeen),
        1 => {
            *store = seen.pop();
            Ok(())
        }
        _ => Err(PickRefused::Several(seen)),
    }
}

/// Why [`pick_seen`] chose no store.
pub(super) enum PickRefused {
    NoneSeen,
    Several(Vec<StoreId>),
}

impl Command {
    /// See [`Decide::narrow`].
    pub fn narrow(
        &mut self,
        inventory: &Inventory,
        sees: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Result<(), DomainError> {
        dispatch!(self, command => command.narrow(inventory, sees))
    }

    /// See [`Decide::decide`].
    pub(super) fn decide_lines(
        &self,
        inventory: &Inventory,
        now: Timestamp,
    ) -> Result<Vec<Decision>, DomainError> {
        dispatch!(self, command => command.decide(inventory, now))
    }

    /// See [`Decide::find_store`].
    pub fn find_store<'a>(
        &'a self,
        inventory: &'a Inventory,
        refused: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Option<&'a StoreId> {
        dispatch!(self, command => command.find_store(inventory, refused))
    }

    /// See [`Decide::unseen`].
    pub fn unseen(
        &self,
        inventory: &Inventory,
        sees: &mut dyn FnMut(&StoreId) -> bool,
    ) -> Option<DomainError> {
        dispatch!(self, command => command.unseen(inventory, sees))
    }

    /// At most how many events the command can append: each item it touches may raise alerts.
    pub fn event_bound(&self, inventory: &Inventory) -> usize {
        let items = dispatch!(self, command => command.item_bound(inventory));
        items * (1 + MAX_ALERTS_PER_ITEM)
    }
}

/// `From<X> for Command` for each command type, so a command is made with `.into()`.
macro_rules! into_command {
    ($($name:ident),* $(,)?) => {
        $(impl From<$name> for Command {
            fn from(command: $name) -> Command {
                Command::$name(command)
            }
        })*
    };
}

into_command!(
    AddStock,
    AdjustStock,
    RemoveStock,
    MoveStock,
    SetItemPolicy,
    ApplyStockChanges,
    ReserveStock,
    CommitReservation,
    ReleaseReservation,
    ExtendReservation,
    ExpireReservation,
    ShipTransfer,
    ReceiveTransfer,
    CancelTransfer,
    RecordCount,
);
