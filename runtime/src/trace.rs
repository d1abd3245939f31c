//! Traces from enqueue to run: the trace context of the code that enqueues a job is stored
//! with it, and the run's span is linked to it, so that a trace shows the enqueue and, later,
//! elsewhere, the run.
//!
//! errand does not depend on OpenTelemetry: the application installs a
//! [`TracePropagation`] that reads and links contexts with its own tracing stack (with
//! `tracing-opentelemetry`, a few lines: see the README's "Traces from enqueue to run").

use std::collections::HashMap;
use std::sync::OnceLock;

/// The key of a job's meta under which its trace context is stored.
pub const META_KEY: &str = "trace";

/// Reads the current trace context when a job is enqueued, and links a run's span to the
/// context stored with its job. Install one per process with [`set_trace_propagation`].
///
/// ```
/// use std::collections::HashMap;
///
/// /// Carries the id of a request, as a stand-in for a real trace context.
/// struct RequestIds;
///
/// impl errand::TracePropagation for RequestIds {
///     fn inject(&self, carrier: &mut HashMap<String, String>) {
///         carrier.insert("request_id".into(), "r-42".into());
///     }
///
///     fn link(&self, run: &tracing::Span, carrier: &HashMap<String, String>) {
///         if let Some(id) = carrier.get("request_id") {
///             tracing::info!(parent: run, request_id = %id, "enqueued by this request");
///         }
///     }
/// }
///
/// errand::set_trace_propagation(RequestIds);
/// ```
pub trait TracePropagation: Send + Sync + 'static {
    /// Writes the current context into `carrier` (for W3C trace context: `traceparent`, and
    /// `tracestate` if any). Called where a job's request is made, in the enqueuing code's
    /// span; writing nothing stores nothing.
    fn inject(&self, carrier: &mut HashMap<String, String>);

    /// Links `run`, the span of a run of the job, to the context `carrier` holds.
    fn link(&self, run: &tracing::Span, carrier: &HashMap<String, String>);
}

static PROPAGATION: OnceLock<Box<dyn TracePropagation>> = OnceLock::new();

/// Installs `propagation` for this process: every job enqueued from now on stores the
/// enqueuing context in its meta (under the key `trace`), and every run whose job carries one
/// is linked to it. Returns `false`, changing nothing, if one was installed already.
pub fn set_trace_propagation(propagation: impl TracePropagation) -> bool {
    PROPAGATION.set(Box::new(propagation)).is_ok()
}

/// The current context as a meta entry, when a propagation is installed and gives one.
pub(crate) fn inject() -> Option<serde_json::Value> {
    let propagation = PROPAGATION.get()?;
    let mut carrier = HashMap::new();
    propagation.inject(&mut carrier);
    if carrier.is_empty() {
        return None;
    }
    let fields = carrier
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    Some(serde_json::Value::Object(fields))
}

/// Links `run` to the context stored in `meta` (the job's meta as JSON text), if any.
pub(crate) fn link(run: &tracing::Span, meta: Option<&str>) {
    let (Some(propagation), Some(meta)) = (PROPAGATION.get(), meta) else {
        return;
    };
    let Ok(serde_json::Value::Object(mut meta)) = serde_json::from_str(meta) else {
        return;
    };
    let Some(serde_json::Value::Object(stored)) = meta.remove(META_KEY) else {
        return;
    };
    let carrier: HashMap<String, String> = stored
        .into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(v) => Some((k, v)),
            _ => None,
        })
        .collect();
    propagation.link(run, &carrier);
}
