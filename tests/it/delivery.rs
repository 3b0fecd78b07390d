//! Outbound delivery to webhooks: real servers, a real HTTP receiver on 127.0.0.1, real
//! cursor files. Every event reaches the receiver in log order, signed, whatever the receiver
//! does in between; duplicates are only of batches whose try failed, and are counted.

use crate::support;

use std::time::Duration;

use inventory::delivery::SinkConfig;
use inventory::grpc::pb;
use support::delivery::{WAIT, assert_every_event_in_order, cursor_at, quick, rewind, sink_status};
use support::webhook::Receiver;
use support::{Combined, add_stock, wait_for, wait_until};

const SECRET: &[u8] = b"a-webhook-secret-for-tests";

fn sink(name: &str, receiver: &Receiver) -> SinkConfig {
    quick(SinkConfig::webhook(name, &receiver.url(), SECRET).unwrap())
}

/// Appends `count` receipts over 7 items; returns the log's head after them.
async fn write(server: &Combined, count: usize) -> u64 {
    let mut commands = server.commands().await;
    let mut head = 0;
    for index in 0..count {
        let result = commands
            .add_stock(add_stock(&format!("p{}", index % 7), "s1", 1))
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        head = result.position;
    }
    head
}

/// Waits until the receiver has accepted every position up to `head`.
async fn delivered_through(receiver: &Receiver, head: u64) {
    wait_until(
        WAIT,
        &format!("every event up to {head} delivered"),
        async || receiver.accepted_positions().last().copied() == Some(head),
    )
    .await;
}

#[tokio::test]
async fn a_receiver_failing_its_first_five_calls_gets_every_event_in_order_and_signed() {
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.fail_next(5);
    let server = Combined::start_with_sinks(data.path(), vec![sink("erp", &receiver)]).await;
    let head = write(&server, 300).await;
    delivered_through(&receiver, head).await;

    let calls = receiver.calls();
    assert!(
        calls.iter().all(|call| call.signed_with(SECRET)),
        "every call is signed"
    );
    assert!(!calls[0].signed_with(b"another secret"));
    assert_eq!(calls.iter().filter(|call| !call.accepted).count(), 5);
    // The five failed calls were one batch, tried five times and sent a sixth time.
    assert!(
        calls[..6]
            .iter()
            .all(|call| call.delivery_id == calls[0].delivery_id)
    );
    let first = calls[0].positions();
    assert_eq!(
        calls[0].delivery_id,
        format!("erp-{}-{}", first[0], first[first.len() - 1])
    );
    let duplicates = assert_every_event_in_order(&receiver.received_positions(), head);
    let accepted = assert_every_event_in_order(&receiver.accepted_positions(), head);
    assert_eq!(accepted, 0, "no accepted batch is sent again");

    let status = cursor_at(&server, "erp", head).await;
    assert_eq!(status.kind, "webhook");
    assert_eq!(status.state(), pb::SinkState::Running);
    assert_eq!((status.position, status.lag_events), (head, 0));
    assert_eq!(status.failures, 5);
    assert_eq!(
        status.redelivered_events, duplicates as u64,
        "the duplicates the receiver saw are the ones reported"
    );
    assert!(status.last_error.contains("500"), "{}", status.last_error);
    assert!(status.last_success.is_some() && status.failing_since.is_none());
    assert!(status.active);

    // The body: the sink, the delivery id, events in the JSON grpcurl prints.
    let body = calls.last().unwrap().json();
    assert_eq!(body["sink"], "erp");
    let event = &body["events"][0];
    assert!(event["eventId"].as_str().is_some_and(|id| id.len() == 36));
    assert_eq!(event["storeId"], "s1");
    assert!(event["stockAdded"]["quantity"].is_string(), "{event}");
    assert!(event["occurredAt"].as_str().unwrap().ends_with('Z'));
    server.stop().await;
}

/// `http://user:pass@host/…`: the credentials go in `Authorization: Basic`, never in `Host`.
#[tokio::test]
async fn a_urls_user_and_password_are_sent_as_basic_auth() {
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let url = receiver
        .url()
        .replace("http://", "http://erp%40shop:p%3Ass@");
    let sink = quick(SinkConfig::webhook("erp", &url, SECRET).unwrap());
    let server = Combined::start_with_sinks(data.path(), vec![sink]).await;
    let head = write(&server, 3).await;
    delivered_through(&receiver, head).await;
    for call in receiver.calls() {
        assert_eq!(call.host, receiver.address.to_string());
        // base64("erp@shop:p:ss")
        assert_eq!(call.authorization, "Basic ZXJwQHNob3A6cDpzcw==");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_endpoint_that_was_down_gets_everything_it_missed_in_order() {
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let address = receiver.address;
    let server = Combined::start_with_sinks(data.path(), vec![sink("erp", &receiver)]).await;
    let before = write(&server, 20).await;
    delivered_through(&receiver, before).await;

    // Down: connections are refused while more events are written.
    let (receiver, head) = {
        drop(receiver);
        let head = write(&server, 150).await;
        let status = wait_for(WAIT, "the sink retrying", async || {
            let status = sink_status(&server, "erp").await;
            (status.state() == pb::SinkState::Retrying && status.failures >= 3).then_some(status)
        })
        .await;
        assert!(
            status.last_error.contains("connect"),
            "a refused connection is the error: {}",
            status.last_error
        );
        assert_eq!(
            status.position, before,
            "the cursor waits at what was delivered"
        );
        assert_eq!(status.lag_events, head - before);
        assert!(status.failing_since.is_some());
        let back = Receiver::start_on(address).await;
        delivered_through(&back, head).await;
        let positions = back.accepted_positions();
        assert_eq!(positions, (before + 1..=head).collect::<Vec<_>>());
        (back, head)
    };
    let status = cursor_at(&server, "erp", head).await;
    assert_eq!(status.state(), pb::SinkState::Running);
    assert!(status.failing_since.is_none());
    assert_eq!(
        status.redelivered_events, 0,
        "refused connections delivered nothing twice"
    );
    drop(receiver);
    server.stop().await;
}

#[tokio::test]
async fn a_restarted_server_resumes_from_the_stored_cursor() {
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let server = Combined::start_with_sinks(data.path(), vec![sink("erp", &receiver)]).await;
    let first = write(&server, 120).await;
    delivered_through(&receiver, first).await;
    server.stop().await;
    let cursor: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data.path().join("sinks/erp.cursor.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cursor["position"], first);
    // The cursor and its folder are the server user's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: std::path::PathBuf| std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode(data.path().join("sinks")) & 0o777, 0o700);
    assert_eq!(
        mode(data.path().join("sinks/erp.cursor.json")) & 0o777,
        0o600
    );

    let server = Combined::start_with_sinks(data.path(), vec![sink("erp", &receiver)]).await;
    let head = write(&server, 30).await;
    delivered_through(&receiver, head).await;
    assert_eq!(
        receiver.accepted_positions(),
        (1..=head).collect::<Vec<_>>(),
        "nothing delivered twice across the restart"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_parked_sink_keeps_its_cursor_until_resumed_and_then_catches_up() {
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.set_failing(true);
    let mut config = sink("erp", &receiver);
    config.retry.park_after = Duration::from_millis(300);
    let server = Combined::start_with_sinks(data.path(), vec![config]).await;
    let head = write(&server, 40).await;
    let parked = wait_for(WAIT, "the sink parked", async || {
        let status = sink_status(&server, "erp").await;
        (status.state() == pb::SinkState::Parked).then_some(status)
    })
    .await;
    assert_eq!(parked.position, 0);
    assert!(parked.failing_since.is_some());
    let cursor = std::fs::read_to_string(data.path().join("sinks/erp.cursor.json")).unwrap();
    assert!(cursor.contains("\"parked\":true"), "{cursor}");

    // Parked: no more tries, also once the receiver is well again.
    receiver.set_failing(false);
    let tries = receiver.calls().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.calls().len(), tries, "a parked sink does not try");

    let resumed = server
        .deliveries()
        .await
        .resume_sink(pb::ResumeSinkRequest { name: "erp".into() })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(resumed.state(), pb::SinkState::Parked);
    delivered_through(&receiver, head).await;
    assert_eq!(
        receiver.accepted_positions(),
        (1..=head).collect::<Vec<_>>()
    );
    let status = cursor_at(&server, "erp", head).await;
    assert_eq!(status.state(), pb::SinkState::Running);
    server.stop().await;
}

#[tokio::test]
async fn a_rewind_replays_exactly_from_the_position() {
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let server = Combined::start_with_sinks(data.path(), vec![sink("erp", &receiver)]).await;
    let head = write(&server, 250).await;
    delivered_through(&receiver, head).await;
    let before = receiver.accepted_positions().len();

    let rewound = rewind(&server, "erp", 180).await;
    assert_eq!(rewound.position, 180);
    wait_until(WAIT, "the replay delivered", async || {
        receiver.accepted_positions().len() == before + (head - 180) as usize
    })
    .await;
    assert_eq!(
        receiver.accepted_positions()[before..],
        (181..=head).collect::<Vec<_>>(),
        "the replay starts right after the position and ends at the head"
    );

    let mut deliveries = server.deliveries().await;
    let past = deliveries
        .rewind_sink(pb::RewindSinkRequest {
            name: "erp".into(),
            position: head + 1,
        })
        .await
        .unwrap_err();
    assert_eq!(past.code(), tonic::Code::InvalidArgument);
    assert_eq!(support::bad_fields(&past), ["position"]);
    let unknown = deliveries
        .resume_sink(pb::ResumeSinkRequest {
            name: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(support::error_reason(&unknown), "SINK_NOT_FOUND");
    assert!(unknown.message().contains("nobody"));
    server.stop().await;
}

#[tokio::test]
async fn a_filtered_sink_gets_only_what_it_asked_for_and_its_cursor_still_moves() {
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let mut config = sink("p3-only", &receiver);
    config
        .filter
        .product_ids
        .insert(inventory::domain::ProductId::parse("p3").unwrap());
    let server = Combined::start_with_sinks(data.path(), vec![config]).await;
    let head = write(&server, 70).await;
    wait_until(WAIT, "the filtered sink at the head", async || {
        sink_status(&server, "p3-only").await.position == head
    })
    .await;
    let events: Vec<serde_json::Value> = receiver
        .calls()
        .iter()
        .flat_map(|call| call.json()["events"].as_array().unwrap().clone())
        .collect();
    assert_eq!(events.len(), 10, "p3 is every 7th receipt of 70");
    assert!(events.iter().all(|event| event["productId"] == "p3"));
    server.stop().await;
}

#[tokio::test]
async fn an_https_endpoint_is_reached_over_tls_trusting_only_the_named_ca() {
    let authority = inventory::certificates::CertificateAuthority::new("webhook test CA").unwrap();
    let certified = authority.server(&["127.0.0.1".to_owned()]).unwrap();
    let receiver = Receiver::start_tls(&certified).await;
    let directory = tempfile::tempdir().unwrap();
    let ca = directory.path().join("ca.pem");
    std::fs::write(&ca, authority.certificate_pem()).unwrap();
    let trusting = |name: &str, ca: Option<std::path::PathBuf>| {
        let mut config = quick(SinkConfig::webhook(name, &receiver.https_url(), SECRET).unwrap());
        if let inventory::delivery::SinkTarget::Webhook { ca: slot, .. } = &mut config.target {
            *slot = ca;
        }
        config
    };
    // One sink trusts the receiver's CA; one trusts another CA and must not deliver.
    let other = inventory::certificates::CertificateAuthority::new("another CA").unwrap();
    let other_ca = directory.path().join("other.pem");
    std::fs::write(&other_ca, other.certificate_pem()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = Combined::start_with_sinks(
        data.path(),
        vec![
            trusting("trusted", Some(ca)),
            trusting("untrusted", Some(other_ca)),
        ],
    )
    .await;
    let head = write(&server, 25).await;
    cursor_at(&server, "trusted", head).await;
    assert!(receiver.calls().iter().all(|call| call.signed_with(SECRET)));
    assert_eq!(
        receiver.accepted_positions(),
        (1..=head).collect::<Vec<_>>(),
        "only the trusting sink delivered"
    );
    let untrusted = wait_for(WAIT, "the untrusting sink failing", async || {
        let status = sink_status(&server, "untrusted").await;
        (status.failures > 0).then_some(status)
    })
    .await;
    assert_eq!(untrusted.position, 0);
    assert!(
        untrusted.last_error.contains("TLS"),
        "{}",
        untrusted.last_error
    );
    server.stop().await;
}

#[tokio::test]
async fn a_rewind_is_applied_between_two_batches_while_the_sink_is_busy_catching_up() {
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(20));
    let mut config = sink("erp", &receiver);
    config.batch_max = 5;
    let server = Combined::start_with_sinks(data.path(), vec![config]).await;
    // 1,000 events in batches of 5 answered after 20 ms each: busy for 4 s at least.
    let head = write(&server, 1000).await;
    wait_until(WAIT, "delivery under way", async || {
        receiver.accepted_positions().len() >= 50
    })
    .await;
    let asked = std::time::Instant::now();
    let rewound = rewind(&server, "erp", 0).await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "answered between two batches, not once caught up: {took:?}"
    );
    assert_eq!(rewound.position, 0);
    assert!(receiver.accepted_positions().len() < head as usize);
    receiver.set_delay(Duration::ZERO);
    cursor_at(&server, "erp", head).await;
    let accepted = receiver.accepted_positions();
    let replay_starts = accepted
        .iter()
        .rposition(|position| *position == 1)
        .unwrap();
    assert!(
        replay_starts > 0,
        "position 1 delivered again after the rewind"
    );
    assert_eq!(accepted[replay_starts..], (1..=head).collect::<Vec<_>>());
    server.stop().await;
}

#[tokio::test]
async fn a_request_right_after_the_start_waits_for_the_deliverer_instead_of_being_refused() {
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let server = Combined::start_with_sinks(data.path(), vec![sink("erp", &receiver)]).await;
    // No wait for the deliverer to be up: on an embedded log no other server can hold it.
    let resumed = server
        .deliveries()
        .await
        .resume_sink(pb::ResumeSinkRequest { name: "erp".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(resumed.active);
    server.stop().await;
}

proptest::proptest! {
    // Webhook bodies and JetStream messages are transcoded from the stored form in one pass;
    // prost-reflect's DynamicMessage, which implements the whole mapping, is the reference.
    #[test]
    fn an_events_json_is_exactly_what_prost_reflect_writes(event in support::events::any_event()) {
        proptest::prop_assert!(inventory::log::codec::json::transcoded());
        proptest::prop_assert_eq!(
            inventory::log::codec::json::event_json(&event),
            inventory::log::codec::json::reference_json(&event)
        );
    }
}
