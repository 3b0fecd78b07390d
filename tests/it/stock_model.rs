//! The retail stock model in the pure domain: stock states (damaged, quality control), the
//! item policy (safety stock, low-stock threshold) and the alerts a command raises when it
//! crosses a threshold. Given/when/then tests for every rule, and a property test of random
//! commands against a simple model.
//!
//! Over 600 lines: the given/when/then table of the stock states' rules, then the property
//! test's model, read as one specification.

use inventory::domain::{
    AddStock, AdjustStock, ApplyStockChanges, CancelTransfer, Command, CommitReservation,
    CountLine, CustomerId, DomainError, ExpireReservation, Inventory, LineRule, LineViolation,
    MoveStock, OrderId, ProductId, Quantity, QuantityEvent, Reason, ReceiveTransfer, RecordCount,
    ReleaseReservation, RemoveStock, ReservationId, ReservationLine, ReserveStock, SetItemPolicy,
    ShipTransfer, StateMove, StockAlert, StockChangeKind, StockChangeLine, StockEvent, StockLevel,
    StockState, StoreId, StreamKey, TimeToLive, Timestamp, TransferEvent,
};
use proptest::prelude::*;

// Its own copy of the harness: each file adds `then_…` checks of its own, by the same names.
#[allow(clippy::duplicate_mod)]
#[path = "support/given.rs"]
mod given;

use given::{START, Then, apply_all, given, stream};

const MINUTE: u64 = 60_000;

fn quantity(value: u64) -> Quantity {
    Quantity::new(value).unwrap()
}

fn add(product: &str, units: u64) -> Command {
    Command::AddStock(AddStock {
        stream: stream(product),
        quantity: quantity(units),
        reason: Reason::default(),
    })
}

fn adjust(product: &str, on_hand: u64) -> Command {
    Command::AdjustStock(AdjustStock {
        stream: stream(product),
        on_hand,
        reason: Reason::default(),
    })
}

fn remove(product: &str, units: u64, from: StockState) -> Command {
    Command::RemoveStock(RemoveStock {
        stream: stream(product),
        quantity: quantity(units),
        from,
        reason: Reason::default(),
    })
}

fn move_stock(product: &str, units: u64, from: StockState, to: StockState) -> Command {
    Command::MoveStock(MoveStock {
        stream: stream(product),
        quantity: quantity(units),
        states: StateMove::new(from, to).unwrap(),
        reason: Reason::parse("inspection").unwrap(),
    })
}

fn policy(product: &str, safety_stock: Option<u64>, low_stock_threshold: Option<u64>) -> Command {
    Command::SetItemPolicy(SetItemPolicy {
        stream: stream(product),
        safety_stock,
        low_stock_threshold,
    })
}

fn reserve(product: &str, id: &str, units: u64) -> Command {
    Command::ReserveStock(ReserveStock {
        reservation_id: ReservationId::parse(id).unwrap(),
        lines: vec![ReservationLine {
            stream: stream(product),
            quantity: quantity(units),
            expected_version: None,
        }],
        customer_id: CustomerId::parse("customer-1").unwrap(),
        ttl: TimeToLive::from_millis(30 * MINUTE).unwrap(),
    })
}

fn commit(id: &str) -> Command {
    Command::CommitReservation(CommitReservation {
        reservation_id: ReservationId::parse(id).unwrap(),
        store_id: None,
        order_id: OrderId::parse("order-1").unwrap(),
        lines: None,
    })
}

fn release(id: &str) -> Command {
    Command::ReleaseReservation(ReleaseReservation {
        reservation_id: ReservationId::parse(id).unwrap(),
        store_id: None,
        reason: Reason::default(),
    })
}

fn expire(id: &str) -> Command {
    Command::ExpireReservation(ExpireReservation {
        reservation_id: ReservationId::parse(id).unwrap(),
        store_id: None,
    })
}

/// A count of `product`: `counted` units, the log saying `at_count` then (`None`: a count of
/// now).
fn count(product: &str, counted: u64, at_count: Option<u64>) -> Command {
    Command::RecordCount(RecordCount {
        lines: vec![CountLine {
            stream: stream(product),
            counted,
            on_hand_at_count: at_count,
        }],
        counted_at: at_count.map(|_| Timestamp(START.0 - MINUTE)),
        reason: Reason::parse("cycle count").unwrap(),
    })
}

fn alert(kind: StockAlert) -> StockEvent {
    StockEvent::Alert(kind)
}

fn refused(product: &str, rule: LineRule) -> DomainError {
    DomainError::LinesRefused {
        violations: vec![LineViolation::new(0, &stream(product), rule)],
    }
}

impl Then {
    /// The command became these events (all on the one item), in this order.
    fn then_events(self, expected: &[StockEvent]) -> Then {
        assert_eq!(self.events(), Some(expected.iter().collect()));
        self
    }

    /// The command's alerts, whatever its own event.
    fn then_alerts(self, expected: &[StockAlert]) -> Then {
        let alerts: Vec<StockAlert> = self
            .result
            .as_ref()
            .expect("the command was accepted")
            .iter()
            .filter_map(|(_, event)| match event {
                StockEvent::Alert(alert) => Some(*alert),
                _ => None,
            })
            .collect();
        assert_eq!(alerts, expected);
        self
    }

    fn level(&self, product: &str) -> StockLevel {
        self.inventory.item(&stream(product)).unwrap().level()
    }

    /// (on_hand, reserved, damaged, quality_control, available).
    fn then_stock(self, product: &str, expected: (u64, u64, u64, u64, u64)) -> Then {
        let level = self.level(product);
        assert_eq!(
            (
                level.on_hand(),
                level.reserved(),
                level.damaged(),
                level.quality_control(),
                level.available()
            ),
            expected,
            "on_hand, reserved, damaged, quality_control, available"
        );
        self
    }
}

#[test]
fn it_moves_units_found_damaged_out_of_available_keeping_on_hand() {
    given(&[add("apple", 10)])
        .when(move_stock(
            "apple",
            3,
            StockState::Available,
            StockState::Damaged,
        ))
        .then_events(&[StockEvent::Quantity(QuantityEvent::StockMoved {
            quantity: quantity(3),
            from: StockState::Available,
            to: StockState::Damaged,
            reason: Reason::parse("inspection").unwrap(),
        })])
        .then_stock("apple", (10, 0, 3, 0, 7));
}

#[test]
fn it_releases_inspected_units_back_to_available() {
    given(&[
        add("apple", 10),
        move_stock(
            "apple",
            4,
            StockState::Available,
            StockState::QualityControl,
        ),
    ])
    .when(move_stock(
        "apple",
        4,
        StockState::QualityControl,
        StockState::Available,
    ))
    .then_stock("apple", (10, 0, 0, 0, 10));
}

#[test]
fn it_never_moves_more_than_the_source_state_holds() {
    given(&[
        add("apple", 10),
        move_stock("apple", 2, StockState::Available, StockState::Damaged),
    ])
    .when(move_stock(
        "apple",
        3,
        StockState::Damaged,
        StockState::QualityControl,
    ))
    .then_error(refused(
        "apple",
        LineRule::StateHoldsLess {
            state: StockState::Damaged,
            requested: 3,
            held: 2,
        },
    ));
}

#[test]
fn it_never_moves_reserved_units_out_of_available() {
    given(&[add("apple", 10), reserve("apple", "r1", 8)])
        .when(move_stock(
            "apple",
            3,
            StockState::Available,
            StockState::Damaged,
        ))
        .then_error(refused(
            "apple",
            LineRule::StateHoldsLess {
                state: StockState::Available,
                requested: 3,
                held: 2,
            },
        ));
}

#[test]
fn it_refuses_a_move_between_one_state_and_itself() {
    assert!(StateMove::new(StockState::Damaged, StockState::Damaged).is_err());
}

#[test]
fn it_writes_off_damaged_goods_from_the_damaged_state() {
    given(&[
        add("apple", 10),
        move_stock("apple", 3, StockState::Available, StockState::Damaged),
    ])
    .when(remove("apple", 3, StockState::Damaged))
    .then_events(&[StockEvent::Quantity(QuantityEvent::StockRemoved {
        quantity: quantity(3),
        from: StockState::Damaged,
        reason: Reason::default(),
    })])
    .then_stock("apple", (7, 0, 0, 0, 7));
}

#[test]
fn it_never_removes_more_damaged_units_than_there_are() {
    given(&[
        add("apple", 10),
        move_stock("apple", 1, StockState::Available, StockState::Damaged),
    ])
    .when(remove("apple", 2, StockState::Damaged))
    .then_error(refused(
        "apple",
        LineRule::StateHoldsLess {
            state: StockState::Damaged,
            requested: 2,
            held: 1,
        },
    ));
}

#[test]
fn it_removes_from_a_state_in_a_list_of_changes() {
    let changes = Command::ApplyStockChanges(ApplyStockChanges {
        changes: vec![StockChangeLine {
            stream: stream("apple"),
            change: StockChangeKind::Remove(quantity(2), StockState::QualityControl),
            expected_version: None,
        }],
        reason: Reason::default(),
    });
    given(&[
        add("apple", 10),
        move_stock(
            "apple",
            2,
            StockState::Available,
            StockState::QualityControl,
        ),
    ])
    .when(changes)
    .then_stock("apple", (8, 0, 0, 0, 8));
}

#[test]
fn it_keeps_the_safety_stock_out_of_reach_of_reservations() {
    given(&[add("apple", 10), policy("apple", Some(4), None)])
        .when(reserve("apple", "r1", 7))
        .then_error(refused(
            "apple",
            LineRule::InsufficientStock {
                requested: 7,
                available: 6,
            },
        ));
    given(&[add("apple", 10), policy("apple", Some(4), None)])
        .when(reserve("apple", "r1", 6))
        .then_alerts(&[StockAlert::OutOfStock])
        .then_stock("apple", (10, 6, 0, 0, 0));
}

#[test]
fn it_lets_shrinkage_take_the_safety_buffer_it_cannot_sell() {
    // The buffer is physical stock: a theft of it is recorded, reservations never had it.
    given(&[add("apple", 10), policy("apple", Some(4), None)])
        .when(remove("apple", 8, StockState::Available))
        .then_stock("apple", (2, 0, 0, 0, 0));
}

#[test]
fn it_counts_damaged_and_inspected_units_in_what_an_adjustment_must_cover() {
    given(&[
        add("apple", 10),
        reserve("apple", "r1", 3),
        move_stock("apple", 2, StockState::Available, StockState::Damaged),
    ])
    .when(adjust("apple", 4))
    .then_error(refused(
        "apple",
        LineRule::OnHandBelowReserved {
            requested_on_hand: 4,
            reserved: 5,
        },
    ));
}

#[test]
fn it_keeps_a_policy_part_that_is_not_given() {
    let then = given(&[add("apple", 10), policy("apple", Some(2), Some(5))])
        .when(policy("apple", None, Some(3)))
        .then_events(&[StockEvent::Quantity(QuantityEvent::ItemPolicyChanged {
            safety_stock: 2,
            low_stock_threshold: 3,
        })]);
    let level = then.level("apple");
    assert_eq!((level.safety_stock(), level.low_stock_threshold()), (2, 3));
}

#[test]
fn it_raises_stock_low_when_available_falls_to_the_threshold() {
    given(&[add("apple", 10), policy("apple", None, Some(5))])
        .when(reserve("apple", "r1", 5))
        .then_alerts(&[StockAlert::StockLow]);
}

#[test]
fn it_raises_stock_low_once_for_one_crossing() {
    given(&[
        add("apple", 10),
        policy("apple", None, Some(5)),
        reserve("apple", "r1", 6),
    ])
    .when(reserve("apple", "r2", 1))
    .then_alerts(&[]);
}

#[test]
fn it_raises_stock_low_again_after_the_item_recovered() {
    given(&[
        add("apple", 10),
        policy("apple", None, Some(5)),
        reserve("apple", "r1", 6),
        release("r1"),
    ])
    .when(reserve("apple", "r2", 6))
    .then_alerts(&[StockAlert::StockLow]);
}

#[test]
fn it_raises_stock_low_and_out_of_stock_when_one_command_crosses_both() {
    given(&[add("apple", 10), policy("apple", None, Some(3))])
        .when(reserve("apple", "r1", 10))
        .then_alerts(&[StockAlert::StockLow, StockAlert::OutOfStock]);
}

#[test]
fn it_raises_stock_low_when_the_threshold_is_raised_to_available() {
    given(&[add("apple", 4)])
        .when(policy("apple", None, Some(4)))
        .then_alerts(&[StockAlert::StockLow]);
}

#[test]
fn it_raises_no_low_stock_alert_on_an_item_without_a_threshold() {
    given(&[add("apple", 10)])
        .when(reserve("apple", "r1", 9))
        .then_alerts(&[]);
}

#[test]
fn it_raises_out_of_stock_when_a_safety_stock_takes_the_last_available_units() {
    given(&[add("apple", 3)])
        .when(policy("apple", Some(3), None))
        .then_alerts(&[StockAlert::OutOfStock]);
}

#[test]
fn it_raises_back_in_stock_when_a_delivery_ends_an_out_of_stock() {
    given(&[add("apple", 2), reserve("apple", "r1", 2), commit("r1")])
        .when(add("apple", 5))
        .then_events(&[
            StockEvent::Quantity(QuantityEvent::StockAdded {
                quantity: quantity(5),
                reason: Reason::default(),
            }),
            alert(StockAlert::BackInStock),
        ]);
}

#[test]
fn it_raises_back_in_stock_when_an_expiry_frees_the_units() {
    given(&[add("apple", 2), reserve("apple", "r1", 2)])
        .when(expire("r1"))
        .then_alerts(&[StockAlert::BackInStock]);
}

#[test]
fn it_raises_no_back_in_stock_for_an_items_first_stock() {
    given(&[]).when(add("apple", 5)).then_alerts(&[]);
}

#[test]
fn it_raises_no_alert_for_a_commit_which_leaves_available_as_it_was() {
    given(&[add("apple", 2), reserve("apple", "r1", 2)])
        .when(commit("r1"))
        .then_alerts(&[]);
}

#[test]
fn it_raises_the_alerts_of_each_item_of_a_multi_line_command_after_its_own_event() {
    let changes = Command::ApplyStockChanges(ApplyStockChanges {
        changes: ["apple", "pear"]
            .into_iter()
            .map(|product| StockChangeLine {
                stream: stream(product),
                change: StockChangeKind::SetOnHand(0),
                expected_version: None,
            })
            .collect(),
        reason: Reason::default(),
    });
    let then = given(&[add("apple", 1), add("pear", 1)]).when(changes);
    let kinds: Vec<_> = then
        .result
        .unwrap()
        .iter()
        .map(|(_, event)| event.kind())
        .collect();
    use inventory::domain::EventKind;
    assert_eq!(
        kinds,
        [
            EventKind::StockAdjusted,
            EventKind::OutOfStock,
            EventKind::StockAdjusted,
            EventKind::OutOfStock
        ]
    );
}

#[test]
fn it_sets_on_hand_to_a_count_of_now_and_records_the_variance() {
    given(&[add("apple", 10)])
        .when(count("apple", 8, None))
        .then_events(&[StockEvent::Quantity(QuantityEvent::StockCounted {
            counted: 8,
            counted_at: START,
            on_hand_at_count: 10,
            previous_on_hand: 10,
            on_hand: 8,
            damaged_not_found: 0,
            quality_control_not_found: 0,
            reason: Reason::parse("cycle count").unwrap(),
        })])
        .then_stock("apple", (8, 0, 0, 0, 8));
}

#[test]
fn it_keeps_the_sales_recorded_after_a_counts_time() {
    // The shelf held 9 at counted_at, when the log said 10; 3 were sold after that: 6 now.
    given(&[add("apple", 10), remove("apple", 3, StockState::Available)])
        .when(count("apple", 9, Some(10)))
        .then_events(&[StockEvent::Quantity(QuantityEvent::StockCounted {
            counted: 9,
            counted_at: Timestamp(START.0 - MINUTE),
            on_hand_at_count: 10,
            previous_on_hand: 7,
            on_hand: 6,
            damaged_not_found: 0,
            quality_control_not_found: 0,
            reason: Reason::parse("cycle count").unwrap(),
        })])
        .then_stock("apple", (6, 0, 0, 0, 6));
}

#[test]
fn it_never_counts_below_nothing_when_later_sales_exceed_what_was_found() {
    given(&[add("apple", 10), remove("apple", 6, StockState::Available)])
        .when(count("apple", 2, Some(10)))
        .then_stock("apple", (0, 0, 0, 0, 0));
}

#[test]
fn it_records_a_count_below_what_is_reserved_as_a_shortfall() {
    let then = given(&[add("apple", 10), reserve("apple", "r1", 5)])
        .when(count("apple", 3, None))
        .then_alerts(&[StockAlert::StockShort, StockAlert::OutOfStock])
        .then_stock("apple", (3, 5, 0, 0, 0));
    assert_eq!(then.level("apple").shortfall(), 2);
}

#[test]
fn it_refuses_new_reservations_while_on_hand_does_not_cover_the_reserved() {
    given(&[
        add("apple", 10),
        reserve("apple", "r1", 5),
        count("apple", 3, None),
    ])
    .when(reserve("apple", "r2", 1))
    .then_error(refused(
        "apple",
        LineRule::InsufficientStock {
            requested: 1,
            available: 0,
        },
    ));
}

#[test]
fn it_refuses_to_commit_units_a_count_did_not_find() {
    let short = given(&[
        add("apple", 10),
        reserve("apple", "r1", 5),
        count("apple", 3, None),
    ])
    .when(commit("r1"));
    assert_eq!(
        short.result,
        Err(DomainError::LinesRefused {
            violations: vec![LineViolation::new(
                0,
                &stream("apple"),
                LineRule::StockShort {
                    requested: 5,
                    on_hand: 3
                }
            )]
        })
    );
}

#[test]
fn it_cuts_damaged_and_inspected_units_to_what_a_count_found() {
    // 2 damaged and 3 in inspection recorded; the count finds 4 units in all.
    let then = given(&[
        add("apple", 10),
        move_stock("apple", 2, StockState::Available, StockState::Damaged),
        move_stock(
            "apple",
            3,
            StockState::Available,
            StockState::QualityControl,
        ),
    ])
    .when(count("apple", 4, None))
    .then_stock("apple", (4, 0, 2, 2, 0));
    assert_eq!(then.level("apple").shortfall(), 0);
}

#[test]
fn it_ends_the_shortfall_when_the_reservation_is_released() {
    let then = given(&[
        add("apple", 10),
        reserve("apple", "r1", 5),
        count("apple", 3, None),
    ])
    .when(release("r1"))
    .then_alerts(&[StockAlert::BackInStock])
    .then_stock("apple", (3, 0, 0, 0, 3));
    assert_eq!(then.level("apple").shortfall(), 0);
}

#[test]
fn it_raises_stock_short_once_for_one_shortfall() {
    given(&[
        add("apple", 10),
        reserve("apple", "r1", 5),
        count("apple", 3, None),
    ])
    .when(count("apple", 2, None))
    .then_alerts(&[]);
}

#[test]
fn it_refuses_a_count_naming_an_item_twice() {
    let twice = Command::RecordCount(RecordCount {
        lines: vec![
            CountLine {
                stream: stream("apple"),
                counted: 1,
                on_hand_at_count: None,
            },
            CountLine {
                stream: stream("apple"),
                counted: 2,
                on_hand_at_count: None,
            },
        ],
        counted_at: None,
        reason: Reason::default(),
    });
    given(&[add("apple", 10)])
        .when(twice)
        .then_error(DomainError::LinesRefused {
            violations: vec![LineViolation::new(
                1,
                &stream("apple"),
                LineRule::DuplicateItem { first_line: 0 },
            )],
        });
}

/// One step of a random workload on two items.
#[derive(Clone, Debug)]
enum Step {
    Add(usize, u64),
    Adjust(usize, u64),
    Remove(usize, u64, StockState),
    Move(usize, u64, StockState, StockState),
    Policy(usize, Option<u64>, Option<u64>),
    Reserve(usize, u64),
    /// Commit, release or expire the reservation at this index (0, 1, 2).
    End(usize, u8),
    /// A count of `counted` units as of this many steps ago (0: now).
    Count(usize, u64, u64),
    /// Ship units of a product from store-1 to store-2.
    Ship(usize, u64),
    /// Receive units (0: none) of the transfer at this index, closing it or not.
    Receive(usize, u64, bool),
    Cancel(usize),
}

fn state() -> impl Strategy<Value = StockState> {
    prop_oneof![
        Just(StockState::Available),
        Just(StockState::Damaged),
        Just(StockState::QualityControl),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let item = 0usize..2;
    prop_oneof![
        3 => (item.clone(), 1u64..8).prop_map(|(item, units)| Step::Add(item, units)),
        1 => (item.clone(), 0u64..12).prop_map(|(item, units)| Step::Adjust(item, units)),
        2 => (item.clone(), 1u64..6, state()).prop_map(|(item, units, from)| Step::Remove(item, units, from)),
        2 => (item.clone(), 1u64..6, state(), state())
            .prop_filter("two states", |(_, _, from, to)| from != to)
            .prop_map(|(item, units, from, to)| Step::Move(item, units, from, to)),
        1 => (item.clone(), proptest::option::of(0u64..6), proptest::option::of(0u64..8))
            .prop_map(|(item, safety, threshold)| Step::Policy(item, safety, threshold)),
        3 => (item, 1u64..6).prop_map(|(item, units)| Step::Reserve(item, units)),
        2 => (0usize..40, 0u8..3).prop_map(|(index, how)| Step::End(index, how)),
        2 => (0usize..2, 0u64..10, 0u64..6).prop_map(|(item, counted, back)| Step::Count(item, counted, back)),
        2 => (0usize..2, 1u64..6).prop_map(|(item, units)| Step::Ship(item, units)),
        2 => (0usize..10, 0u64..5, any::<bool>()).prop_map(|(index, units, close)| Step::Receive(index, units, close)),
        1 => (0usize..10).prop_map(Step::Cancel),
    ]
}

/// The model of one item: plain numbers and the rules as the issue states them.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct ModelItem {
    on_hand: u64,
    reserved: u64,
    damaged: u64,
    quality_control: u64,
    safety_stock: u64,
    threshold: u64,
    incoming: u64,
    events: u64,
}

impl ModelItem {
    fn held(&self) -> u64 {
        self.reserved + self.damaged + self.quality_control
    }

    fn good_unreserved(&self) -> u64 {
        self.on_hand.saturating_sub(self.held())
    }

    fn shortfall(&self) -> u64 {
        self.held().saturating_sub(self.on_hand)
    }

    fn available(&self) -> u64 {
        self.good_unreserved().saturating_sub(self.safety_stock)
    }

    fn in_state(&self, state: StockState) -> u64 {
        match state {
            StockState::Available => self.good_unreserved(),
            StockState::Damaged => self.damaged,
            StockState::QualityControl => self.quality_control,
        }
    }

    fn state_mut(&mut self, state: StockState) -> Option<&mut u64> {
        match state {
            StockState::Available => None,
            StockState::Damaged => Some(&mut self.damaged),
            StockState::QualityControl => Some(&mut self.quality_control),
        }
    }

    fn low(&self) -> bool {
        self.threshold > 0 && self.available() <= self.threshold
    }

    /// The alerts of going from `self` to `after`, by the words.
    fn alerts(&self, after: &ModelItem) -> Vec<StockAlert> {
        let mut alerts = Vec::new();
        if self.shortfall() == 0 && after.shortfall() > 0 {
            alerts.push(StockAlert::StockShort);
        }
        if !self.low() && after.low() {
            alerts.push(StockAlert::StockLow);
        }
        if self.available() > 0 && after.available() == 0 {
            alerts.push(StockAlert::OutOfStock);
        }
        if self.events > 0 && self.available() == 0 && after.available() > 0 {
            alerts.push(StockAlert::BackInStock);
        }
        alerts
    }
}

const ITEMS: [&str; 2] = ["apple", "pear"];

/// The model's items: the two products in store-1 (0, 1), then in store-2 (2, 3).
fn model_stream(index: usize) -> StreamKey {
    let store = if index < 2 { "store-1" } else { "store-2" };
    StreamKey::new(
        ProductId::parse(ITEMS[index % 2]).unwrap(),
        StoreId::parse(store).unwrap(),
    )
}

/// A transfer in the model: its product (0, 1), shipped, received, lost, and status.
#[derive(Clone, Copy, Debug)]
struct ModelTransfer {
    item: usize,
    shipped: u64,
    received: u64,
    lost: u64,
    status: inventory::domain::TransferStatus,
}

proptest! {
    /// Random commands of every kind on two products in two stores, one a second (counts
    /// dated up to five steps back, transfers from one store to the other shipped, received in
    /// parts, closed and cancelled among them), against a model: each is accepted exactly when the model's rules
    /// allow it, the fold equals the model after every step, reserved + damaged +
    /// quality_control <= on_hand holds except that a count may leave a shortfall (and only a
    /// count may grow one), and the alerts are exactly the model's crossings.
    #[test]
    fn the_stock_model_folds_into_the_model_with_alerts_exactly_at_the_crossings(
        steps in proptest::collection::vec(step(), 1..80)
    ) {
        use inventory::domain::{TransferId, TransferLine, TransferStatus};
        let mut inventory = Inventory::new();
        let mut model = [ModelItem::default(); 4];
        // Each item's on-hand after each step that changed it: (time, on_hand).
        let mut history: [Vec<(Timestamp, u64)>; 4] = Default::default();
        let mut transfers: Vec<ModelTransfer> = Vec::new();
        let transfer_lines = |item: usize, units: u64| -> Vec<TransferLine> {
            Quantity::new(units)
                .map(|quantity| TransferLine {
                    product_id: ProductId::parse(ITEMS[item]).unwrap(),
                    quantity,
                })
                .into_iter()
                .collect()
        };
        let mut now = START;
        // Each reservation made: its item, units, and whether it still holds them.
        let mut reservations: Vec<(usize, u64, bool)> = Vec::new();
        for step in steps {
            now = Timestamp(now.0 + 1_000);
            // The command, and (when the model accepts it) each item it touches with its state
            // after; the transfer the model changes, if any.
            let mut transfer_after: Option<(usize, ModelTransfer)> = None;
            let (command, touched): (Command, Option<Vec<(usize, ModelItem)>>) = match step {
                Step::Ship(item, units) => {
                    let (mut source, mut destination) = (model[item], model[item + 2]);
                    let fits = units <= source.good_unreserved();
                    source.on_hand -= if fits { units } else { 0 };
                    destination.incoming += units;
                    let command = Command::ShipTransfer(ShipTransfer {
                        transfer_id: TransferId::parse(&format!("t{}", transfers.len())).unwrap(),
                        from_store: StoreId::parse("store-1").unwrap(),
                        to_store: StoreId::parse("store-2").unwrap(),
                        lines: transfer_lines(item, units),
                        reason: Reason::default(),
                    });
                    if fits {
                        transfer_after = Some((transfers.len(), ModelTransfer {
                            item,
                            shipped: units,
                            received: 0,
                            lost: 0,
                            status: TransferStatus::InTransit,
                        }));
                    }
                    (command, fits.then(|| vec![(item, source), (item + 2, destination)]))
                }
                Step::Receive(index, units, close) => {
                    if transfers.is_empty() {
                        continue;
                    }
                    let at = index % transfers.len();
                    let mut transfer = transfers[at];
                    let open = matches!(transfer.status, TransferStatus::InTransit | TransferStatus::PartiallyReceived);
                    let in_transit = transfer.shipped - transfer.received - transfer.lost;
                    let ok = open && units <= in_transit && (units > 0 || close);
                    let mut destination = model[transfer.item + 2];
                    destination.incoming -= if ok { units } else { 0 };
                    destination.on_hand += if ok { units } else { 0 };
                    transfer.received += units;
                    if units > 0 {
                        transfer.status = TransferStatus::PartiallyReceived;
                    }
                    let missing = in_transit.saturating_sub(units);
                    if ok && close {
                        destination.incoming -= missing;
                        transfer.lost += missing;
                    }
                    if ok && (close || missing == 0) {
                        transfer.status = TransferStatus::Received;
                    }
                    if ok {
                        transfer_after = Some((at, transfer));
                    }
                    let command = Command::ReceiveTransfer(ReceiveTransfer {
                        transfer_id: TransferId::parse(&format!("t{at}")).unwrap(),
                        from_store: None,
                        lines: transfer_lines(transfer.item, units),
                        close,
                    });
                    (command, ok.then(|| vec![(transfer.item + 2, destination)]))
                }
                Step::Cancel(index) => {
                    if transfers.is_empty() {
                        continue;
                    }
                    let at = index % transfers.len();
                    let mut transfer = transfers[at];
                    let ok = transfer.status == TransferStatus::InTransit;
                    let (mut source, mut destination) = (model[transfer.item], model[transfer.item + 2]);
                    if ok {
                        source.on_hand += transfer.shipped;
                        destination.incoming -= transfer.shipped;
                        transfer.status = TransferStatus::Cancelled;
                        transfer_after = Some((at, transfer));
                    }
                    let command = Command::CancelTransfer(CancelTransfer {
                        transfer_id: TransferId::parse(&format!("t{at}")).unwrap(),
                        from_store: None,
                        reason: Reason::default(),
                    });
                    (command, ok.then(|| vec![(transfer.item + 2, destination), (transfer.item, source)]))
                }
                single => {
            let (item, command, after) = match single {
                Step::Add(item, units) => {
                    let mut after = model[item];
                    after.on_hand += units;
                    (item, add(ITEMS[item], units), Some(after))
                }
                Step::Adjust(item, on_hand) => {
                    let mut after = model[item];
                    let held = after.held();
                    after.on_hand = on_hand;
                    (item, adjust(ITEMS[item], on_hand), (on_hand >= held).then_some(after))
                }
                Step::Count(item, counted, back) => {
                    let mut after = model[item];
                    let counted_at = (back > 0).then(|| Timestamp(now.0 - back * 1_000));
                    let at_count = match counted_at {
                        None => after.on_hand,
                        Some(time) => history[item]
                            .iter()
                            .rev()
                            .find(|(changed_at, _)| *changed_at <= time)
                            .map_or(0, |(_, on_hand)| *on_hand),
                    };
                    after.on_hand = (counted + after.on_hand).saturating_sub(at_count);
                    // What the count found is all there is: no state holds more.
                    after.damaged = after.damaged.min(after.on_hand);
                    after.quality_control = after.quality_control.min(after.on_hand - after.damaged);
                    let command = Command::RecordCount(RecordCount {
                        lines: vec![CountLine {
                            stream: stream(ITEMS[item]),
                            counted,
                            on_hand_at_count: counted_at.map(|_| at_count),
                        }],
                        counted_at,
                        reason: Reason::default(),
                    });
                    (item, command, Some(after))
                }
                Step::Remove(item, units, from) => {
                    let mut after = model[item];
                    let fits = units <= after.in_state(from);
                    if fits {
                        after.on_hand -= units;
                        if let Some(part) = after.state_mut(from) {
                            *part -= units;
                        }
                    }
                    (item, remove(ITEMS[item], units, from), fits.then_some(after))
                }
                Step::Move(item, units, from, to) => {
                    let mut after = model[item];
                    let fits = units <= after.in_state(from);
                    if fits {
                        if let Some(part) = after.state_mut(from) {
                            *part -= units;
                        }
                        if let Some(part) = after.state_mut(to) {
                            *part += units;
                        }
                    }
                    (item, move_stock(ITEMS[item], units, from, to), fits.then_some(after))
                }
                Step::Policy(item, safety, threshold) => {
                    let mut after = model[item];
                    after.safety_stock = safety.unwrap_or(after.safety_stock);
                    after.threshold = threshold.unwrap_or(after.threshold);
                    (item, policy(ITEMS[item], safety, threshold), Some(after))
                }
                Step::Reserve(item, units) => {
                    let mut after = model[item];
                    let fits = units <= after.available();
                    after.reserved += units;
                    let id = format!("r{}", reservations.len());
                    if fits {
                        reservations.push((item, units, true));
                    }
                    (item, reserve(ITEMS[item], &id, units), fits.then_some(after))
                }
                Step::End(index, how) => {
                    if reservations.is_empty() {
                        continue;
                    }
                    let at = index % reservations.len();
                    let (item, units, active) = reservations[at];
                    let id = format!("r{at}");
                    let mut after = model[item];
                    let good = after.on_hand.saturating_sub(after.damaged + after.quality_control);
                    let mut ok = active;
                    after.reserved -= if active { units } else { 0 };
                    let command = match how {
                        0 => {
                            // The goods must be there.
                            ok &= units <= good;
                            after.on_hand -= if ok { units } else { 0 };
                            commit(&id)
                        }
                        1 => release(&id),
                        _ => expire(&id),
                    };
                    if ok {
                        reservations[at].2 = false;
                    }
                    (item, command, ok.then_some(after))
                }
                Step::Ship(..) | Step::Receive(..) | Step::Cancel(..) => unreachable!("matched above"),
            };
            (command, after.map(|after| vec![(item, after)]))
                }
            };
            let result = inventory.decide(&command, now);
            prop_assert_eq!(result.is_ok(), touched.is_some(), "{:?} gave {:?}", command, result);
            let (Ok(decisions), Some(touched)) = (result, touched) else { continue };
            for (item, mut after) in touched {
                let stream = model_stream(item);
                let alerts: Vec<StockAlert> = decisions
                    .iter()
                    .filter(|decision| decision.stream == stream)
                    .filter_map(|decision| match decision.event {
                        StockEvent::Alert(alert) => Some(alert),
                        _ => None,
                    })
                    .collect();
                prop_assert_eq!(&alerts, &model[item].alerts(&after), "{:?} on {}", command, stream);
                after.events += decisions.iter().filter(|decision| decision.stream == stream).count() as u64;
                let is_count = matches!(command, Command::RecordCount(RecordCount { .. }));
                prop_assert!(is_count || after.shortfall() <= model[item].shortfall(), "only a count grows a shortfall");
                model[item] = after;
                history[item].push((now, after.on_hand));
            }
            apply_all(&mut inventory, &decisions);
            if let Some((at, transfer)) = transfer_after {
                if at == transfers.len() {
                    transfers.push(transfer);
                } else {
                    transfers[at] = transfer;
                }
                let folded = inventory.transfer(&TransferId::parse(&format!("t{at}")).unwrap()).unwrap();
                prop_assert_eq!(folded.status, transfer.status);
                let line = &folded.lines[0];
                prop_assert_eq!((line.shipped, line.received, line.lost), (transfer.shipped, transfer.received, transfer.lost));
            }
            for (index, expected) in model.iter().copied().enumerate() {
                let Some(stock) = inventory.item(&model_stream(index)) else {
                    prop_assert_eq!(expected, ModelItem::default());
                    continue;
                };
                let level = stock.level();
                prop_assert_eq!(
                    (level.on_hand(), level.reserved(), level.damaged(), level.quality_control()),
                    (expected.on_hand, expected.reserved, expected.damaged, expected.quality_control)
                );
                prop_assert_eq!(
                    (level.safety_stock(), level.low_stock_threshold(), level.available()),
                    (expected.safety_stock, expected.threshold, expected.available())
                );
                prop_assert_eq!(level.incoming(), expected.incoming);
                prop_assert_eq!(stock.version().0, expected.events);
                prop_assert_eq!(level.shortfall(), expected.shortfall());
                prop_assert!(level.damaged() + level.quality_control() <= level.on_hand());
                prop_assert_eq!(
                    level.reserved() + level.damaged() + level.quality_control() <= level.on_hand(),
                    expected.shortfall() == 0
                );
            }
        }
    }
}

mod transfers {
    //! Transfers between stores: store-1 ships to store-2.

    use super::*;
    use inventory::domain::{TransferId, TransferLine, TransferStatus};

    fn at(product: &str, store: &str) -> StreamKey {
        StreamKey::new(
            ProductId::parse(product).unwrap(),
            StoreId::parse(store).unwrap(),
        )
    }

    fn id(text: &str) -> TransferId {
        TransferId::parse(text).unwrap()
    }

    fn lines(lines: &[(&str, u64)]) -> Vec<TransferLine> {
        lines
            .iter()
            .map(|(product, units)| TransferLine {
                product_id: ProductId::parse(product).unwrap(),
                quantity: quantity(*units),
            })
            .collect()
    }

    fn ship(transfer: &str, shipped: &[(&str, u64)]) -> Command {
        Command::ShipTransfer(ShipTransfer {
            transfer_id: id(transfer),
            from_store: StoreId::parse("store-1").unwrap(),
            to_store: StoreId::parse("store-2").unwrap(),
            lines: lines(shipped),
            reason: Reason::default(),
        })
    }

    fn receive(transfer: &str, arrived: &[(&str, u64)], close: bool) -> Command {
        Command::ReceiveTransfer(ReceiveTransfer {
            transfer_id: id(transfer),
            from_store: None,
            lines: lines(arrived),
            close,
        })
    }

    fn cancel(transfer: &str) -> Command {
        Command::CancelTransfer(CancelTransfer {
            transfer_id: id(transfer),
            from_store: None,
            reason: Reason::default(),
        })
    }

    /// (on_hand, reserved, incoming, available) of `product` in `store`.
    fn stock(then: &Then, product: &str, store: &str) -> (u64, u64, u64, u64) {
        let level = then
            .inventory
            .item(&at(product, store))
            .map_or(StockLevel::default(), |item| item.level());
        (
            level.on_hand(),
            level.reserved(),
            level.incoming(),
            level.available(),
        )
    }

    fn status(then: &Then, transfer: &str) -> TransferStatus {
        then.inventory.transfer(&id(transfer)).unwrap().status
    }

    #[test]
    fn it_ships_from_the_sources_on_hand_to_the_destinations_incoming() {
        let then = given(&[add("apple", 10)]).when(ship("t1", &[("apple", 4)]));
        assert_eq!(stock(&then, "apple", "store-1"), (6, 0, 0, 6));
        assert_eq!(stock(&then, "apple", "store-2"), (0, 0, 4, 0));
        assert_eq!(status(&then, "t1"), TransferStatus::InTransit);
    }

    #[test]
    fn it_never_ships_what_is_reserved() {
        given(&[add("apple", 10), reserve("apple", "r1", 7)])
            .when(ship("t1", &[("apple", 4)]))
            .then_error(refused(
                "apple",
                LineRule::InsufficientStock {
                    requested: 4,
                    available: 3,
                },
            ));
    }

    #[test]
    fn it_ships_all_lines_or_none() {
        let then = given(&[add("apple", 10), add("pear", 1)])
            .when(ship("t1", &[("apple", 4), ("pear", 2)]));
        assert!(then.result.is_err());
        assert_eq!(stock(&then, "apple", "store-1"), (10, 0, 0, 10));
        assert!(then.inventory.transfer(&id("t1")).is_none());
    }

    #[test]
    fn it_refuses_a_transfer_id_already_used() {
        given(&[add("apple", 10), ship("t1", &[("apple", 1)])])
            .when(ship("t1", &[("apple", 1)]))
            .then_error(DomainError::TransferAlreadyExists {
                transfer_id: id("t1"),
            });
    }

    #[test]
    fn it_receives_in_parts_and_closes_when_everything_arrived() {
        let then = given(&[add("apple", 10), ship("t1", &[("apple", 4)])]).when(receive(
            "t1",
            &[("apple", 1)],
            false,
        ));
        assert_eq!(stock(&then, "apple", "store-2"), (1, 0, 3, 1));
        assert_eq!(status(&then, "t1"), TransferStatus::PartiallyReceived);
        let then = given(&[
            add("apple", 10),
            ship("t1", &[("apple", 4)]),
            receive("t1", &[("apple", 1)], false),
        ])
        .when(receive("t1", &[("apple", 3)], false));
        assert_eq!(stock(&then, "apple", "store-2"), (4, 0, 0, 4));
        assert_eq!(status(&then, "t1"), TransferStatus::Received);
    }

    #[test]
    fn it_records_what_is_missing_at_close_as_lost_in_transit() {
        let then = given(&[
            add("apple", 10),
            add("pear", 5),
            ship("t1", &[("apple", 4), ("pear", 2)]),
        ])
        .when(receive("t1", &[("apple", 3)], true));
        let events: Vec<StockEvent> = then.events().unwrap().into_iter().cloned().collect();
        assert_eq!(
            events,
            [
                StockEvent::Transfer(TransferEvent::TransferReceived {
                    transfer_id: id("t1"),
                    quantity: quantity(3),
                    from_store: Some(StoreId::parse("store-1").unwrap()),
                }),
                StockEvent::Transfer(TransferEvent::TransferLost {
                    transfer_id: id("t1"),
                    quantity: quantity(1),
                    from_store: Some(StoreId::parse("store-1").unwrap()),
                }),
                // After the item's last event of the command: it had an event before (the
                // incoming goods), so its first units for sale are "back".
                alert(StockAlert::BackInStock),
                StockEvent::Transfer(TransferEvent::TransferLost {
                    transfer_id: id("t1"),
                    quantity: quantity(2),
                    from_store: Some(StoreId::parse("store-1").unwrap()),
                }),
            ]
        );
        assert_eq!(stock(&then, "apple", "store-2"), (3, 0, 0, 3));
        assert_eq!(stock(&then, "pear", "store-2"), (0, 0, 0, 0));
        assert_eq!(status(&then, "t1"), TransferStatus::Received);
        let line = then.inventory.transfer(&id("t1")).unwrap().lines[0].clone();
        assert_eq!((line.shipped, line.received, line.lost), (4, 3, 1));
    }

    #[test]
    fn it_never_receives_more_than_is_in_transit() {
        given(&[
            add("apple", 10),
            ship("t1", &[("apple", 4)]),
            receive("t1", &[("apple", 3)], false),
        ])
        .when(receive("t1", &[("apple", 2)], false))
        .then_error(DomainError::LinesRefused {
            violations: vec![LineViolation::new(
                0,
                &at("apple", "store-2"),
                LineRule::ReceiveExceedsInTransit {
                    requested: 2,
                    in_transit: 1,
                },
            )],
        });
    }

    #[test]
    fn it_refuses_a_product_the_transfer_does_not_hold() {
        given(&[add("apple", 10), ship("t1", &[("apple", 4)])])
            .when(receive("t1", &[("pear", 1)], false))
            .then_error(DomainError::LinesRefused {
                violations: vec![LineViolation::new(
                    0,
                    &at("pear", "store-2"),
                    LineRule::NotInTransfer,
                )],
            });
    }

    #[test]
    fn it_refuses_to_receive_into_a_closed_transfer() {
        given(&[
            add("apple", 10),
            ship("t1", &[("apple", 4)]),
            receive("t1", &[], true),
        ])
        .when(receive("t1", &[("apple", 1)], false))
        .then_error(DomainError::TransferNotOpen {
            transfer_id: id("t1"),
            status: TransferStatus::Received,
        });
    }

    #[test]
    fn it_cancels_before_anything_arrived_and_returns_the_goods() {
        let then = given(&[add("apple", 10), ship("t1", &[("apple", 4)])]).when(cancel("t1"));
        assert_eq!(stock(&then, "apple", "store-1"), (10, 0, 0, 10));
        assert_eq!(stock(&then, "apple", "store-2"), (0, 0, 0, 0));
        assert_eq!(status(&then, "t1"), TransferStatus::Cancelled);
    }

    #[test]
    fn it_refuses_to_cancel_once_something_arrived() {
        given(&[
            add("apple", 10),
            ship("t1", &[("apple", 4)]),
            receive("t1", &[("apple", 1)], false),
        ])
        .when(cancel("t1"))
        .then_error(DomainError::TransferNotOpen {
            transfer_id: id("t1"),
            status: TransferStatus::PartiallyReceived,
        });
    }

    #[test]
    fn it_refuses_an_unknown_transfer() {
        given(&[])
            .when(receive("t9", &[("apple", 1)], false))
            .then_error(DomainError::TransferNotFound {
                transfer_id: id("t9"),
            });
    }

    #[test]
    fn it_raises_the_alerts_of_a_transfers_items() {
        // The source runs out; the destination's goods are not available until received.
        let then = given(&[add("apple", 4), add("apple", 1)]).when(ship("t1", &[("apple", 5)]));
        assert_eq!(
            then.events().unwrap().last().copied(),
            Some(&StockEvent::Transfer(TransferEvent::TransferIncoming {
                transfer_id: id("t1"),
                from_store: StoreId::parse("store-1").unwrap(),
                quantity: quantity(5),
            }))
        );
        let alerts: Vec<_> = then
            .events()
            .unwrap()
            .into_iter()
            .filter(|event| matches!(event, StockEvent::Alert(_)))
            .cloned()
            .collect();
        assert_eq!(alerts, [alert(StockAlert::OutOfStock)]);
    }

    #[test]
    fn a_rolled_back_batch_leaves_no_transfer() {
        let mut inventory = Inventory::new();
        let added = inventory.decide(&add("apple", 10), START).unwrap();
        apply_all(&mut inventory, &added);
        inventory.begin_batch();
        let decisions = inventory
            .decide(&ship("t1", &[("apple", 4)]), START)
            .unwrap();
        apply_all(&mut inventory, &decisions);
        assert!(inventory.transfer(&id("t1")).is_some());
        inventory.rollback_batch();
        assert!(inventory.transfer(&id("t1")).is_none());
        assert_eq!(
            inventory
                .item(&at("apple", "store-1"))
                .unwrap()
                .level()
                .on_hand(),
            10
        );
        assert!(
            inventory
                .decide(&ship("t1", &[("apple", 4)]), START)
                .is_ok()
        );
    }
}
