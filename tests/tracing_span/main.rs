//! Every run happens inside an `errand.job` span carrying the job's id, kind, queue, attempt and
//! idempotency key, and for a step of a workflow or saga, its id and the step's name.
//!
//! Its own test binary: tracing caches per call site whether anyone listens, and tests running
//! beside this one with no subscriber would race that cache.

use std::time::Duration;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{self, Layer, SubscriberExt};

use errand::{job, Context};

use errand_tests::common::{record, records, sqlite, tag};

type Spans = Arc<Mutex<Vec<(Id, BTreeMap<String, String>)>>>;

/// Collects the fields of every `errand.job` span.
struct CaptureJobSpans(Spans);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber> Layer<S> for CaptureJobSpans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: layer::Context<'_, S>) {
        if attrs.metadata().name() == "errand.job" {
            let mut fields = BTreeMap::new();
            attrs.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().push((id.clone(), fields));
        }
    }

    /// Fields recorded after the span was created (`job.tags`, `job.meta`).
    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: layer::Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, fields)) = spans.iter_mut().find(|(span, _)| span == id) {
            values.record(&mut Fields(fields));
        }
    }
}

#[test]
fn each_run_has_a_span_with_the_jobs_identity() {
    let spans: Spans = Arc::default();
    let subscriber = tracing_subscriber::registry().with(CaptureJobSpans(spans.clone()));
    // A current-thread runtime keeps every task on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = tag("span");
    let id = runtime.block_on(async {
        let store = sqlite().await;
        let id = traced_charge::with(t.clone(), 42)
            .tags(["vip"])
            .meta(serde_json::json!({ "request_id": "r-1" }))
            .enqueue(&store.client)
            .await
            .unwrap()
            .id;
        errand_tests::common::worker(&store.client, &["default"])
            .run_until_idle()
            .await
            .unwrap();
        id
    });
    assert_eq!(records(&t), ["charge-42"]);
    let spans = spans.lock().unwrap();
    assert_eq!(spans.len(), 1, "{spans:?}");
    let fields = &spans[0].1;
    assert_eq!(
        fields.get("job.id").map(String::as_str),
        Some(id.to_string().as_str())
    );
    assert_eq!(
        fields.get("job.kind").map(String::as_str),
        Some("traced_charge")
    );
    assert_eq!(fields.get("job.queue").map(String::as_str), Some("default"));
    assert_eq!(fields.get("job.attempt").map(String::as_str), Some("1"));
    assert_eq!(fields.get("job.key").map(String::as_str), Some("charge-42"));
    assert_eq!(
        fields.get("job.tags").map(String::as_str),
        Some(r#"["vip"]"#)
    );
    assert_eq!(
        fields.get("job.meta").map(String::as_str),
        Some(r#"{"request_id":"r-1"}"#)
    );
}

#[job(key = "charge-<order_id>")]
async fn traced_charge(ctx: &Context, tag: String, order_id: i64) -> Result<(), std::io::Error> {
    let _ = order_id;
    record(&tag, ctx.idempotency_key());
    // The job's own events land in its span.
    tracing::info!(parent: ctx.span(), waited = ?Duration::ZERO, "charging");
    Ok(())
}

/// A step's span also carries its workflow's (or saga's) id and the step's name.
#[test]
fn a_steps_span_names_its_workflow_and_step() {
    let spans: Spans = Arc::default();
    let subscriber = tracing_subscriber::registry().with(CaptureJobSpans(spans.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = tag("saga-span");
    let saga = runtime.block_on(async {
        let store = sqlite().await;
        let saga = errand::Saga::new("checkout")
            .step_without_compensation(traced_charge::with(t.clone(), 7))
            .enqueue(&store.client)
            .await
            .unwrap();
        errand_tests::common::worker(&store.client, &["default"])
            .run_until_idle()
            .await
            .unwrap();
        saga
    });
    assert_eq!(records(&t), ["charge-7"]);
    let spans = spans.lock().unwrap();
    assert_eq!(spans.len(), 1, "{spans:?}");
    let fields = &spans[0].1;
    assert_eq!(
        fields.get("workflow.id").map(String::as_str),
        Some(saga.id.to_string().as_str())
    );
    assert_eq!(
        fields.get("workflow.step").map(String::as_str),
        Some("traced_charge")
    );
}

thread_local! {
    /// The trace context the fake propagation hands out, when set.
    static CURRENT_TRACE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Each link made: the run span's name and the carrier.
static LINKS: Mutex<Vec<(String, std::collections::HashMap<String, String>)>> =
    Mutex::new(Vec::new());

/// A stand-in for `tracing-opentelemetry`: the "context" is a string set by the test.
struct FakePropagation;

impl errand::TracePropagation for FakePropagation {
    fn inject(&self, carrier: &mut std::collections::HashMap<String, String>) {
        if let Some(trace) = CURRENT_TRACE.with(|t| t.borrow().clone()) {
            carrier.insert("traceparent".to_owned(), trace);
        }
    }

    fn link(&self, run: &tracing::Span, carrier: &std::collections::HashMap<String, String>) {
        let name = run.metadata().map_or("", |m| m.name()).to_owned();
        LINKS.lock().unwrap().push((name, carrier.clone()));
    }
}

/// The trace context of the code that enqueued a job is stored with it, and its run's span is
/// linked to it.
#[test]
fn a_run_links_to_the_trace_that_enqueued_it() {
    errand::set_trace_propagation(FakePropagation);
    let spans: Spans = Arc::default();
    let subscriber = tracing_subscriber::registry().with(CaptureJobSpans(spans.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = tag("trace-link");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let meta = runtime.block_on(async {
        let store = sqlite().await;
        CURRENT_TRACE.with(|c| *c.borrow_mut() = Some(traceparent.to_owned()));
        let id = traced_charge::with(t.clone(), 9)
            .enqueue(&store.client)
            .await
            .unwrap()
            .id;
        CURRENT_TRACE.with(|c| *c.borrow_mut() = None);
        errand_tests::common::worker(&store.client, &["default"])
            .run_until_idle()
            .await
            .unwrap();
        store.client.job(id).await.unwrap().unwrap().meta
    });
    assert_eq!(records(&t), ["charge-9"]);
    assert_eq!(meta["trace"]["traceparent"], traceparent, "{meta}");
    let links = LINKS.lock().unwrap();
    let ours: Vec<_> = links
        .iter()
        .filter(|(_, carrier)| carrier.get("traceparent").map(String::as_str) == Some(traceparent))
        .collect();
    assert_eq!(ours.len(), 1, "{links:?}");
    assert_eq!(ours[0].0, "errand.job", "the run's own span is linked");
}
