//! Arguments survive the store unchanged; the key function, the stored key and the running
//! job's idempotency key agree.

use std::collections::BTreeMap;

use errand::JobState;

use errand_tests::common::{job, records, tag, work_until_final, worker, TestStore};
use errand_tests::jobs::*;

errand_tests::per_store!(arguments_round_trip, key_function_matches_stored_key);

fn payload() -> Payload {
    Payload {
        text: "naïve café — 日本語 🚀 \"quoted\" \\ back\nslash".to_owned(),
        nested: Nested {
            list: vec![Some(1), None, Some(-7)],
            map: BTreeMap::from([("ünï".to_owned(), 1), ("zero".to_owned(), 0)]),
        },
        maybe: Some(String::new()),
        nothing: None,
        smallest: i64::MIN,
        largest: u64::MAX,
        ratio: 0.1 + 0.2,
    }
}

async fn arguments_round_trip(store: TestStore) {
    let client = &store.client;
    let t = tag("round-trip");
    let sent = (payload(), Some("label ✓".to_owned()));
    let id = round_trip::enqueue(client, t.clone(), sent.0.clone(), sent.1.clone())
        .await
        .unwrap()
        .id;

    let stored = job(client, id).await;
    let args: <round_trip as errand::Job>::Args = stored.args_as().unwrap();
    assert_eq!(args.payload, sent.0);
    assert_eq!(args.label, sent.1);
    assert_eq!(
        stored.args["payload"]["largest"],
        serde_json::json!(u64::MAX)
    );

    worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(job(client, id).await.state, JobState::Completed);
    let received: (Payload, Option<String>) = serde_json::from_str(&records(&t)[0]).unwrap();
    assert_eq!(received, sent);
}

async fn key_function_matches_stored_key(store: TestStore) {
    let client = &store.client;
    let t = tag("keys");
    assert_eq!(charge::key(&42), "charge-42");
    let id = charge::enqueue(client, t.clone(), 42, 2500)
        .await
        .unwrap()
        .id;
    assert_eq!(job(client, id).await.key.as_deref(), Some("charge-42"));

    let order = Order {
        id: 7,
        address: Address {
            city: "Zürich".to_owned(),
        },
    };
    assert_eq!(ship::key(&order), "ship-7-to-Zürich");
    let shipped = ship::enqueue(client, order.clone()).await.unwrap().id;
    assert_eq!(
        job(client, shipped).await.key.as_deref(),
        Some("ship-7-to-Zürich")
    );
    assert_eq!(ship::with(order).key().as_deref(), Some("ship-7-to-Zürich"));

    let keyless = succeed::enqueue(client, tag("keyless")).await.unwrap().id;
    assert_eq!(job(client, keyless).await.key, None);

    worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(
        records(&t),
        ["charge-42"],
        "ctx.idempotency_key() is the stored key"
    );
}

/// Keys are a promise across releases: the same arguments render the same key, forever.
#[test]
fn rendered_keys_are_pinned() {
    assert_eq!(charge::key(&42), "charge-42");
    assert_eq!(charge::key(&-7), "charge--7");
    assert_eq!(long_key::key(&"a b/ü".to_owned()), "k-a b/ü");
    let order = Order {
        id: u64::MAX,
        address: Address {
            city: "São Paulo".to_owned(),
        },
    };
    assert_eq!(ship::key(&order), "ship-18446744073709551615-to-São Paulo");
}

errand_tests::per_store!(values_that_look_like_separators_keep_keys_apart);

/// With `key = "pair-<a>-<b>"`, `("x-y", "z")` and `("x", "y-z")` rendered one key before keys
/// were escaped: one unique slot and one ledger, so the second job got the first's charge.
async fn values_that_look_like_separators_keep_keys_apart(store: TestStore) {
    let client = &store.client;
    let t = tag("pair-keys");
    // One after the other, so that the second finds the first's record if they share a key.
    let first = ledger_pair::with(t.clone(), "x-y".into(), "z".into())
        .enqueue(client)
        .await
        .unwrap()
        .id;
    work_until_final(worker(client, &["default"]), client, &[first]).await;
    let second = ledger_pair::with(t.clone(), "x".into(), "y-z".into())
        .enqueue(client)
        .await
        .unwrap()
        .id;
    work_until_final(worker(client, &["default"]), client, &[second]).await;
    let mut charged = records(&t);
    charged.sort();
    assert_eq!(charged, ["x-y|z", "x|y-z"], "each job ran its own charge");
}

/// The escaping rule, pinned: a value before another placeholder has the separator after it
/// (and `%`) percent-encoded; the last value is written as it is.
#[test]
fn rendered_values_are_escaped_before_separators() {
    let key = |a: &str, b: &str| ledger_pair::key(&a.to_owned(), &b.to_owned());
    assert_eq!(key("x-y", "z"), "pair-x%2Dy-z");
    assert_eq!(key("x", "y-z"), "pair-x-y-z");
    assert_eq!(key("50%", "off"), "pair-50%25-off");
    assert_eq!(key("plain", "a-b%"), "pair-plain-a-b%");
    assert_ne!(key("x-y", "z"), key("x", "y-z"));
}
