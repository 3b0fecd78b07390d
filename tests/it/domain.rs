//! The domain's rules, in given/when/then form: given these past events, when this command
//! arrives at this time, then this event (or this error).
//!
//! Over 600 lines: one given/when/then table of the domain's rules, command by command, read
//! top to bottom as the rules' specification; `tests/it/stock_model.rs` holds the stock states'.

use inventory::domain::{
    AddStock, AdjustStock, ApplyStockChanges, Command, CommitLine, CommitReservation, CustomerId,
    DomainError, ExpireReservation, ExtendReservation, IdError, Inventory, LineRule, LineViolation,
    OrderId, ProductId, Quantity, QuantityError, QuantityEvent, Reason, ReleaseReservation,
    RemoveStock, ReservationEvent, ReservationId, ReservationLine, ReservationStatus, Reservations,
    ReserveStock, SMALL_RESERVATIONS_MAX, StockAlert, StockChangeKind, StockChangeLine, StockEvent,
    StockState, StoreId, StreamKey, StreamVersion, TimeToLive, Timestamp,
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

fn reservation(id: &str) -> ReservationId {
    ReservationId::parse(id).unwrap()
}

fn add(product: &str, units: u64) -> Command {
    Command::AddStock(AddStock {
        stream: stream(product),
        quantity: quantity(units),
        reason: Reason::parse("delivery").unwrap(),
    })
}

fn adjust(product: &str, on_hand: u64) -> Command {
    Command::AdjustStock(AdjustStock {
        stream: stream(product),
        on_hand,
        reason: Reason::parse("cycle count").unwrap(),
    })
}

fn reserve(product: &str, id: &str, units: u64) -> Command {
    reserve_lines(id, &[(product, units)])
}

/// A reservation of several lines: (product, units) in store-1.
fn reserve_lines(id: &str, lines: &[(&str, u64)]) -> Command {
    Command::ReserveStock(ReserveStock {
        reservation_id: reservation(id),
        lines: lines
            .iter()
            .map(|(product, units)| ReservationLine {
                stream: stream(product),
                quantity: quantity(*units),
                expected_version: None,
            })
            .collect(),
        customer_id: CustomerId::parse("customer-1").unwrap(),
        ttl: TimeToLive::from_millis(30 * MINUTE).unwrap(),
    })
}

fn commit(id: &str) -> Command {
    Command::CommitReservation(CommitReservation {
        reservation_id: reservation(id),
        store_id: None,
        order_id: OrderId::parse("order-1").unwrap(),
        lines: None,
    })
}

/// A partial commit: (product, units shipped) in store-1.
fn commit_lines(id: &str, lines: &[(&str, u64)]) -> Command {
    Command::CommitReservation(CommitReservation {
        reservation_id: reservation(id),
        store_id: None,
        order_id: OrderId::parse("order-1").unwrap(),
        lines: Some(
            lines
                .iter()
                .map(|(product, units)| CommitLine {
                    stream: stream(product),
                    quantity: *units,
                })
                .collect(),
        ),
    })
}

/// The alert event of `kind`.
fn alert(kind: StockAlert) -> StockEvent {
    StockEvent::Alert(kind)
}

/// The refusal of a command whose line `line` (on `product`) breaks `rule`.
fn refused(line: usize, product: &str, rule: LineRule) -> DomainError {
    refused_lines(&[(line, product, rule)])
}

fn refused_lines(lines: &[(usize, &str, LineRule)]) -> DomainError {
    DomainError::LinesRefused {
        violations: lines
            .iter()
            .map(|(line, product, rule)| LineViolation::new(*line, &stream(product), rule.clone()))
            .collect(),
    }
}

fn release(id: &str) -> Command {
    Command::ReleaseReservation(ReleaseReservation {
        reservation_id: reservation(id),
        store_id: None,
        reason: Reason::default(),
    })
}

fn expire(id: &str) -> Command {
    Command::ExpireReservation(ExpireReservation {
        reservation_id: reservation(id),
        store_id: None,
    })
}

impl Then {
    /// The command became this one event.
    fn then_event(self, expected: StockEvent) -> Then {
        assert_eq!(self.events(), Some(vec![&expected]));
        self
    }

    /// The command became these events, on these items (products in store-1), in this order.
    fn then_events(self, expected: &[(&str, StockEvent)]) -> Then {
        let expected: Vec<(StreamKey, StockEvent)> = expected
            .iter()
            .map(|(product, event)| (stream(product), event.clone()))
            .collect();
        assert_eq!(self.result.as_ref().ok(), Some(&expected));
        self
    }

    fn then_status(self, id: &str, status: ReservationStatus) -> Then {
        assert_eq!(
            self.inventory.reservation_status(&reservation(id)),
            Some(status)
        );
        self
    }

    fn then_stock(self, product: &str, on_hand: u64, reserved: u64) -> Then {
        let item = self.inventory.item(&stream(product)).expect("item exists");
        assert_eq!(
            (item.level().on_hand(), item.level().reserved()),
            (on_hand, reserved),
            "on_hand, reserved"
        );
        assert_eq!(item.level().available(), on_hand - reserved);
        self
    }
}

#[test]
fn it_adds_stock_to_a_new_item() {
    given(&[])
        .when(add("apple", 10))
        .then_event(StockEvent::Quantity(QuantityEvent::StockAdded {
            quantity: quantity(10),
            reason: Reason::parse("delivery").unwrap(),
        }))
        .then_stock("apple", 10, 0);
}

#[test]
fn it_accumulates_added_stock_and_counts_versions() {
    let then = given(&[add("apple", 10)])
        .when(add("apple", 5))
        .then_stock("apple", 15, 0);
    assert_eq!(then.inventory.version(&stream("apple")), StreamVersion(2));
}

#[test]
fn it_reserves_available_stock_until_the_ttl_ends() {
    given(&[add("apple", 10)])
        .when(reserve("apple", "r1", 4))
        .then_event(StockEvent::Reservation(ReservationEvent::StockReserved {
            reservation_id: reservation("r1"),
            quantity: quantity(4),
            customer_id: CustomerId::parse("customer-1").unwrap(),
            expires_at: Timestamp(START.0 + 30 * MINUTE),
        }))
        .then_stock("apple", 10, 4);
}

#[test]
fn it_rejects_a_reservation_larger_than_available() {
    given(&[add("apple", 10), reserve("apple", "r1", 7)])
        .when(reserve("apple", "r2", 4))
        .then_error(refused(
            0,
            "apple",
            LineRule::InsufficientStock {
                requested: 4,
                available: 3,
            },
        ))
        .then_stock("apple", 10, 7);
}

#[test]
fn it_rejects_reserving_stock_that_was_never_added() {
    given(&[])
        .when(reserve("unknown", "r1", 1))
        .then_error(refused(
            0,
            "unknown",
            LineRule::InsufficientStock {
                requested: 1,
                available: 0,
            },
        ));
}

#[test]
fn it_reserves_exactly_the_last_unit() {
    given(&[add("apple", 1)])
        .when(reserve("apple", "r1", 1))
        .then_stock("apple", 1, 1);
}

#[test]
fn it_commits_a_reservation_so_the_goods_leave_on_hand() {
    given(&[add("apple", 10), reserve("apple", "r1", 4)])
        .when(commit("r1"))
        .then_event(StockEvent::Reservation(
            ReservationEvent::ReservationCommitted {
                reservation_id: reservation("r1"),
                quantity: 4,
                order_id: OrderId::parse("order-1").unwrap(),
                released_quantity: 0,
            },
        ))
        .then_stock("apple", 6, 0);
}

#[test]
fn it_releases_a_reservation_so_the_quantity_is_available_again() {
    given(&[add("apple", 10), reserve("apple", "r1", 4)])
        .when(release("r1"))
        .then_stock("apple", 10, 0);
}

#[test]
fn it_rejects_committing_an_unknown_reservation() {
    given(&[add("apple", 10)])
        .when(commit("nope"))
        .then_error(DomainError::ReservationNotFound {
            reservation_id: reservation("nope"),
        });
}

#[test]
fn it_rejects_committing_a_reservation_twice() {
    given(&[add("apple", 10), reserve("apple", "r1", 4), commit("r1")])
        .when(commit("r1"))
        .then_error(DomainError::ReservationNotActive {
            reservation_id: reservation("r1"),
            status: ReservationStatus::Committed,
        })
        .then_stock("apple", 6, 0);
}

#[test]
fn it_rejects_releasing_a_committed_reservation() {
    given(&[add("apple", 10), reserve("apple", "r1", 4), commit("r1")])
        .when(release("r1"))
        .then_error(DomainError::ReservationNotActive {
            reservation_id: reservation("r1"),
            status: ReservationStatus::Committed,
        });
}

#[test]
fn it_rejects_committing_a_released_reservation() {
    given(&[add("apple", 10), reserve("apple", "r1", 4), release("r1")])
        .when(commit("r1"))
        .then_error(DomainError::ReservationNotActive {
            reservation_id: reservation("r1"),
            status: ReservationStatus::Released,
        });
}

#[test]
fn it_rejects_committing_an_expired_reservation() {
    given(&[add("apple", 10), reserve("apple", "r1", 4), expire("r1")])
        .when(commit("r1"))
        .then_error(DomainError::ReservationNotActive {
            reservation_id: reservation("r1"),
            status: ReservationStatus::Expired,
        })
        .then_stock("apple", 10, 0);
}

#[test]
fn it_treats_a_reservation_past_its_expiry_as_expired_before_the_event_is_written() {
    given(&[add("apple", 10), reserve("apple", "r1", 4)])
        .when_at(commit("r1"), Timestamp(START.0 + 30 * MINUTE))
        .then_error(DomainError::ReservationNotActive {
            reservation_id: reservation("r1"),
            status: ReservationStatus::Expired,
        });
}

#[test]
fn it_commits_a_reservation_just_before_it_expires() {
    given(&[add("apple", 10), reserve("apple", "r1", 4)])
        .when_at(commit("r1"), Timestamp(START.0 + 30 * MINUTE - 1))
        .then_stock("apple", 6, 0);
}

#[test]
fn it_expires_a_reservation_and_frees_its_quantity() {
    given(&[add("apple", 10), reserve("apple", "r1", 4)])
        .when_at(expire("r1"), Timestamp(START.0 + 30 * MINUTE))
        .then_event(StockEvent::Reservation(
            ReservationEvent::ReservationExpired {
                reservation_id: reservation("r1"),
                quantity: quantity(4),
            },
        ))
        .then_stock("apple", 10, 0);
}

#[test]
fn it_lists_due_reservations_soonest_first_and_only_active_ones() {
    let mut inventory = Inventory::new();
    let mut apply = |command: Command, now: Timestamp| {
        let decisions = inventory.decide(&command, now).unwrap();
        apply_all(&mut inventory, &decisions);
    };
    apply(add("apple", 10), START);
    apply(reserve("apple", "late", 1), START);
    apply(
        reserve("apple", "early", 1),
        Timestamp(START.0 - 10 * MINUTE),
    );
    apply(
        reserve("apple", "committed", 1),
        Timestamp(START.0 - 20 * MINUTE),
    );
    apply(commit("committed"), Timestamp(START.0 - 20 * MINUTE));
    let due = inventory.due_reservations(Timestamp(START.0 + 30 * MINUTE), 10);
    assert_eq!(due, vec![reservation("early"), reservation("late")]);
    let due = inventory.due_reservations(Timestamp(START.0 + 25 * MINUTE), 10);
    assert_eq!(due, vec![reservation("early")]);
    assert_eq!(
        inventory.next_expiry(),
        Some(Timestamp(START.0 + 20 * MINUTE))
    );
}

#[test]
fn it_rejects_a_reused_reservation_id_even_after_the_reservation_ended() {
    given(&[add("apple", 10), reserve("apple", "r1", 1), release("r1")])
        .when(reserve("apple", "r1", 1))
        .then_error(DomainError::ReservationAlreadyExists {
            reservation_id: reservation("r1"),
        });
}

#[test]
fn it_adjusts_on_hand_down_to_the_reserved_quantity() {
    given(&[add("apple", 10), reserve("apple", "r1", 4)])
        .when(adjust("apple", 4))
        .then_events(&[
            (
                "apple",
                StockEvent::Quantity(QuantityEvent::StockAdjusted {
                    previous_on_hand: 10,
                    on_hand: 4,
                    reason: Reason::parse("cycle count").unwrap(),
                }),
            ),
            // Nothing is left to sell.
            ("apple", alert(StockAlert::OutOfStock)),
        ])
        .then_stock("apple", 4, 4);
}

#[test]
fn it_rejects_adjusting_on_hand_below_the_reserved_quantity() {
    given(&[add("apple", 10), reserve("apple", "r1", 4)])
        .when(adjust("apple", 3))
        .then_error(refused(
            0,
            "apple",
            LineRule::OnHandBelowReserved {
                requested_on_hand: 3,
                reserved: 4,
            },
        ));
}

#[test]
fn it_rejects_adding_stock_that_would_overflow_on_hand() {
    given(&[add("apple", i64::MAX as u64 - 1)])
        .when(add("apple", 2))
        .then_error(refused(
            0,
            "apple",
            LineRule::OnHandOverflow {
                on_hand: i64::MAX as u64 - 1,
                quantity: 2,
            },
        ));
}

#[test]
fn it_keeps_stores_apart() {
    let other_store = StreamKey::new(
        ProductId::parse("apple").unwrap(),
        StoreId::parse("store-2").unwrap(),
    );
    let then = given(&[add("apple", 10)]).when(Command::ReserveStock(ReserveStock {
        reservation_id: reservation("r1"),
        lines: vec![ReservationLine {
            stream: other_store,
            quantity: quantity(1),
            expected_version: None,
        }],
        customer_id: CustomerId::parse("c").unwrap(),
        ttl: TimeToLive::DEFAULT,
    }));
    let Err(DomainError::LinesRefused { violations }) = then.result else {
        panic!("accepted: {:?}", then.result);
    };
    assert_eq!(
        violations[0].rule,
        LineRule::InsufficientStock {
            requested: 1,
            available: 0
        }
    );
}

#[test]
fn quantities_must_be_positive_whole_units() {
    assert_eq!(Quantity::from_signed(0), Err(QuantityError::Zero));
    assert_eq!(
        Quantity::from_signed(-3),
        Err(QuantityError::Negative { value: -3 })
    );
    assert_eq!(Quantity::from_signed(5).unwrap().get(), 5);
    assert_eq!(
        Quantity::new(u64::MAX),
        Err(QuantityError::TooLarge { value: u64::MAX })
    );
}

#[test]
fn identifiers_are_1_to_128_safe_characters() {
    assert_eq!(ProductId::parse(""), Err(IdError::Empty));
    assert_eq!(
        ProductId::parse(&"a".repeat(129)),
        Err(IdError::TooLong { length: 129 })
    );
    assert!(ProductId::parse(&"a".repeat(128)).is_ok());
    assert_eq!(
        ProductId::parse("a b"),
        Err(IdError::InvalidCharacter { character: ' ' })
    );
    assert_eq!(
        ProductId::parse("é"),
        Err(IdError::InvalidCharacter { character: 'é' })
    );
    assert!(ProductId::parse("0190b4c2-7c1e-7d3a-9f1b-1c2d3e4f5a6b").is_ok());
    assert!(ProductId::parse("sku:A.b_c-9").is_ok());
}

#[test]
fn reservation_ttls_are_between_1_second_and_24_hours() {
    assert!(TimeToLive::from_millis(999).is_err());
    assert!(TimeToLive::from_millis(1_000).is_ok());
    assert!(TimeToLive::from_millis(24 * 60 * MINUTE).is_ok());
    assert!(TimeToLive::from_millis(24 * 60 * MINUTE + 1).is_err());
    assert_eq!(TimeToLive::DEFAULT.millis(), 30 * MINUTE);
}

#[derive(Clone, Debug)]
enum Step {
    Add(u64),
    Adjust(u64),
    Reserve(u64),
    Commit(usize),
    Release(usize),
    Expire(usize),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u64..50).prop_map(Step::Add),
        (0u64..80).prop_map(Step::Adjust),
        (1u64..30).prop_map(Step::Reserve),
        (0usize..20).prop_map(Step::Commit),
        (0usize..20).prop_map(Step::Release),
        (0usize..20).prop_map(Step::Expire),
        (0u64..40).prop_map(|minutes| Step::Wait(minutes * MINUTE)),
    ]
}

proptest! {
    /// Whatever commands arrive, in whatever order and at whatever time: nothing is ever
    /// negative, reserved is exactly the sum of the active reservations, and an accepted
    /// reservation never takes more than was available.
    #[test]
    fn stock_never_goes_negative_and_reserved_matches_active_reservations(
        steps in proptest::collection::vec(step(), 1..120)
    ) {
        let mut inventory = Inventory::new();
        let mut now = START;
        let mut reservation_ids: Vec<String> = Vec::new();
        let pick = |ids: &Vec<String>, index: usize| -> String {
            ids.get(index % ids.len().max(1)).cloned().unwrap_or_else(|| "none".to_owned())
        };
        for step in steps {
            let command = match step {
                Step::Add(units) => add("apple", units),
                Step::Adjust(on_hand) => adjust("apple", on_hand),
                Step::Reserve(units) => {
                    let id = format!("r{}", reservation_ids.len());
                    reservation_ids.push(id.clone());
                    reserve("apple", &id, units)
                }
                Step::Commit(index) => commit(&pick(&reservation_ids, index)),
                Step::Release(index) => release(&pick(&reservation_ids, index)),
                Step::Expire(index) => expire(&pick(&reservation_ids, index)),
                Step::Wait(millis) => {
                    now = Timestamp(now.0 + millis);
                    continue;
                }
            };
            let before = inventory.item(&stream("apple")).map(|item| item.level()).unwrap_or_default();
            if let Ok(decisions) = inventory.decide(&command, now) {
                for decision in &decisions {
                    if let StockEvent::Reservation(ReservationEvent::StockReserved { quantity, .. }) = &decision.event {
                        prop_assert!(quantity.get() <= before.available());
                    }
                }
                apply_all(&mut inventory, &decisions);
            }
            if let Some(item) = inventory.item(&stream("apple")) {
                let level = item.level();
                prop_assert!(level.reserved() <= level.on_hand());
                let active: u64 = item.reservations().map(|(_, r)| r.quantity.get()).sum();
                prop_assert_eq!(active, level.reserved());
            }
        }
    }
}

type Observed = (
    Vec<Option<inventory::domain::StockItem>>,
    Vec<Option<ReservationStatus>>,
    Vec<ReservationId>,
);

/// Everything observable about the inventory, for comparing before and after a rollback.
fn observe(inventory: &Inventory, ids: &[String]) -> Observed {
    (
        ["apple", "pear"]
            .iter()
            .map(|product| inventory.item(&stream(product)).cloned())
            .collect(),
        ids.iter()
            .map(|id| inventory.reservation_status(&reservation(id)))
            .collect(),
        inventory.due_reservations(Timestamp(u64::MAX), usize::MAX),
    )
}

proptest! {
    /// A rolled-back batch leaves no trace: items, reservation ids and the expiry schedule are
    /// exactly as before it, whatever the batch did.
    #[test]
    fn a_rolled_back_batch_leaves_no_trace(
        before in proptest::collection::vec(step(), 0..40),
        batch in proptest::collection::vec(step(), 1..40),
    ) {
        let mut inventory = Inventory::new();
        let mut ids: Vec<String> = Vec::new();
        let run = |inventory: &mut Inventory, steps: &[Step], ids: &mut Vec<String>| {
            let mut now = START;
            for (index, step) in steps.iter().enumerate() {
                let product = if index % 3 == 0 { "pear" } else { "apple" };
                let pick = |ids: &Vec<String>, i: usize| ids.get(i % ids.len().max(1)).cloned().unwrap_or_else(|| "none".into());
                let command = match step {
                    Step::Add(units) => add(product, *units),
                    Step::Adjust(on_hand) => adjust(product, *on_hand),
                    Step::Reserve(units) => {
                        let id = format!("r{}", ids.len());
                        ids.push(id.clone());
                        reserve(product, &id, *units)
                    }
                    Step::Commit(i) => commit(&pick(ids, *i)),
                    Step::Release(i) => release(&pick(ids, *i)),
                    Step::Expire(i) => expire(&pick(ids, *i)),
                    Step::Wait(millis) => { now = Timestamp(now.0 + millis); continue; }
                };
                if let Ok(decisions) = inventory.decide(&command, now) {
                    apply_all(inventory, &decisions);
                }
            }
        };
        // The same history twice; only one of the two then runs the batch and rolls it back.
        let mut untouched = Inventory::new();
        run(&mut inventory, &before, &mut ids);
        run(&mut untouched, &before, &mut Vec::new());
        inventory.begin_batch();
        run(&mut inventory, &batch, &mut ids);
        inventory.rollback_batch();
        prop_assert_eq!(observe(&inventory, &ids), observe(&untouched, &ids));
    }
}

// Reservation ids: a UUID in canonical text form is held as 16 bytes, any other id as text;
// both behave as the text they came from.

#[test]
fn a_canonical_uuid_reservation_id_keeps_its_text() {
    let text = "01938a6e-7b2c-7def-8a9b-0123456789ab";
    let id = reservation(text);
    assert_eq!(id.to_string(), text);
    assert_eq!(&*id.as_str(), text);
    assert_eq!(
        id,
        ReservationId::from_uuid(0x01938a6e_7b2c_7def_8a9b_0123456789ab)
    );
    assert_eq!(format!("{id:?}"), format!("ReservationId({text:?})"));
}

#[test]
fn reservation_ids_that_are_not_canonical_uuids_stay_text() {
    for text in [
        "01938A6E-7B2C-7DEF-8A9B-0123456789AB",
        "01938a6e7b2c7def8a9b0123456789ab",
        "01938a6e-7b2c-7def-8a9b-0123456789a",
        "01938a6e-7b2c-7def-8a9b-0123456789abc",
        "01938a6e-7b2c-7def-8a9b_0123456789ab",
        "g1938a6e-7b2c-7def-8a9b-0123456789ab",
        "order-7",
    ] {
        let id = reservation(text);
        assert_eq!(id.to_string(), text);
        assert_eq!(&*id.as_str(), text);
    }
    assert_ne!(
        reservation("01938A6E-7B2C-7DEF-8A9B-0123456789AB"),
        reservation("01938a6e-7b2c-7def-8a9b-0123456789ab"),
        "ids are case-sensitive text"
    );
    assert!(matches!(
        ReservationId::parse("01938a6e-7b2c-7def-8a9b-0123456789a!"),
        Err(IdError::InvalidCharacter { character: '!' })
    ));
    assert_eq!(ReservationId::parse(""), Err(IdError::Empty));
}

fn uuid_text(value: u128) -> String {
    let hex = format!("{value:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn reservation_id_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u128>().prop_map(uuid_text),
        "[0-9a-f-]{1,40}",
        "[A-Za-z0-9._:-]{1,40}",
    ]
}

proptest! {
    #[test]
    fn reservation_ids_compare_and_hash_as_their_text(
        a in reservation_id_text(),
        b in reservation_id_text(),
    ) {
        use std::hash::BuildHasher;
        let (id_a, id_b) = (reservation(&a), reservation(&b));
        prop_assert_eq!(id_a.to_string(), a.clone());
        prop_assert_eq!(id_a.cmp(&id_b), a.cmp(&b));
        prop_assert_eq!(id_a == id_b, a == b);
        prop_assert_eq!(reservation(&a), id_a.clone());
        let hasher = std::collections::hash_map::RandomState::new();
        prop_assert_eq!(hasher.hash_one(&id_a), hasher.hash_one(reservation(&a)));
    }
}

// An item's active reservations: a boxed slice of the exact size while few, a hash map past
// SMALL_RESERVATIONS_MAX, back to a slice below half of that.

fn active(units: u64) -> inventory::domain::ActiveReservation {
    inventory::domain::ActiveReservation {
        quantity: quantity(units),
        customer_id: CustomerId::parse("customer-1").unwrap(),
        expires_at: START,
    }
}

#[test]
fn an_item_without_reservations_holds_no_allocation() {
    let mut reservations = Reservations::default();
    reservations.insert(reservation("r-1"), active(1));
    assert!(matches!(&reservations, Reservations::Small(v) if v.len() == 1));
    reservations.insert(reservation("r-2"), active(2));
    assert!(matches!(&reservations, Reservations::Small(v) if v.len() == 2));
    assert_eq!(reservations.remove(&reservation("r-1")), Some(active(1)));
    assert_eq!(reservations.remove(&reservation("r-1")), None);
    assert_eq!(reservations.remove(&reservation("r-2")), Some(active(2)));
    assert!(matches!(&reservations, Reservations::Small(v) if v.is_empty()));
}

#[test]
fn reservations_move_to_a_map_when_many_and_back_when_few() {
    let mut reservations = Reservations::default();
    for n in 0..SMALL_RESERVATIONS_MAX {
        reservations.insert(reservation(&format!("r-{n}")), active(n as u64 + 1));
    }
    assert!(matches!(reservations, Reservations::Small(_)));
    reservations.insert(reservation("r-last"), active(1));
    assert!(matches!(reservations, Reservations::Large(_)));
    assert_eq!(reservations.len(), SMALL_RESERVATIONS_MAX + 1);
    for n in 0..SMALL_RESERVATIONS_MAX {
        assert_eq!(
            reservations.get(&reservation(&format!("r-{n}"))),
            Some(&active(n as u64 + 1))
        );
    }
    let mut n = 0;
    while matches!(reservations, Reservations::Large(_)) {
        assert!(
            reservations
                .remove(&reservation(&format!("r-{n}")))
                .is_some()
        );
        n += 1;
    }
    assert_eq!(reservations.len(), SMALL_RESERVATIONS_MAX / 2 - 1);
    assert_eq!(reservations.get(&reservation("r-last")), Some(&active(1)));
    assert_eq!(reservations.iter().count(), reservations.len());
}

proptest! {
    /// Whatever the sequence of inserts and removes, the reservations hold what a plain map
    /// holds, and compare equal to another built in another order.
    #[test]
    fn reservations_behave_as_a_map(
        steps in proptest::collection::vec((any::<bool>(), 0u8..48, 1u64..5), 0..300),
    ) {
        let mut reservations = Reservations::default();
        let mut model = std::collections::HashMap::new();
        for (insert, key, units) in steps {
            let id = reservation(&format!("r-{key}"));
            if insert {
                reservations.insert(id.clone(), active(units));
                model.insert(id, active(units));
            } else {
                prop_assert_eq!(reservations.remove(&id), model.remove(&id));
            }
            prop_assert_eq!(reservations.len(), model.len());
            if let Reservations::Small(entries) = &reservations {
                prop_assert!(entries.len() <= SMALL_RESERVATIONS_MAX);
            }
        }
        for (id, active) in &model {
            prop_assert_eq!(reservations.get(id), Some(active));
        }
        prop_assert_eq!(reservations.iter().count(), model.len());
        let mut rebuilt = Reservations::default();
        let mut ids: Vec<_> = model.keys().cloned().collect();
        ids.sort();
        ids.reverse();
        for id in ids {
            rebuilt.insert(id.clone(), model[&id].clone());
        }
        prop_assert_eq!(&rebuilt, &reservations);
    }
}

/// A reservation remembers the item it was made on (by the item's place among the items):
/// after batches that created items were rolled back and other items were created in their
/// place, every reservation still commits on its own item.
#[test]
fn reservations_keep_their_items_across_rolled_back_batches() {
    let now = START;
    let apply = |inventory: &mut Inventory, command: Command| {
        let decisions = inventory.decide(&command, now).unwrap();
        apply_all(inventory, &decisions);
    };
    let mut inventory = Inventory::new();
    for product in ["a", "b"] {
        apply(&mut inventory, add(product, 10));
        apply(&mut inventory, reserve(product, &format!("r-{product}"), 1));
    }
    inventory.begin_batch();
    for product in ["c", "d", "e"] {
        apply(&mut inventory, add(product, 10));
        apply(&mut inventory, reserve(product, &format!("r-{product}"), 1));
    }
    apply(&mut inventory, reserve("a", "r-a2", 1));
    inventory.rollback_batch();
    assert_eq!(inventory.item_count(), 2);
    for product in ["e", "f", "c"] {
        apply(&mut inventory, add(product, 10));
        apply(&mut inventory, reserve(product, &format!("r-{product}"), 1));
    }
    assert_eq!(inventory.reservation_status(&reservation("r-d")), None);
    assert_eq!(inventory.reservation_status(&reservation("r-a2")), None);
    for product in ["a", "b", "e", "f", "c"] {
        let decisions = inventory
            .decide(&commit(&format!("r-{product}")), now)
            .unwrap();
        assert_eq!(decisions[0].stream, stream(product), "r-{product}");
    }
}

// ---- multi-line commands: carts, partial commits, batch stock changes ----

fn change(product: &str, change: StockChangeKind) -> StockChangeLine {
    StockChangeLine {
        stream: stream(product),
        change,
        expected_version: None,
    }
}

fn apply_changes(changes: Vec<StockChangeLine>) -> Command {
    Command::ApplyStockChanges(ApplyStockChanges {
        changes,
        reason: Reason::parse("delivery note 17").unwrap(),
    })
}

fn reserved(id: &str, units: u64) -> StockEvent {
    StockEvent::Reservation(ReservationEvent::StockReserved {
        reservation_id: reservation(id),
        quantity: quantity(units),
        customer_id: CustomerId::parse("customer-1").unwrap(),
        expires_at: Timestamp(START.0 + 30 * MINUTE),
    })
}

fn committed(id: &str, shipped: u64, released: u64) -> StockEvent {
    StockEvent::Reservation(ReservationEvent::ReservationCommitted {
        reservation_id: reservation(id),
        quantity: shipped,
        order_id: OrderId::parse("order-1").unwrap(),
        released_quantity: released,
    })
}

#[test]
fn it_reserves_every_line_of_a_cart_under_one_reservation() {
    given(&[add("apple", 10), add("pear", 5)])
        .when(reserve_lines("cart", &[("apple", 2), ("pear", 1)]))
        .then_events(&[
            ("apple", reserved("cart", 2)),
            ("pear", reserved("cart", 1)),
        ])
        .then_stock("apple", 10, 2)
        .then_stock("pear", 5, 1)
        .then_status("cart", ReservationStatus::Active);
}

#[test]
fn it_reserves_nothing_when_one_line_of_a_cart_is_short_and_names_every_short_line() {
    given(&[add("apple", 10), add("pear", 1), add("plum", 2)])
        .when(reserve_lines(
            "cart",
            &[("apple", 2), ("pear", 3), ("fig", 1), ("plum", 2)],
        ))
        .then_error(refused_lines(&[
            (
                1,
                "pear",
                LineRule::InsufficientStock {
                    requested: 3,
                    available: 1,
                },
            ),
            (
                2,
                "fig",
                LineRule::InsufficientStock {
                    requested: 1,
                    available: 0,
                },
            ),
        ]))
        .then_stock("apple", 10, 0)
        .then_stock("pear", 1, 0)
        .then_stock("plum", 2, 0);
}

#[test]
fn it_sums_lines_naming_the_same_item_instead_of_checking_each_alone() {
    // Two lines of 3 against 5 available: each alone fits, together they do not.
    given(&[add("apple", 5)])
        .when(reserve_lines(
            "cart",
            &[("apple", 3), ("pear", 1), ("apple", 3)],
        ))
        .then_error(refused_lines(&[
            (
                0,
                "apple",
                LineRule::InsufficientStock {
                    requested: 6,
                    available: 5,
                },
            ),
            (
                1,
                "pear",
                LineRule::InsufficientStock {
                    requested: 1,
                    available: 0,
                },
            ),
        ]));
    given(&[add("apple", 6)])
        .when(reserve_lines("cart", &[("apple", 3), ("apple", 3)]))
        .then_events(&[
            ("apple", reserved("cart", 6)),
            ("apple", alert(StockAlert::OutOfStock)),
        ])
        .then_stock("apple", 6, 6);
}

#[test]
fn it_refuses_a_cart_line_whose_item_moved_past_its_expected_version() {
    let mut command = reserve_lines("cart", &[("apple", 1), ("pear", 1)]);
    if let Command::ReserveStock(ReserveStock { lines, .. }) = &mut command {
        lines[1].expected_version = Some(StreamVersion(1));
    }
    given(&[add("apple", 5), add("pear", 5), add("pear", 5)])
        .when(command)
        .then_error(refused(
            1,
            "pear",
            LineRule::WrongExpectedVersion {
                expected: StreamVersion(1),
                current: StreamVersion(2),
            },
        ))
        .then_stock("apple", 5, 0);
}

#[test]
fn it_commits_every_line_of_a_cart() {
    given(&[
        add("apple", 10),
        add("pear", 5),
        reserve_lines("cart", &[("apple", 2), ("pear", 1)]),
    ])
    .when(commit("cart"))
    .then_events(&[
        ("apple", committed("cart", 2, 0)),
        ("pear", committed("cart", 1, 0)),
    ])
    .then_stock("apple", 8, 0)
    .then_stock("pear", 4, 0)
    .then_status("cart", ReservationStatus::Committed);
}

#[test]
fn a_partial_commit_ships_what_it_names_and_releases_the_rest_in_the_same_command() {
    given(&[
        add("apple", 10),
        add("pear", 5),
        add("plum", 5),
        reserve_lines("cart", &[("apple", 4), ("pear", 2), ("plum", 1)]),
    ])
    // 3 of 4 apples ship, both pears, no plum (not named).
    .when(commit_lines("cart", &[("apple", 3), ("pear", 2)]))
    .then_events(&[
        ("apple", committed("cart", 3, 1)),
        ("pear", committed("cart", 2, 0)),
        ("plum", committed("cart", 0, 1)),
    ])
    .then_stock("apple", 7, 0)
    .then_stock("pear", 3, 0)
    .then_stock("plum", 5, 0)
    .then_status("cart", ReservationStatus::PartiallyCommitted);
}

#[test]
fn a_partial_commit_never_ships_more_than_a_line_reserved_nor_an_item_it_does_not_hold() {
    given(&[
        add("apple", 10),
        add("pear", 5),
        reserve_lines("cart", &[("apple", 4), ("pear", 2)]),
    ])
    .when(commit_lines(
        "cart",
        &[("apple", 3), ("fig", 1), ("apple", 2)],
    ))
    .then_error(refused_lines(&[
        (
            0,
            "apple",
            LineRule::CommitExceedsReserved {
                requested: 5,
                reserved: 4,
            },
        ),
        (1, "fig", LineRule::NotInReservation),
    ]))
    .then_stock("apple", 10, 4)
    .then_stock("pear", 5, 2)
    .then_status("cart", ReservationStatus::Active);
}

#[test]
fn releasing_a_cart_releases_every_line() {
    given(&[
        add("apple", 10),
        add("pear", 5),
        reserve_lines("cart", &[("apple", 2), ("pear", 1)]),
    ])
    .when(release("cart"))
    .then_stock("apple", 10, 0)
    .then_stock("pear", 5, 0)
    .then_status("cart", ReservationStatus::Released);
}

#[test]
fn a_cart_expires_whole_and_leaves_the_schedule() {
    let then = given(&[
        add("apple", 10),
        add("pear", 5),
        reserve_lines("cart", &[("apple", 2), ("pear", 1)]),
    ])
    .when_at(expire("cart"), Timestamp(START.0 + 30 * MINUTE))
    .then_events(&[
        (
            "apple",
            StockEvent::Reservation(ReservationEvent::ReservationExpired {
                reservation_id: reservation("cart"),
                quantity: quantity(2),
            }),
        ),
        (
            "pear",
            StockEvent::Reservation(ReservationEvent::ReservationExpired {
                reservation_id: reservation("cart"),
                quantity: quantity(1),
            }),
        ),
    ])
    .then_stock("apple", 10, 0)
    .then_stock("pear", 5, 0)
    .then_status("cart", ReservationStatus::Expired);
    assert_eq!(then.inventory.next_expiry(), None);
}

#[test]
fn extending_a_cart_moves_every_line_and_its_place_in_the_schedule() {
    let ttl = TimeToLive::from_millis(60 * MINUTE).unwrap();
    let now = Timestamp(START.0 + 20 * MINUTE);
    let then = given(&[
        add("apple", 10),
        add("pear", 5),
        reserve_lines("cart", &[("apple", 2), ("pear", 1)]),
    ])
    .when_at(
        Command::ExtendReservation(ExtendReservation {
            reservation_id: reservation("cart"),
            store_id: None,
            ttl,
        }),
        now,
    );
    let extended = StockEvent::Reservation(ReservationEvent::ReservationExtended {
        reservation_id: reservation("cart"),
        expires_at: Timestamp(now.0 + 60 * MINUTE),
    });
    let then = then
        .then_events(&[("apple", extended.clone()), ("pear", extended)])
        .then_stock("apple", 10, 2)
        .then_status("cart", ReservationStatus::Active);
    assert_eq!(
        then.inventory.next_expiry(),
        Some(Timestamp(now.0 + 60 * MINUTE))
    );
    // The old expiry no longer ends it.
    assert!(
        then.inventory
            .due_reservations(Timestamp(START.0 + 30 * MINUTE), 10)
            .is_empty()
    );
}

#[test]
fn a_reservation_that_ended_cannot_be_extended() {
    given(&[add("apple", 10), reserve("apple", "r1", 1), commit("r1")])
        .when(Command::ExtendReservation(ExtendReservation {
            reservation_id: reservation("r1"),
            store_id: None,
            ttl: TimeToLive::DEFAULT,
        }))
        .then_error(DomainError::ReservationNotActive {
            reservation_id: reservation("r1"),
            status: ReservationStatus::Committed,
        });
    given(&[add("apple", 10), reserve("apple", "r1", 1)])
        .when_at(
            Command::ExtendReservation(ExtendReservation {
                reservation_id: reservation("r1"),
                store_id: None,
                ttl: TimeToLive::DEFAULT,
            }),
            Timestamp(START.0 + 30 * MINUTE),
        )
        .then_error(DomainError::ReservationNotActive {
            reservation_id: reservation("r1"),
            status: ReservationStatus::Expired,
        });
}

#[test]
fn it_removes_stock_but_never_what_is_reserved() {
    let remove = |units| {
        Command::RemoveStock(RemoveStock {
            stream: stream("apple"),
            quantity: quantity(units),
            from: StockState::Available,
            reason: Reason::parse("damaged in transit").unwrap(),
        })
    };
    given(&[add("apple", 10), reserve("apple", "r1", 4)])
        .when(remove(6))
        .then_events(&[
            (
                "apple",
                StockEvent::Quantity(QuantityEvent::StockRemoved {
                    quantity: quantity(6),
                    from: StockState::Available,
                    reason: Reason::parse("damaged in transit").unwrap(),
                }),
            ),
            ("apple", alert(StockAlert::OutOfStock)),
        ])
        .then_stock("apple", 4, 4);
    given(&[add("apple", 10), reserve("apple", "r1", 4)])
        .when(remove(7))
        .then_error(refused(
            0,
            "apple",
            LineRule::InsufficientStock {
                requested: 7,
                available: 6,
            },
        ))
        .then_stock("apple", 10, 4);
}

#[test]
fn a_batch_of_stock_changes_applies_every_change_in_order() {
    given(&[add("apple", 10), add("pear", 5), reserve("pear", "r1", 2)])
        .when(apply_changes(vec![
            change(
                "apple",
                StockChangeKind::Remove(quantity(3), StockState::Available),
            ),
            change("pear", StockChangeKind::SetOnHand(2)),
            change("fig", StockChangeKind::Add(quantity(7))),
        ]))
        .then_stock("apple", 7, 0)
        .then_stock("pear", 2, 2)
        .then_stock("fig", 7, 0);
}

#[test]
fn a_batch_of_stock_changes_is_refused_whole_naming_every_broken_change() {
    let mut stale = change("plum", StockChangeKind::Add(quantity(1)));
    stale.expected_version = Some(StreamVersion(0));
    given(&[
        add("apple", 10),
        add("pear", 5),
        reserve("pear", "r1", 2),
        add("plum", 1),
    ])
    .when(apply_changes(vec![
        change("apple", StockChangeKind::Add(quantity(1))),
        change("pear", StockChangeKind::SetOnHand(1)),
        change(
            "apple",
            StockChangeKind::Remove(quantity(1), StockState::Available),
        ),
        change(
            "fig",
            StockChangeKind::Remove(quantity(1), StockState::Available),
        ),
        stale,
    ]))
    .then_error(refused_lines(&[
        (
            1,
            "pear",
            LineRule::OnHandBelowReserved {
                requested_on_hand: 1,
                reserved: 2,
            },
        ),
        (2, "apple", LineRule::DuplicateItem { first_line: 0 }),
        (
            3,
            "fig",
            LineRule::InsufficientStock {
                requested: 1,
                available: 0,
            },
        ),
        (
            4,
            "plum",
            LineRule::WrongExpectedVersion {
                expected: StreamVersion(0),
                current: StreamVersion(1),
            },
        ),
    ]))
    .then_stock("apple", 10, 0)
    .then_stock("pear", 5, 2)
    .then_stock("plum", 1, 0);
}

#[test]
fn a_rolled_back_cart_leaves_no_reservation_and_no_schedule_entry() {
    let mut inventory = Inventory::new();
    for product in ["apple", "pear"] {
        let decisions = inventory.decide(&add(product, 5), START).unwrap();
        apply_all(&mut inventory, &decisions);
    }
    inventory.begin_batch();
    let cart = reserve_lines("cart", &[("apple", 2), ("pear", 1), ("fig-free", 1)]);
    assert!(inventory.decide(&cart, START).is_err());
    let cart = reserve_lines("cart", &[("apple", 2), ("pear", 1)]);
    let decisions = inventory.decide(&cart, START).unwrap();
    apply_all(&mut inventory, &decisions);
    inventory.rollback_batch();
    assert_eq!(inventory.reservation_status(&reservation("cart")), None);
    assert_eq!(inventory.next_expiry(), None);
    assert_eq!(
        inventory.item(&stream("apple")).unwrap().level().reserved(),
        0
    );
}

/// One step of a random workload of multi-line commands over a few items.
#[derive(Clone, Debug)]
enum CartStep {
    /// Lines of (item index, units).
    Reserve(Vec<(usize, u64)>),
    /// Commit reservation `index`, all of it or (item index, units) lines.
    Commit(usize, Option<Vec<(usize, u64)>>),
    Release(usize),
    Expire(usize),
    /// (item index, change kind 0 add / 1 remove / 2 set, units).
    Changes(Vec<(usize, u8, u64)>),
    Wait(u64),
}

const CART_ITEMS: [&str; 4] = ["apple", "pear", "plum", "fig"];

fn cart_step() -> impl Strategy<Value = CartStep> {
    let lines = proptest::collection::vec((0usize..4, 1u64..6), 1..6);
    prop_oneof![
        3 => lines.clone().prop_map(CartStep::Reserve),
        2 => (0usize..30, proptest::option::of(proptest::collection::vec((0usize..4, 0u64..5), 1..5)))
            .prop_map(|(index, lines)| CartStep::Commit(index, lines)),
        1 => (0usize..30).prop_map(CartStep::Release),
        1 => (0usize..30).prop_map(CartStep::Expire),
        2 => proptest::collection::vec((0usize..4, 0u8..3, 0u64..12), 1..5).prop_map(CartStep::Changes),
        1 => (0u64..40).prop_map(|minutes| CartStep::Wait(minutes * MINUTE)),
    ]
}

/// The model: each item's (on_hand, reserved), and each reservation's lines and whether it
/// still holds them.
#[derive(Default, Debug)]
struct CartModel {
    stock: [(u64, u64); 4],
    reservations: Vec<ModelReservation>,
}

/// A reservation in the model: its lines (item index, units), whether it is active, and when
/// it expires.
type ModelReservation = (Vec<(usize, u64)>, bool, Timestamp);

proptest! {
    /// Random multi-line commands against a model of the stock: a command is accepted only if
    /// every line of it holds in the model, then the model applies it whole; a refused command
    /// changes nothing. Never an oversell, never a partial reservation, and the fold equals
    /// the model after every step.
    #[test]
    fn multi_line_commands_never_oversell_and_fold_into_the_model(
        steps in proptest::collection::vec(cart_step(), 1..60)
    ) {
        let mut inventory = Inventory::new();
        let mut model = CartModel::default();
        let mut now = START;
        for step in steps {
            let pick = |index: usize, count: usize| if count == 0 { None } else { Some(index % count) };
            let (command, expected_ok) = match &step {
                CartStep::Reserve(lines) => {
                    let mut wanted = [0u64; 4];
                    for (item, units) in lines {
                        wanted[*item] += units;
                    }
                    let fits = (0..4).all(|item| {
                        let (on_hand, reserved) = model.stock[item];
                        wanted[item] <= on_hand - reserved
                    });
                    let id = format!("c{}", model.reservations.len());
                    let lines: Vec<(&str, u64)> = lines.iter().map(|(item, units)| (CART_ITEMS[*item], *units)).collect();
                    (reserve_lines(&id, &lines), fits)
                }
                CartStep::Commit(index, lines) => {
                    let Some(at) = pick(*index, model.reservations.len()) else { continue };
                    let (held, active, expires_at) = &model.reservations[at];
                    let mut ok = *active && *expires_at > now;
                    if let Some(lines) = lines {
                        let mut shipped = [0u64; 4];
                        for (item, units) in lines {
                            shipped[*item] += units;
                            ok &= held.iter().any(|(held_item, _)| held_item == item);
                        }
                        ok &= held.iter().all(|(item, units)| shipped[*item] <= *units);
                    }
                    let id = format!("c{at}");
                    let command = match lines {
                        None => commit(&id),
                        Some(lines) => {
                            let lines: Vec<(&str, u64)> = lines.iter().map(|(item, units)| (CART_ITEMS[*item], *units)).collect();
                            commit_lines(&id, &lines)
                        }
                    };
                    (command, ok)
                }
                CartStep::Release(index) | CartStep::Expire(index) => {
                    let Some(at) = pick(*index, model.reservations.len()) else { continue };
                    let (_, active, expires_at) = &model.reservations[at];
                    let id = format!("c{at}");
                    if matches!(step, CartStep::Release(_)) {
                        (release(&id), *active && *expires_at > now)
                    } else {
                        (expire(&id), *active)
                    }
                }
                CartStep::Changes(changes) => {
                    let mut seen = [false; 4];
                    let mut ok = true;
                    let mut lines = Vec::new();
                    for (item, kind, units) in changes {
                        ok &= !std::mem::replace(&mut seen[*item], true);
                        let (on_hand, reserved) = model.stock[*item];
                        let kind = match kind {
                            0 if *units > 0 => StockChangeKind::Add(quantity(*units)),
                            1 if *units > 0 => {
                                ok &= *units <= on_hand - reserved;
                                StockChangeKind::Remove(quantity(*units), StockState::Available)
                            }
                            _ => {
                                ok &= *units >= reserved;
                                StockChangeKind::SetOnHand(*units)
                            }
                        };
                        lines.push(change(CART_ITEMS[*item], kind));
                    }
                    (apply_changes(lines), ok)
                }
                CartStep::Wait(millis) => {
                    now = Timestamp(now.0 + millis);
                    continue;
                }
            };
            let decided = inventory.decide(&command, now);
            prop_assert_eq!(decided.is_ok(), expected_ok, "{:?} -> {:?}", command, decided);
            let Ok(decisions) = decided else { continue };
            apply_all(&mut inventory, &decisions);
            // The model applies the command whole.
            match step {
                CartStep::Reserve(lines) => {
                    for (item, units) in &lines {
                        model.stock[*item].1 += units;
                    }
                    let mut merged: Vec<(usize, u64)> = Vec::new();
                    for (item, units) in lines {
                        match merged.iter_mut().find(|(held, _)| *held == item) {
                            Some(line) => line.1 += units,
                            None => merged.push((item, units)),
                        }
                    }
                    model.reservations.push((merged, true, Timestamp(now.0 + 30 * MINUTE)));
                }
                CartStep::Commit(index, lines) => {
                    let at = index % model.reservations.len();
                    let held = model.reservations[at].0.clone();
                    for (item, units) in held {
                        let shipped = match &lines {
                            None => units,
                            Some(lines) => lines.iter().filter(|(i, _)| *i == item).map(|(_, u)| u).sum(),
                        };
                        model.stock[item].0 -= shipped;
                        model.stock[item].1 -= units;
                    }
                    model.reservations[at].1 = false;
                }
                CartStep::Release(index) | CartStep::Expire(index) => {
                    let at = index % model.reservations.len();
                    for (item, units) in model.reservations[at].0.clone() {
                        model.stock[item].1 -= units;
                    }
                    model.reservations[at].1 = false;
                }
                CartStep::Changes(changes) => {
                    for (item, kind, units) in changes {
                        let stock = &mut model.stock[item];
                        match kind {
                            0 if units > 0 => stock.0 += units,
                            1 if units > 0 => stock.0 -= units,
                            _ => stock.0 = units,
                        }
                    }
                }
                CartStep::Wait(_) => {}
            }
            for (item, product) in CART_ITEMS.iter().enumerate() {
                let level = inventory.item(&stream(product)).map(|item| item.level()).unwrap_or_default();
                prop_assert_eq!((level.on_hand(), level.reserved()), model.stock[item], "{}", product);
                prop_assert!(level.reserved() <= level.on_hand(), "oversold {}", product);
            }
            // Never a partial reservation: an active reservation holds every line it was made with.
            for (at, (lines, active, _)) in model.reservations.iter().enumerate() {
                for (item, units) in lines {
                    let held = inventory
                        .item(&stream(CART_ITEMS[*item]))
                        .and_then(|stock| stock.reservation(&reservation(&format!("c{at}"))).map(|r| r.quantity.get()));
                    prop_assert_eq!(held, active.then_some(*units));
                }
            }
        }
    }
}

/// The command a cart step becomes (the ids it names are those made so far), without a model.
fn cart_command(step: &CartStep, made: &mut usize) -> Option<Command> {
    let id = |index: usize, made: usize| (made > 0).then(|| format!("c{}", index % made));
    let items = |lines: &[(usize, u64)]| -> Vec<(&'static str, u64)> {
        lines
            .iter()
            .map(|(item, units)| (CART_ITEMS[*item], *units))
            .collect()
    };
    Some(match step {
        CartStep::Reserve(lines) => {
            *made += 1;
            reserve_lines(&format!("c{}", *made - 1), &items(lines))
        }
        CartStep::Commit(index, None) => commit(&id(*index, *made)?),
        CartStep::Commit(index, Some(lines)) => commit_lines(&id(*index, *made)?, &items(lines)),
        CartStep::Release(index) => release(&id(*index, *made)?),
        CartStep::Expire(index) => expire(&id(*index, *made)?),
        CartStep::Changes(changes) => apply_changes(
            changes
                .iter()
                .map(|(item, _, units)| {
                    change(CART_ITEMS[*item], StockChangeKind::Add(quantity(units + 1)))
                })
                .collect(),
        ),
        CartStep::Wait(_) => return None,
    })
}

proptest! {
    /// A rolled-back batch of multi-line commands leaves no trace either: items, every
    /// reservation's status and items, and the expiry schedule are as before it.
    #[test]
    fn a_rolled_back_batch_of_carts_leaves_no_trace(
        before in proptest::collection::vec(cart_step(), 0..30),
        batch in proptest::collection::vec(cart_step(), 1..30),
    ) {
        let run = |inventory: &mut Inventory, steps: &[CartStep], made: &mut usize| {
            for step in steps {
                if let Some(command) = cart_command(step, made)
                    && let Ok(decisions) = inventory.decide(&command, START)
                {
                    apply_all(inventory, &decisions);
                }
            }
        };
        let observe = |inventory: &Inventory, made: usize| {
            let items: Vec<_> = CART_ITEMS
                .iter()
                .map(|product| inventory.item(&stream(product)).cloned())
                .collect();
            let reservations: Vec<_> = (0..made + 30)
                .map(|at| {
                    let id = reservation(&format!("c{at}"));
                    (inventory.reservation_status(&id), inventory.reservation_items(&id, None).into_iter().cloned().collect::<Vec<_>>())
                })
                .collect();
            (items, reservations, inventory.due_reservations(Timestamp(u64::MAX), usize::MAX))
        };
        let mut inventory = Inventory::new();
        let mut untouched = Inventory::new();
        let mut made = 0;
        run(&mut inventory, &before, &mut made);
        run(&mut untouched, &before, &mut 0);
        let before_batch = made;
        inventory.begin_batch();
        run(&mut inventory, &batch, &mut made);
        inventory.rollback_batch();
        prop_assert_eq!(observe(&inventory, before_batch), observe(&untouched, before_batch));
        // And the same batch applied again gives the same state as on a fresh copy.
        let mut made_untouched = before_batch;
        run(&mut untouched, &batch, &mut made_untouched);
        let mut made_again = before_batch;
        run(&mut inventory, &batch, &mut made_again);
        prop_assert_eq!(observe(&inventory, made_again), observe(&untouched, made_again));
    }
}

/// Reservation ids are unique per store: one id may name reservations of stores that share
/// nothing; a command names which by a store it holds, or gets the one it may see.
mod ids_per_store {
    use super::*;

    fn at(product: &str, store: &str) -> StreamKey {
        StreamKey::new(
            ProductId::parse(product).unwrap(),
            StoreId::parse(store).unwrap(),
        )
    }

    fn reserve_in(id: &str, lines: &[(&str, &str, u64)]) -> Command {
        Command::ReserveStock(ReserveStock {
            reservation_id: reservation(id),
            lines: lines
                .iter()
                .map(|(product, store, units)| ReservationLine {
                    stream: at(product, store),
                    quantity: quantity(*units),
                    expected_version: None,
                })
                .collect(),
            customer_id: CustomerId::parse("customer-1").unwrap(),
            ttl: TimeToLive::from_millis(30 * MINUTE).unwrap(),
        })
    }

    fn add_in(product: &str, store: &str, units: u64) -> Command {
        Command::AddStock(AddStock {
            stream: at(product, store),
            quantity: quantity(units),
            reason: Reason::default(),
        })
    }

    fn store(name: &str) -> Option<StoreId> {
        Some(StoreId::parse(name).unwrap())
    }

    fn stocked() -> Vec<Command> {
        ["a", "b", "c"]
            .iter()
            .flat_map(|store| [add_in("p1", store, 10), add_in("p2", store, 10)])
            .collect()
    }

    #[test]
    fn another_store_may_take_an_id_a_store_used() {
        let mut history = stocked();
        history.push(reserve_in("order-7", &[("p1", "a", 2)]));
        let then = given(&history).when(reserve_in("order-7", &[("p1", "b", 3), ("p2", "c", 1)]));
        assert!(then.result.is_ok(), "{:?}", then.result);
    }

    #[test]
    fn an_id_is_refused_in_any_store_a_reservation_with_it_holds() {
        let mut history = stocked();
        history.push(reserve_in("order-7", &[("p1", "a", 2), ("p1", "b", 1)]));
        given(&history)
            .when(reserve_in("order-7", &[("p2", "c", 1), ("p2", "b", 1)]))
            .then_error(DomainError::ReservationAlreadyExists {
                reservation_id: reservation("order-7"),
            });
    }

    #[test]
    fn each_command_reaches_the_reservation_of_the_store_it_names() {
        let mut history = stocked();
        history.push(reserve_in("order-7", &[("p1", "a", 2)]));
        history.push(reserve_in("order-7", &[("p1", "b", 3)]));
        // Without a store, the id names two: the caller must say which.
        given(&history)
            .when(Command::ReleaseReservation(ReleaseReservation {
                reservation_id: reservation("order-7"),
                store_id: None,
                reason: Reason::default(),
            }))
            .then_error(DomainError::ReservationIdAmbiguous {
                reservation_id: reservation("order-7"),
                stores: vec![StoreId::parse("a").unwrap(), StoreId::parse("b").unwrap()],
            });
        let then = given(&history).when(Command::ExpireReservation(ExpireReservation {
            reservation_id: reservation("order-7"),
            store_id: store("b"),
        }));
        let streams: Vec<&StreamKey> = then
            .result
            .as_ref()
            .unwrap()
            .iter()
            .map(|(stream, _)| stream)
            .collect();
        assert_eq!(
            streams,
            [&at("p1", "b")],
            "only store b's reservation expires"
        );
        // Both are on the schedule, each by its own store.
        let mut inventory = given(&history).inventory;
        let due = inventory.due(Timestamp(START.0 + 31 * MINUTE), 10);
        assert_eq!(
            due,
            [
                (reservation("order-7"), StoreId::parse("a").unwrap()),
                (reservation("order-7"), StoreId::parse("b").unwrap())
            ]
        );
        // Store a's commit leaves store b's active.
        let decisions = inventory
            .decide(
                &Command::CommitReservation(CommitReservation {
                    reservation_id: reservation("order-7"),
                    store_id: store("a"),
                    order_id: OrderId::parse("o-a").unwrap(),
                    lines: None,
                }),
                START,
            )
            .unwrap();
        apply_all(&mut inventory, &decisions);
        assert_eq!(
            inventory.reservation_items(&reservation("order-7"), store("b").as_ref()),
            [&at("p1", "b")]
        );
        assert!(
            inventory
                .decide(
                    &Command::ExtendReservation(ExtendReservation {
                        reservation_id: reservation("order-7"),
                        store_id: store("b"),
                        ttl: TimeToLive::from_millis(MINUTE).unwrap(),
                    }),
                    START
                )
                .is_ok()
        );
        assert_eq!(
            inventory.due(Timestamp(START.0 + 31 * MINUTE), 10),
            [(reservation("order-7"), StoreId::parse("b").unwrap())]
        );
    }
}
