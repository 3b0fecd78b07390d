//! The domain's given/when/then harness, shared by `tests/it/domain.rs` and
//! `tests/it/stock_model.rs`, each including its own copy with `#[path]`. Each file
//! adds the `then_…` checks it needs in an `impl Then` of its own.
#![allow(dead_code)]

use inventory::domain::{
    Command, Decision, DomainError, Inventory, ProductId, StockEvent, StoreId, StreamKey, Timestamp,
};

/// When every `given` command was accepted.
pub const START: Timestamp = Timestamp(1_700_000_000_000);

/// A product's item in `store-1`, the store of these tests.
pub fn stream(product: &str) -> StreamKey {
    StreamKey::new(
        ProductId::parse(product).unwrap(),
        StoreId::parse("store-1").unwrap(),
    )
}

pub fn apply_all(inventory: &mut Inventory, decisions: &[Decision]) {
    inventory.begin_command();
    for decision in decisions {
        inventory.evolve(&decision.stream, &decision.event);
    }
}

/// The history: commands that were accepted (decided and applied) at `START`.
pub struct Given {
    pub inventory: Inventory,
}

pub fn given(commands: &[Command]) -> Given {
    let mut inventory = Inventory::new();
    for command in commands {
        let decisions = inventory
            .decide(command, START)
            .unwrap_or_else(|error| panic!("given {command:?} was refused: {error}"));
        apply_all(&mut inventory, &decisions);
    }
    Given { inventory }
}

impl Given {
    pub fn when(self, command: Command) -> Then {
        self.when_at(command, START)
    }

    pub fn when_at(mut self, command: Command, now: Timestamp) -> Then {
        let result = self.inventory.decide(&command, now).map(|decisions| {
            apply_all(&mut self.inventory, &decisions);
            decisions
                .into_iter()
                .map(|decision| (decision.stream, decision.event))
                .collect()
        });
        Then {
            inventory: self.inventory,
            result,
        }
    }
}

/// The inventory after the command, and what the command became.
pub struct Then {
    pub inventory: Inventory,
    /// Each event of the command and its item.
    pub result: Result<Vec<(StreamKey, StockEvent)>, DomainError>,
}

impl Then {
    /// The command's events, whatever their items; `None` when it was refused.
    pub fn events(&self) -> Option<Vec<&StockEvent>> {
        self.result
            .as_ref()
            .ok()
            .map(|events| events.iter().map(|(_, event)| event).collect())
    }

    pub fn then_error(self, expected: DomainError) -> Then {
        assert_eq!(self.result.as_ref().err(), Some(&expected));
        self
    }
}
