//! What a request can set beside its arguments: tags, meta and a timeout, stored with the job,
//! shown on `JobInfo`, found by `JobFilter::tag`, and honoured by the worker.

use std::time::Duration;

use errand::{Error, FailureKind, JobFilter, JobState, Page};
use serde_json::json;

use errand_tests::common::{job, tag, work_until_final, worker, TestStore};
use errand_tests::jobs::*;

errand_tests::per_store!(
    tags_and_meta_are_stored_with_the_job,
    enqueue_many_keeps_each_jobs_tags,
    a_request_timeout_stops_a_job_that_has_none,
);

async fn tags_and_meta_are_stored_with_the_job(store: TestStore) {
    let client = &store.client;
    let tagged = succeed::with(tag("tags"))
        .tags(["campaign-7", "tier-gold"])
        .meta(json!({ "requested_by": "ops@example.com", "ticket": 42 }))
        .timeout(Duration::from_secs(9))
        .enqueue(client)
        .await
        .unwrap()
        .id;
    let plain = succeed::enqueue(client, tag("no-tags")).await.unwrap().id;

    let info = job(client, tagged).await;
    assert_eq!(info.tags, ["campaign-7", "tier-gold"]);
    assert_eq!(
        info.meta,
        json!({ "requested_by": "ops@example.com", "ticket": 42 })
    );
    assert_eq!(info.timeout, Some(Duration::from_secs(9)));
    let info = job(client, plain).await;
    assert!(info.tags.is_empty());
    assert_eq!((info.meta, info.timeout), (json!({}), None));

    let found = client
        .jobs(&JobFilter::all().tag("tier-gold"), Page::first(10))
        .await
        .unwrap();
    let ids: Vec<_> = found.iter().map(|j| j.id).collect();
    assert_eq!(ids, [tagged]);
    let filter = JobFilter::all().tag("tier-silver");
    assert_eq!(client.count(&filter).await.unwrap(), 0);

    match succeed::with(tag("bad-meta"))
        .meta(json!([1, 2]))
        .enqueue(client)
        .await
    {
        Err(Error::InvalidMeta { kind, found }) => {
            assert_eq!((kind, found.as_str()), ("succeed", "[1,2]"))
        }
        other => panic!("expected InvalidMeta, got {other:?}"),
    }

    // They stay through the run.
    work_until_final(worker(client, &["default"]), client, &[tagged]).await;
    let done = job(client, tagged).await;
    assert_eq!((done.state, done.tags.len()), (JobState::Completed, 2));
}

async fn enqueue_many_keeps_each_jobs_tags(store: TestStore) {
    let client = &store.client;
    let t = tag("many-tags");
    let requests = (0..5).map(|i| {
        let request = succeed::with(t.clone());
        match i % 2 {
            0 => request
                .tags(["even".to_owned(), format!("n{i}")])
                .meta(json!({ "i": i })),
            _ => request,
        }
    });
    let ids: Vec<_> = client
        .enqueue_many(requests)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let even = client
        .jobs(&JobFilter::all().tag("even"), Page::first(10))
        .await
        .unwrap();
    let even_ids: Vec<_> = even.iter().map(|j| j.id).collect();
    assert_eq!(even_ids, [ids[0], ids[2], ids[4]]);
    assert_eq!(even[1].tags, ["even", "n2"]);
    assert_eq!(even[1].meta, json!({ "i": 2 }));
    let odd = job(client, ids[1]).await;
    assert!(odd.tags.is_empty());
    assert_eq!(odd.meta, json!({}));
}

async fn a_request_timeout_stops_a_job_that_has_none(store: TestStore) {
    let client = &store.client;
    // `blocks` has no timeout of its own and waits for a permit that never comes.
    let id = blocks::with(tag("request-timeout"))
        .timeout(Duration::from_millis(200))
        .retry(0)
        .enqueue(client)
        .await
        .unwrap()
        .id;
    work_until_final(worker(client, &["default"]), client, &[id]).await;
    let dead = job(client, id).await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.errors[0].kind, FailureKind::Timeout);
    assert!(
        dead.errors[0].message.contains("200ms"),
        "{:?}",
        dead.errors
    );
}
