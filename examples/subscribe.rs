//! Prints every stock change as it happens, resuming after a restart or a lost connection from
//! the last position it processed (saved in a file).
//!
//! ```sh
//! cargo run --example subscribe -- --server http://127.0.0.1:50051 --position-file ./listener.pos
//! cargo run --example subscribe -- --product sku-1 --store store-a
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use tokio_stream::StreamExt;

use inventory::grpc::pb;
use inventory::grpc::pb::event_service_client::EventServiceClient;
use pb::inventory_event::Kind;
use pb::subscribe_response::Message;

#[derive(Parser, Debug)]
struct Arguments {
    /// Any server of the cluster: the command server or a query server.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    /// Where the last processed position is kept between runs.
    #[arg(long, default_value = "./subscriber.position")]
    position_file: PathBuf,
    /// Only these products (repeatable).
    #[arg(long = "product")]
    products: Vec<String>,
    /// Only these stores (repeatable).
    #[arg(long = "store")]
    stores: Vec<String>,
}

#[tokio::main]
async fn main() {
    let arguments = Arguments::parse();
    let mut delay = Duration::from_millis(100);
    loop {
        let position = load_position(&arguments.position_file);
        match follow(&arguments, position).await {
            Ok(()) => eprintln!("the server ended the stream; reconnecting"),
            Err(problem) => eprintln!("{problem}; reconnecting in {delay:?}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn follow(arguments: &Arguments, from_position: u64) -> Result<(), String> {
    let mut client = EventServiceClient::connect(arguments.server.clone())
        .await
        .map_err(|error| format!("cannot connect to {}: {error}", arguments.server))?;
    let filter = pb::SubscriptionFilter {
        product_ids: arguments.products.clone(),
        store_ids: arguments.stores.clone(),
        event_types: Vec::new(),
    };
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            from_position,
            filter: Some(filter),
        })
        .await
        .map_err(|status| format!("subscribe failed: {}", status.message()))?
        .into_inner();
    eprintln!("subscribed from position {from_position}");
    while let Some(message) = stream.next().await {
        let message = message.map_err(|status| format!("stream failed: {}", status.message()))?;
        match message.message {
            Some(Message::Event(event)) => {
                print_event(&event);
                // Save only after the event was handled: a crash in between means the event
                // is delivered again (at-least-once), never skipped.
                save_position(&arguments.position_file, event.position)?;
            }
            Some(Message::Checkpoint(checkpoint)) => {
                save_position(&arguments.position_file, checkpoint.position)?;
            }
            Some(Message::CaughtUp(caught_up)) => {
                eprintln!("caught up at position {}; now live", caught_up.position);
                save_position(&arguments.position_file, caught_up.position)?;
            }
            None => {}
        }
    }
    Ok(())
}

fn state_name(state: i32) -> &'static str {
    pb::StockState::try_from(state).map_or("?", |state| state.as_str_name())
}

fn print_event(event: &pb::InventoryEvent) {
    let what = match &event.kind {
        Some(Kind::StockAdded(added)) => format!("added {}", added.quantity),
        Some(Kind::StockAdjusted(adjusted)) => {
            format!(
                "adjusted {} -> {}",
                adjusted.previous_on_hand, adjusted.on_hand
            )
        }
        Some(Kind::StockReserved(reserved)) => format!(
            "reserved {} for {} ({})",
            reserved.quantity, reserved.customer_id, reserved.reservation_id
        ),
        Some(Kind::ReservationCommitted(committed)) => format!(
            "committed {} as order {} (released {})",
            committed.quantity, committed.order_id, committed.released_quantity
        ),
        Some(Kind::StockRemoved(removed)) => {
            format!("removed {} {}", removed.quantity, state_name(removed.from))
        }
        Some(Kind::StockMoved(moved)) => format!(
            "moved {} from {} to {}",
            moved.quantity,
            state_name(moved.from),
            state_name(moved.to)
        ),
        Some(Kind::ItemPolicyChanged(policy)) => format!(
            "policy: safety stock {}, low at {}",
            policy.safety_stock, policy.low_stock_threshold
        ),
        Some(Kind::StockCounted(count)) => format!(
            "counted {} (variance {:+}) -> on hand {}",
            count.counted, count.variance, count.on_hand
        ),
        Some(Kind::TransferShipped(shipped)) => format!(
            "shipped {} to {} ({})",
            shipped.quantity, shipped.to_store_id, shipped.transfer_id
        ),
        Some(Kind::TransferIncoming(incoming)) => format!(
            "incoming {} from {} ({})",
            incoming.quantity, incoming.from_store_id, incoming.transfer_id
        ),
        Some(Kind::TransferReceived(received)) => {
            format!("received {} ({})", received.quantity, received.transfer_id)
        }
        Some(Kind::TransferLost(lost)) => {
            format!("lost in transit {} ({})", lost.quantity, lost.transfer_id)
        }
        Some(Kind::TransferCancelled(cancelled)) => format!(
            "transfer cancelled, {} no longer incoming ({})",
            cancelled.quantity, cancelled.transfer_id
        ),
        Some(Kind::TransferReturned(returned)) => {
            format!("returned {} ({})", returned.quantity, returned.transfer_id)
        }
        Some(Kind::StockLow(_)) => "ALERT stock low".to_owned(),
        Some(Kind::OutOfStock(_)) => "ALERT out of stock".to_owned(),
        Some(Kind::BackInStock(_)) => "ALERT back in stock".to_owned(),
        Some(Kind::StockShort(_)) => "ALERT stock short".to_owned(),
        Some(Kind::ReservationExtended(extended)) => {
            format!("extended {}", extended.reservation_id)
        }
        Some(Kind::ReservationReleased(released)) => format!("released {}", released.quantity),
        Some(Kind::ReservationExpired(expired)) => format!("expired {}", expired.quantity),
        None => "unknown event".to_owned(),
    };
    let stock = event.stock.unwrap_or_default();
    let sold_out = if stock.available == 0 {
        "  SOLD OUT"
    } else {
        ""
    };
    println!(
        "#{} {}@{} v{}: {what}; on_hand {} reserved {} available {}{sold_out}{}",
        event.position,
        event.product_id,
        event.store_id,
        event.version,
        stock.on_hand,
        stock.reserved,
        stock.available,
        if event.command_event_count > 1 {
            format!(
                "  [{} of {} of one command]",
                event.command_event_index + 1,
                event.command_event_count
            )
        } else {
            String::new()
        }
    );
}

fn load_position(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

fn save_position(path: &Path, position: u64) -> Result<(), String> {
    // Write aside and rename, so a crash never leaves a half-written position.
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, format!("{position}\n"))
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|error| format!("cannot save the position to {}: {error}", path.display()))
}
