//! The load generator's pure parts: how levels are spread, item ids, the random picks, how
//! errors are sorted, and reading `/proc`. No timing is asserted here: the bench's own
//! `--smoke` mode proves the whole tool runs.

use inventory::bench::load::{self, ItemSpace, Outcome, SplitMix64};
use inventory::bench::machine;
use inventory::domain::{ProductId, StoreId};
use tonic_types::{ErrorDetails, StatusExt};

#[test]
fn levels_are_spread_over_the_square_root_of_connections() {
    let spread: Vec<(usize, usize)> = [1, 16, 64, 256]
        .into_iter()
        .map(|level| (level, load::connections_for_level(level)))
        .collect();
    assert_eq!(spread, [(1, 1), (16, 4), (64, 8), (256, 16)]);
    assert_eq!(load::connections_for_level(2), 1);
}

#[test]
fn item_space_keys_are_distinct_valid_ids() {
    let items = ItemSpace {
        prefix: "bench7-".to_owned(),
        products: 3,
        stores: 2,
    };
    let keys: Vec<(String, String)> = (0..items.len()).map(|index| items.key(index)).collect();
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6);
    for (product, store) in keys {
        assert!(ProductId::parse(&product).is_ok(), "{product}");
        assert!(StoreId::parse(&store).is_ok(), "{store}");
    }
}

#[test]
fn random_picks_stay_below_the_bound_and_repeat_per_seed() {
    let mut first = SplitMix64::new(42);
    let mut second = SplitMix64::new(42);
    for _ in 0..10_000 {
        let pick = first.below(7);
        assert!(pick < 7);
        assert_eq!(pick, second.below(7));
    }
}

#[test]
fn only_insufficient_stock_is_an_expected_refusal() {
    let mut details = ErrorDetails::new();
    details.set_error_info(
        "INSUFFICIENT_STOCK",
        "inventory",
        std::collections::HashMap::new(),
    );
    let insufficient =
        tonic::Status::with_error_details(tonic::Code::FailedPrecondition, "not enough", details);
    assert!(matches!(load::classify(&insufficient), Outcome::Refused));
    let mut details = ErrorDetails::new();
    details.set_error_info(
        "RESERVATION_RELEASED",
        "inventory",
        std::collections::HashMap::new(),
    );
    let released =
        tonic::Status::with_error_details(tonic::Code::FailedPrecondition, "released", details);
    assert!(matches!(load::classify(&released), Outcome::Failed(_)));
    let unavailable = tonic::Status::unavailable("disk full");
    assert!(matches!(load::classify(&unavailable), Outcome::Failed(_)));
}

#[test]
fn proc_figures_of_this_process_are_readable() {
    let pid = std::process::id();
    // Only that the figures read is asserted: their values depend on the machine.
    let ticks = machine::cpu_ticks(pid).unwrap();
    assert!(machine::cpu_ticks(pid).unwrap() >= ticks);
    assert!(machine::resident_bytes(pid).unwrap() > 0);
    let (busy, total) = machine::machine_ticks().unwrap();
    assert!(total > 0 && busy <= total, "busy {busy} of {total} ticks");
    let (busy_later, total_later) = machine::machine_ticks().unwrap();
    assert!(busy_later >= busy && total_later >= total);
    assert_eq!(machine::load_average().split(' ').count(), 3);
}
