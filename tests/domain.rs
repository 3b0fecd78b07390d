//! The domain's rules, in given/when/then form: given these past events, when this command
//! arrives at this time, then this event (or this error).

use inventory::domain::{
    Command, CustomerId, DomainError, IdError, Inventory, OrderId, ProductId, Quantity,
    QuantityError, Reason, ReservationId, ReservationStatus, Reservations, SMALL_RESERVATIONS_MAX,
    StockEvent, StoreId, StreamKey, StreamVersion, TimeToLive, Timestamp,
};
use proptest::prelude::*;

const START: Timestamp = Timestamp(1_700_000_000_000);
const MINUTE: u64 = 60_000;

fn stream(product: &str) -> StreamKey {
    StreamKey::new(
        ProductId::parse(product).unwrap(),
        StoreId::parse("store-1").unwrap(),
    )
}

fn quantity(value: u64) -> Quantity {
    Quantity::new(value).unwrap()
}

fn reservation(id: &str) -> ReservationId {
    ReservationId::parse(id).unwrap()
}

fn add(product: &str, units: u64) -> Command {
    Command::AddStock {
        stream: stream(product),
        quantity: quantity(units),
        reason: Reason::parse("delivery").unwrap(),
    }
}

fn adjust(product: &str, on_hand: u64) -> Command {
    Command::AdjustStock {
        stream: stream(product),
        on_hand,
        reason: Reason::parse("cycle count").unwrap(),
    }
}

fn reserve(product: &str, id: &str, units: u64) -> Command {
    Command::ReserveStock {
        stream: stream(product),
        reservation_id: reservation(id),
        quantity: quantity(units),
        customer_id: CustomerId::parse("customer-1").unwrap(),
        ttl: TimeToLive::from_millis(30 * MINUTE).unwrap(),
    }
}

fn commit(id: &str) -> Command {
    Command::CommitReservation {
        reservation_id: reservation(id),
        order_id: OrderId::parse("order-1").unwrap(),
    }
}

fn release(id: &str) -> Command {
    Command::ReleaseReservation {
        reservation_id: reservation(id),
        reason: Reason::default(),
    }
}

fn expire(id: &str) -> Command {
    Command::ExpireReservation {
        reservation_id: reservation(id),
    }
}

/// The history: commands that were accepted (decided and applied) at `START`.
struct Given {
    inventory: Inventory,
}

fn given(commands: &[Command]) -> Given {
    let mut inventory = Inventory::new();
    for command in commands {
        let decision = inventory
            .decide(command, START)
            .unwrap_or_else(|error| panic!("given {command:?} was refused: {error}"));
        inventory.evolve(&decision.stream, &decision.event);
    }
    Given { inventory }
}

impl Given {
    fn when(self, command: Command) -> Then {
        self.when_at(command, START)
    }

    fn when_at(mut self, command: Command, now: Timestamp) -> Then {
        let result = self.inventory.decide(&command, now).map(|decision| {
            self.inventory.evolve(&decision.stream, &decision.event);
            decision.event
        });
        Then {
            inventory: self.inventory,
            result,
        }
    }
}

struct Then {
    inventory: Inventory,
    result: Result<StockEvent, DomainError>,
}

impl Then {
    fn then_event(self, expected: StockEvent) -> Then {
        assert_eq!(self.result.as_ref().ok(), Some(&expected));
        self
    }

    fn then_error(self, expected: DomainError) -> Then {
        assert_eq!(self.result.as_ref().err(), Some(&expected));
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
        .then_event(StockEvent::StockAdded {
            quantity: quantity(10),
            reason: Reason::parse("delivery").unwrap(),
        })
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
        .then_event(StockEvent::StockReserved {
            reservation_id: reservation("r1"),
            quantity: quantity(4),
            customer_id: CustomerId::parse("customer-1").unwrap(),
            expires_at: Timestamp(START.0 + 30 * MINUTE),
        })
        .then_stock("apple", 10, 4);
}

#[test]
fn it_rejects_a_reservation_larger_than_available() {
    given(&[add("apple", 10), reserve("apple", "r1", 7)])
        .when(reserve("apple", "r2", 4))
        .then_error(DomainError::InsufficientStock {
            requested: 4,
            available: 3,
        })
        .then_stock("apple", 10, 7);
}

#[test]
fn it_rejects_reserving_stock_that_was_never_added() {
    given(&[])
        .when(reserve("unknown", "r1", 1))
        .then_error(DomainError::InsufficientStock {
            requested: 1,
            available: 0,
        });
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
        .then_event(StockEvent::ReservationCommitted {
            reservation_id: reservation("r1"),
            quantity: quantity(4),
            order_id: OrderId::parse("order-1").unwrap(),
        })
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
        .then_event(StockEvent::ReservationExpired {
            reservation_id: reservation("r1"),
            quantity: quantity(4),
        })
        .then_stock("apple", 10, 0);
}

#[test]
fn it_lists_due_reservations_soonest_first_and_only_active_ones() {
    let mut inventory = Inventory::new();
    let mut apply = |command: Command, now: Timestamp| {
        let decision = inventory.decide(&command, now).unwrap();
        inventory.evolve(&decision.stream, &decision.event);
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
        .then_event(StockEvent::StockAdjusted {
            previous_on_hand: 10,
            on_hand: 4,
            reason: Reason::parse("cycle count").unwrap(),
        })
        .then_stock("apple", 4, 4);
}

#[test]
fn it_rejects_adjusting_on_hand_below_the_reserved_quantity() {
    given(&[add("apple", 10), reserve("apple", "r1", 4)])
        .when(adjust("apple", 3))
        .then_error(DomainError::AdjustBelowReserved {
            requested_on_hand: 3,
            reserved: 4,
        });
}

#[test]
fn it_rejects_adding_stock_that_would_overflow_on_hand() {
    given(&[add("apple", i64::MAX as u64 - 1)])
        .when(add("apple", 2))
        .then_error(DomainError::OnHandOverflow {
            on_hand: i64::MAX as u64 - 1,
            quantity: 2,
        });
}

#[test]
fn it_keeps_stores_apart() {
    let other_store = StreamKey::new(
        ProductId::parse("apple").unwrap(),
        StoreId::parse("store-2").unwrap(),
    );
    let then = given(&[add("apple", 10)]).when(Command::ReserveStock {
        stream: other_store,
        reservation_id: reservation("r1"),
        quantity: quantity(1),
        customer_id: CustomerId::parse("c").unwrap(),
        ttl: TimeToLive::DEFAULT,
    });
    assert!(matches!(
        then.result,
        Err(DomainError::InsufficientStock { available: 0, .. })
    ));
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
            if let Ok(decision) = inventory.decide(&command, now) {
                if let StockEvent::StockReserved { quantity, .. } = &decision.event {
                    prop_assert!(quantity.get() <= before.available());
                }
                inventory.evolve(&decision.stream, &decision.event);
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
                if let Ok(decision) = inventory.decide(&command, now) {
                    inventory.evolve(&decision.stream, &decision.event);
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
        let decision = inventory.decide(&command, now).unwrap();
        inventory.evolve(&decision.stream, &decision.event);
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
        let decision = inventory
            .decide(&commit(&format!("r-{product}")), now)
            .unwrap();
        assert_eq!(decision.stream, stream(product), "r-{product}");
    }
}
