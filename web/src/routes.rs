//! The routes: pages (GET) and actions (POST, with the CSRF token, answering with a redirect
//! to the page they came from).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{
    Form, FromRequest, FromRequestParts, OriginalUri, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use errand::{DeadFilter, JobFilter, JobId, JobState, Page};
use serde::Deserialize;

use crate::auth::{action_allowed, random_token, require};
use crate::pages::{self, Base, JobsQuery};
use crate::Shared;

/// Jobs per page of a listing.
const PAGE: usize = 50;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(queues))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/dead", get(dead))
        .route("/schedules", get(schedules))
        .route("/queues/{queue}/pause", post(pause))
        .route("/queues/{queue}/resume", post(resume))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/jobs/{id}/retry", post(retry))
        .route("/jobs/{id}/delete", post(delete))
        .route("/dead/retry-all", post(retry_all))
        .route("/dead/delete-all", post(delete_all))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            require,
        ))
        .with_state(shared)
}

/// What went wrong serving a page: the store failed, or the page does not exist.
pub(crate) enum Failure {
    Store(errand::Error),
    NotFound(String),
    Forbidden,
    /// The action was refused, for the reason given (a retry of a job whose death was acted
    /// on).
    Refused(String),
}

impl From<errand::Error> for Failure {
    fn from(err: errand::Error) -> Failure {
        match err {
            refused @ errand::Error::RetryRefused { .. } => Failure::Refused(refused.to_string()),
            other => Failure::Store(other),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Store(err) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("503: the job store failed: {err}\n"),
            )
                .into_response(),
            Failure::NotFound(what) => (StatusCode::NOT_FOUND, format!("404: {what}\n")).into_response(),
            Failure::Refused(why) => (StatusCode::CONFLICT, format!("409: {why}\n")).into_response(),
            Failure::Forbidden => (
                StatusCode::FORBIDDEN,
                "403: this action did not come from the dashboard's own page (CSRF token missing or wrong); reload the page and try again\n",
            )
                .into_response(),
        }
    }
}

/// A page as a response, with a Content-Security-Policy that lets only the page's own script
/// (by its nonce) run.
fn html(markup: impl FnOnce(&str) -> maud::Markup) -> Response {
    let nonce = random_token();
    let mut response = markup(&nonce).into_response();
    let policy = format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
         script-src 'nonce-{nonce}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    );
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Base, Self::Rejection> {
        Ok(Base::of_request(
            parts.extensions.get::<OriginalUri>(),
            &parts.uri,
        ))
    }
}

async fn queues(State(shared): State<Arc<Shared>>, base: Base) -> Result<Response, Failure> {
    let stats = shared.client.queue_stats().await?;
    let minutes = shared.client.throughput(Duration::from_secs(3600)).await?;
    Ok(html(|nonce| {
        pages::queues(&base, &shared.keys.csrf, nonce, &stats, &minutes)
    }))
}

fn page(before: Option<i64>) -> Page {
    match before {
        Some(id) => Page::after(JobId::from(id), PAGE),
        None => Page::first(PAGE),
    }
    .newest_first()
}

async fn jobs(
    State(shared): State<Arc<Shared>>,
    base: Base,
    Query(query): Query<JobsQuery>,
) -> Result<Response, Failure> {
    let mut filter = JobFilter::all();
    if let Some(state) = query.state() {
        let state: JobState = state
            .parse()
            .map_err(|_| Failure::NotFound(format!("no state `{state}`")))?;
        filter = filter.state(state);
    }
    if let Some(kind) = query.kind() {
        filter = filter.kind(kind);
    }
    if let Some(queue) = query.queue() {
        filter = filter.queue(queue);
    }
    let jobs = shared.client.jobs(&filter, page(query.before)).await?;
    Ok(html(|nonce| pages::jobs(&base, nonce, &query, &jobs, PAGE)))
}

async fn job(
    State(shared): State<Arc<Shared>>,
    base: Base,
    Path(id): Path<i64>,
) -> Result<Response, Failure> {
    let Some(job) = shared.client.job(JobId::from(id)).await? else {
        return Err(Failure::NotFound(format!("no job {id}")));
    };
    Ok(html(|nonce| {
        pages::job(&base, &shared.keys.csrf, nonce, &job)
    }))
}

#[derive(Deserialize, Default)]
struct DeadQuery {
    before: Option<i64>,
    /// How many the last Retry all left dead.
    skipped: Option<u64>,
}

async fn dead(
    State(shared): State<Arc<Shared>>,
    base: Base,
    Query(query): Query<DeadQuery>,
) -> Result<Response, Failure> {
    let all = DeadFilter::all();
    let jobs = shared.client.dead_jobs(&all, page(query.before)).await?;
    let total = shared
        .client
        .count(&JobFilter::all().state(JobState::Dead))
        .await?;
    Ok(html(|nonce| {
        pages::dead(
            &base,
            &shared.keys.csrf,
            nonce,
            &jobs,
            total,
            PAGE,
            query.skipped,
        )
    }))
}

async fn schedules(State(shared): State<Arc<Shared>>, base: Base) -> Result<Response, Failure> {
    let schedules = shared.client.schedules().await?;
    Ok(html(|nonce| pages::schedules(&base, nonce, &schedules)))
}

/// Every action's form: the CSRF token.
#[derive(Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
}

/// An action that may run: it carries the dashboard's CSRF token and does not come from
/// another site (extracted last, as it reads the form); it answers with a redirect under the
/// dashboard's base.
struct Checked(Base);

impl FromRequest<Arc<Shared>> for Checked {
    type Rejection = Failure;

    async fn from_request(request: Request, shared: &Arc<Shared>) -> Result<Checked, Failure> {
        let base = Base::of_request(request.extensions().get::<OriginalUri>(), request.uri());
        let headers = request.headers().clone();
        let Form(form) = Form::<ActionForm>::from_request(request, shared)
            .await
            .map_err(|_| Failure::Forbidden)?;
        if action_allowed(shared, &headers, &form.csrf) {
            Ok(Checked(base))
        } else {
            Err(Failure::Forbidden)
        }
    }
}

impl Checked {
    /// Sends the browser to `to`, under the dashboard's base.
    fn back(&self, to: &str) -> Response {
        Redirect::to(&self.0.at(to)).into_response()
    }
}

type Done = Result<Response, Failure>;

async fn pause(State(shared): State<Arc<Shared>>, Path(queue): Path<String>, act: Checked) -> Done {
    shared.client.pause_queue(&queue).await?;
    Ok(act.back("/"))
}

async fn resume(
    State(shared): State<Arc<Shared>>,
    Path(queue): Path<String>,
    act: Checked,
) -> Done {
    shared.client.resume_queue(&queue).await?;
    Ok(act.back("/"))
}

async fn cancel(State(shared): State<Arc<Shared>>, Path(id): Path<i64>, act: Checked) -> Done {
    shared.client.cancel(JobId::from(id)).await?;
    Ok(act.back(&format!("/jobs/{id}")))
}

async fn retry(State(shared): State<Arc<Shared>>, Path(id): Path<i64>, act: Checked) -> Done {
    shared.client.retry_dead(JobId::from(id)).await?;
    Ok(act.back(&format!("/jobs/{id}")))
}

async fn delete(State(shared): State<Arc<Shared>>, Path(id): Path<i64>, act: Checked) -> Done {
    shared.client.delete_dead(JobId::from(id)).await?;
    Ok(act.back("/dead"))
}

async fn retry_all(State(shared): State<Arc<Shared>>, act: Checked) -> Done {
    let done = shared.client.retry_all_dead(&DeadFilter::all()).await?;
    // The dead page says how many were left dead, and why.
    Ok(act.back(&format!("/dead?skipped={}", done.skipped)))
}

async fn delete_all(State(shared): State<Arc<Shared>>, act: Checked) -> Done {
    shared.client.delete_all_dead(&DeadFilter::all()).await?;
    Ok(act.back("/dead"))
}
