//! The queries of the read side: what `QueryService` answers, from the read model and, for
//! history and temporal queries, from the log the model follows.
//!
//! Every query first waits until the model has applied the client's `min_position`
//! (read-your-writes), then answers as of the model's position at that moment: a history page
//! or a temporal fold never shows an event the model has not applied.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::projection::{ReadModel, ReservationCommands};
use crate::domain::{
    ActiveReservation, DomainError, LogPosition, MAX_ALERTS_PER_ITEM, ProductId, Quantity,
    RecordedEvent, ReservationId, ReservationView, StockItem, StockLevel, StoreId, StreamKey,
    StreamVersion, Timestamp, Transfer, TransferId, TransferStatus,
};
use crate::log::{EventLog, LogError, MAX_READ_EVENTS};

/// The default and largest page of `GetHistory`.
pub const DEFAULT_HISTORY_PAGE: u32 = 100;
pub const MAX_HISTORY_PAGE: u32 = 1000;

const _: () = assert!(DEFAULT_HISTORY_PAGE <= MAX_HISTORY_PAGE);
const _: () = assert!((MAX_HISTORY_PAGE as usize) < MAX_READ_EVENTS);

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no stock item for product_id {} in store_id {}", .stream.product_id, .stream.store_id)]
    NotFound { stream: StreamKey },
    #[error("reservation {reservation_id} not found")]
    ReservationNotFound { reservation_id: ReservationId },
    /// The id names reservations or transfers of several stores the caller may see (ids are
    /// unique per store), and the query named none of them: the domain's own refusal
    /// (`ReservationIdAmbiguous`, `TransferIdAmbiguous`), as a command naming it gets.
    #[error(transparent)]
    Ambiguous(DomainError),
    #[error("transfer {transfer_id} not found")]
    TransferNotFound { transfer_id: TransferId },
    #[error(
        "the read model had applied position {applied} when the deadline passed, \
         min_position is {min_position}"
    )]
    MinPositionNotReached {
        applied: LogPosition,
        min_position: LogPosition,
    },
    #[error(transparent)]
    Log(#[from] LogError),
}

/// An answer, with the position it is as of and how stale it may be.
#[derive(Clone, Debug)]
pub struct Answer<T> {
    pub value: T,
    /// The read model's position when the query was answered.
    pub read_position: LogPosition,
    /// Since when the model's upstream is unreachable (`None` while it answers).
    pub upstream_unreachable_since: Option<SystemTime>,
}

/// One item's stock as the read model holds it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ItemStock {
    pub level: StockLevel,
    pub version: StreamVersion,
    /// The position of the item's last event (as of the query).
    pub position: LogPosition,
}

/// A product in every store that has had it, and the totals over them.
#[derive(Clone, Debug)]
pub struct ProductStock {
    pub stores: Vec<(StreamKey, ItemStock)>,
    /// Totals over every store; they can exceed one item's limit, so they are wider.
    pub on_hand_total: u128,
    pub reserved_total: u128,
}

/// How much of an item is available, and whether a quantity fits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Availability {
    pub available: u64,
    pub enough: bool,
}

/// A page of an item's history.
#[derive(Clone, Debug)]
pub struct HistoryPage {
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts, when there is one.
    pub next_after: Option<StreamVersion>,
}

/// A page of a store's low items, by product id.
#[derive(Clone, Debug)]
pub struct LowStockPage {
    pub items: Vec<(StreamKey, ItemStock)>,
    /// The product id the next page starts after, when there is one.
    pub next_after: Option<ProductId>,
}

/// A page of a store's transfers, by id.
#[derive(Clone, Debug)]
pub struct TransferPage {
    pub transfers: Vec<Transfer>,
    /// The transfer id the next page starts after, when there is one.
    pub next_after: Option<TransferId>,
}

/// The point in the log a temporal query folds up to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AsOf {
    Position(LogPosition),
    Time(Timestamp),
}

/// How long a query waits for `min_position` and what it reads from: the read model, and the
/// log the model follows.
pub struct Queries {
    model: Arc<ReadModel>,
    log: Arc<dyn EventLog>,
}

impl Queries {
    pub fn new(model: Arc<ReadModel>, log: Arc<dyn EventLog>) -> Queries {
        Queries { model, log }
    }

    /// Waits until the read model has applied `min_position`, for at most `wait`; returns the
    /// position the answer is as of.
    async fn wait_for(
        &self,
        min_position: LogPosition,
        wait: Duration,
    ) -> Result<LogPosition, QueryError> {
        let applied = self.model.position();
        if applied >= min_position {
            return Ok(applied);
        }
        if self.model.wait_for(min_position, wait).await {
            Ok(self.model.position())
        } else {
            Err(QueryError::MinPositionNotReached {
                applied: self.model.position(),
                min_position,
            })
        }
    }

    fn answer<T>(&self, value: T, read_position: LogPosition) -> Answer<T> {
        Answer {
            value,
            read_position,
            upstream_unreachable_since: self.model.upstream_unreachable_since(),
        }
    }

    pub async fn stock(
        &self,
        stream: &StreamKey,
        min_position: LogPosition,
        wait: Duration,
    ) -> Result<Answer<ItemStock>, QueryError> {
        let read_position = self.wait_for(min_position, wait).await?;
        let (level, version, position) =
            self.model
                .stock(stream)
                .ok_or_else(|| QueryError::NotFound {
                    stream: stream.clone(),
                })?;
        let stock = ItemStock {
            level,
            version,
            position,
        };
        Ok(self.answer(stock, read_position))
    }

    /// One transfer, as of the read model's position. Transfer ids are unique per source
    /// store: of the transfers shipped with this id, the one from `from_store` when it is
    /// given, or else the only one the caller `sees` an end of.
    pub async fn transfer(
        &self,
        transfer_id: &TransferId,
        from_store: Option<&StoreId>,
        sees: &(dyn Fn(&StoreId) -> bool + Sync),
        min_position: LogPosition,
        wait: Duration,
    ) -> Result<Answer<Transfer>, QueryError> {
        let read_position = self.wait_for(min_position, wait).await?;
        let mut seen: Vec<Transfer> = self
            .model
            .transfers_named(transfer_id)
            .into_iter()
            .filter(|transfer| sees(&transfer.from_store) || sees(&transfer.to_store))
            .filter(|transfer| from_store.is_none_or(|from| &transfer.from_store == from))
            .collect();
        if seen.len() > 1 {
            return Err(QueryError::Ambiguous(DomainError::TransferIdAmbiguous {
                transfer_id: transfer_id.clone(),
                stores: seen
                    .iter()
                    .map(|transfer| transfer.from_store.clone())
                    .collect(),
            }));
        }
        let transfer = seen.pop().ok_or_else(|| QueryError::TransferNotFound {
            transfer_id: transfer_id.clone(),
        })?;
        Ok(self.answer(transfer, read_position))
    }

    /// A page of a store's transfers (from it or to it), by id, of one status or any.
    pub async fn transfers(
        &self,
        store_id: &StoreId,
        status: Option<TransferStatus>,
        after: Option<&TransferId>,
        page_size: u32,
        min_position: LogPosition,
        wait: Duration,
    ) -> Result<Answer<TransferPage>, QueryError> {
        let read_position = self.wait_for(min_position, wait).await?;
        let (transfers, more) =
            self.model
                .store_transfers(store_id, after, page_size as usize, |transfer| {
                    status.is_none_or(|status| transfer.status == status)
                });
        let next_after = more
            .then(|| {
                transfers
                    .last()
                    .map(|transfer| transfer.transfer_id.clone())
            })
            .flatten();
        Ok(self.answer(
            TransferPage {
                transfers,
                next_after,
            },
            read_position,
        ))
    }

    /// The items of `store_id` at or below their low-stock threshold, by product id, after
    /// `after`: at most `page_size`.
    pub async fn low_stock(
        &self,
        store_id: &StoreId,
        after: Option<&ProductId>,
        page_size: u32,
        min_position: LogPosition,
        wait: Duration,
    ) -> Result<Answer<LowStockPage>, QueryError> {
        let read_position = self.wait_for(min_position, wait).await?;
        let (products, more) = self.model.low_stock(store_id, after, page_size as usize);
        let items: Vec<_> = products
            .into_iter()
            .filter_map(|product_id| {
                let stream = StreamKey::new(product_id, store_id.clone());
                let (level, version, position) = self.model.stock(&stream)?;
                // Applied since it was listed, and no longer low.
                if !level.is_low() {
                    return None;
                }
                Some((
                    stream,
                    ItemStock {
                        level,
                        version,
                        position,
                    },
                ))
            })
            .collect();
        let next_after = more
            .then(|| items.last().map(|(stream, _)| stream.product_id.clone()))
            .flatten();
        Ok(self.answer(LowStockPage { items, next_after }, read_position))
    }

    pub async fn product_stock(
        &self,
        product_id: &ProductId,
        min_position: LogPosition,
        wait: Duration,
    ) -> Result<Answer<ProductStock>, QueryError> {
        let read_position = self.wait_for(min_position, wait).await?;
        let mut product = ProductStock {
            stores: Vec::new(),
            on_hand_total: 0,
            reserved_total: 0,
        };
        for (store_id, level, version, position) in self.model.product(product_id) {
            product.on_hand_total += u128::from(level.on_hand());
            product.reserved_total += u128::from(level.reserved());
            let stock = ItemStock {
                level,
                version,
                position,
            };
            let stream = StreamKey::new(product_id.clone(), store_id);
            product.stores.push((stream, stock));
        }
        Ok(self.answer(product, read_position))
    }

    /// One reservation by its id: its lines, status, expiry and events. The read model knows
    /// where its commands are; their events are read back from the log and folded. Ids are
    /// unique per store: of the reservations made with this id, the one holding an item of
    /// `store` when it is given, or else the only one of a store the caller `sees`.
    pub async fn reservation(
        &self,
        reservation_id: &ReservationId,
        store: Option<&StoreId>,
        sees: &(dyn Fn(&StoreId) -> bool + Sync),
        min_position: LogPosition,
        wait: Duration,
    ) -> Result<Answer<ReservationView>, QueryError> {
        let read_position = self.wait_for(min_position, wait).await?;
        let not_found = || QueryError::ReservationNotFound {
            reservation_id: reservation_id.clone(),
        };
        let (candidates, extensions) = self.model.reservation_commands(reservation_id);
        let mut views = Vec::new();
        for candidate in candidates {
            // A later reservation's stores are known without reading its events.
            if let Some(stores) = &candidate.stores
                && (!stores.iter().any(sees) || store.is_some_and(|store| !stores.contains(store)))
            {
                continue;
            }
            let Some(view) = self
                .reservation_view(reservation_id, &candidate, &extensions)
                .await?
            else {
                continue;
            };
            let stores = || view.lines.iter().map(|line| &line.stream.store_id);
            if stores().any(sees) && store.is_none_or(|store| stores().any(|held| held == store)) {
                views.push(view);
            }
        }
        if views.len() > 1 {
            return Err(QueryError::Ambiguous(DomainError::ReservationIdAmbiguous {
                reservation_id: reservation_id.clone(),
                stores: views
                    .iter()
                    .filter_map(|view| {
                        view.lines
                            .iter()
                            .map(|line| &line.stream.store_id)
                            .find(|store| sees(store))
                            .cloned()
                    })
                    .collect(),
            }));
        }
        let view = views.pop().ok_or_else(not_found)?;
        Ok(self.answer(view, read_position))
    }

    /// The fold of one reservation's commands: its reservation, then its extensions (those of
    /// `extensions` about its items) and its end, in log order.
    async fn reservation_view(
        &self,
        reservation_id: &ReservationId,
        commands: &ReservationCommands,
        extensions: &[LogPosition],
    ) -> Result<Option<ReservationView>, QueryError> {
        let mut starts: Vec<LogPosition> = commands
            .starts
            .iter()
            .chain(
                extensions
                    .iter()
                    .filter(|position| **position > commands.starts[0]),
            )
            .copied()
            .collect();
        starts.sort_unstable();
        starts.dedup();
        let mut view: Option<ReservationView> = None;
        for start in starts {
            let reserving = start == commands.starts[0];
            let after = LogPosition(start.0 - 1);
            // A command of the reservation has at most `lines` events and the alerts of each;
            // only the events of the command that starts here are its.
            let bound = commands.lines as usize * (1 + MAX_ALERTS_PER_ITEM);
            let events = self.log.read_all(after, bound).await?;
            let command_events = events
                .first()
                .map_or(0, |event| event.command_event_count as usize);
            for event in events
                .iter()
                .take(command_events)
                .filter(|event| event.event.reservation_id() == Some(reservation_id))
            {
                let view = match &mut view {
                    Some(view) => {
                        // Another store's reservation with the same id: not this one's.
                        if !reserving && !view.lines.iter().any(|line| line.stream == event.stream)
                        {
                            continue;
                        }
                        view
                    }
                    None => match ReservationView::start(&event.event) {
                        Some(started) => view.insert(started),
                        None => return Ok(None),
                    },
                };
                view.evolve(&event.stream, event.position, &event.event);
            }
        }
        Ok(view)
    }

    /// Whether `quantity` of an item is available; an item never stocked has 0.
    pub async fn availability(
        &self,
        stream: &StreamKey,
        quantity: Quantity,
        min_position: LogPosition,
        wait: Duration,
    ) -> Result<Answer<Availability>, QueryError> {
        let read_position = self.wait_for(min_position, wait).await?;
        let available = self
            .model
            .stock(stream)
            .map_or(0, |(level, _, _)| level.available());
        let availability = Availability {
            available,
            enough: available >= quantity.get(),
        };
        Ok(self.answer(availability, read_position))
    }

    /// An item's active reservations, soonest to expire first.
    pub async fn reservations(
        &self,
        stream: &StreamKey,
        min_position: LogPosition,
        wait: Duration,
    ) -> Result<Answer<Vec<(ReservationId, ActiveReservation)>>, QueryError> {
        let read_position = self.wait_for(min_position, wait).await?;
        let reservations = self.model.reservations(stream);
        Ok(self.answer(reservations, read_position))
    }

    /// Up to `page_size` (at most [`MAX_HISTORY_PAGE`]) events of an item after version
    /// `after`.
    pub async fn history(
        &self,
        stream: &StreamKey,
        after: StreamVersion,
        page_size: u32,
        min_position: LogPosition,
        wait: Duration,
    ) -> Result<Answer<HistoryPage>, QueryError> {
        let page_size = page_size.min(MAX_HISTORY_PAGE) as usize;
        let read_position = self.wait_for(min_position, wait).await?;
        // Read one more than the page to know whether another page follows.
        let mut events = self
            .log
            .read_stream(stream.clone(), after, page_size + 1)
            .await?;
        events.retain(|event| event.position <= read_position);
        let more = events.len() > page_size;
        events.truncate(page_size);
        let next_after = match (more, events.last()) {
            (true, Some(last)) => Some(last.version),
            _ => None,
        };
        Ok(self.answer(HistoryPage { events, next_after }, read_position))
    }

    /// An item's stock as of a position or a time: a fold of its events up to there. An item
    /// with no event by then is empty, at version 0.
    pub async fn stock_at(
        &self,
        stream: &StreamKey,
        as_of: AsOf,
        min_position: LogPosition,
        wait: Duration,
    ) -> Result<Answer<ItemStock>, QueryError> {
        let read_position = self.wait_for(min_position, wait).await?;
        let included = |event: &RecordedEvent| {
            event.position <= read_position
                && match as_of {
                    AsOf::Position(as_of) => event.position <= as_of,
                    AsOf::Time(as_of) => event.occurred_at <= as_of,
                }
        };
        let mut item = StockItem::default();
        let mut position = LogPosition::START;
        let mut after = StreamVersion::INITIAL;
        'pages: loop {
            let events = self
                .log
                .read_stream(stream.clone(), after, MAX_READ_EVENTS)
                .await?;
            if events.is_empty() {
                break;
            }
            for event in &events {
                if !included(event) {
                    break 'pages;
                }
                item.evolve(&event.event);
                position = event.position;
                after = event.version;
            }
        }
        let stock = ItemStock {
            level: item.level(),
            version: item.version(),
            position,
        };
        Ok(self.answer(stock, read_position))
    }
}
