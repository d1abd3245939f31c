//! errand's web dashboard: queues, jobs, the dead set and schedules, with the actions an
//! operator needs at 3 a.m. (retry, cancel, delete, pause, resume), for axum.
//!
//! ```no_run
//! # async fn demo(client: errand::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use errand_web::Auth;
//!
//! // Mounted in your own app, behind its own path:
//! let app = axum::Router::new().nest(
//!     "/errand",
//!     errand_web::router(client.clone(), Auth::token(std::env::var("ERRAND_WEB_TOKEN")?)),
//! );
//! // Or served alone:
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! - Every route asks for credentials ([`Auth`]): a token, or HTTP basic authentication.
//!   [`Auth::TrustedNetwork`] turns that off, for a dashboard only a trusted network reaches,
//!   and must be chosen by name.
//! - Actions that change anything are `POST` forms carrying a token only the dashboard's pages
//!   know (CSRF protection); a request from another site is refused.
//! - Every value from a job (arguments, errors, keys, kinds, tags) is escaped by the templates
//!   (maud), and the pages' Content-Security-Policy lets only the dashboard's own script run.
//! - Pages read through errand's query API only: keyset pages and index scans, never a scan
//!   of the table per request (the queues' counts are one grouped count).

mod auth;
mod pages;
mod routes;

use std::sync::Arc;

use axum::Router;
use errand::Client;

pub use crate::auth::Auth;

/// The dashboard's router, asking for `auth` on every route: mount it with
/// [`Router::nest`] or serve it alone. See the [crate docs](crate).
pub fn router(client: Client, auth: Auth) -> Router {
    let shared = Arc::new(Shared {
        client,
        auth,
        csrf: auth::random_token(),
    });
    routes::router(shared)
}

/// What every request shares.
pub(crate) struct Shared {
    pub client: Client,
    pub auth: Auth,
    /// The token every form carries and every action checks: random per process, so no other
    /// site can know it.
    pub csrf: String,
}
