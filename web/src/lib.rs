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
//!     errand_web::router(client.clone(), Auth::token(std::env::var("ERRAND_WEB_TOKEN")?))?,
//! );
//! // Or served alone:
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! - Every route asks for credentials ([`Auth`]): a token, or HTTP basic authentication, each
//!   secret at least [`MIN_SECRET_LEN`] characters (the dashboard refuses to start with a
//!   shorter one). [`Auth::TrustedNetwork`] turns that off, for a dashboard only a trusted
//!   network reaches, and must be chosen by name.
//! - A token given once in the address (`?token=`) becomes a session cookie whose value is
//!   derived from the token (an HMAC: the token cannot be read back from it, and no server
//!   state is kept), `HttpOnly`, `SameSite=Strict`, scoped to the dashboard's path, named
//!   per host, port and path (two dashboards on one host keep their own), and `Secure` behind
//!   HTTPS (`X-Forwarded-Proto: https`) or when told ([`Dashboard::secure_cookies`]).
//! - Actions that change anything are `POST` forms carrying a token derived from the secret
//!   (CSRF protection; replicas with one secret accept each other's forms); a request from
//!   another site (`Sec-Fetch-Site`, or its `Origin` where that header is absent) is refused.
//! - Pages are never cached (`Cache-Control: no-store`): they show job arguments.
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

pub use crate::auth::{Auth, InvalidAuth, MIN_SECRET_LEN};

/// The dashboard's router, asking for `auth` on every route: mount it with
/// [`Router::nest`] or serve it alone. See the [crate docs](crate). Refuses credentials too
/// weak to protect anything ([`InvalidAuth`]).
pub fn router(client: Client, auth: Auth) -> Result<Router, InvalidAuth> {
    Dashboard::new(client, auth).router()
}

/// The dashboard with settings beyond [`router`]'s.
///
/// ```no_run
/// # fn demo(client: errand::Client) -> Result<(), errand_web::InvalidAuth> {
/// use errand_web::{Auth, Dashboard};
/// let token = std::env::var("ERRAND_WEB_TOKEN").unwrap_or_default();
/// // Behind a proxy that terminates TLS but does not say so in `X-Forwarded-Proto`:
/// let app = Dashboard::new(client, Auth::token(token)).secure_cookies(true).router()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Dashboard {
    client: Client,
    auth: Auth,
    secure_cookies: bool,
}

impl Dashboard {
    /// The dashboard of `client`, asking for `auth` on every route.
    pub fn new(client: Client, auth: Auth) -> Dashboard {
        Dashboard {
            client,
            auth,
            secure_cookies: false,
        }
    }

    /// Marks the session cookie `Secure` on every response, not only those to requests that
    /// came over HTTPS (`X-Forwarded-Proto: https`).
    pub fn secure_cookies(mut self, secure: bool) -> Dashboard {
        self.secure_cookies = secure;
        self
    }

    /// The router; refuses credentials too weak to protect anything.
    pub fn router(self) -> Result<Router, InvalidAuth> {
        self.auth.check()?;
        let keys = auth::Keys::of(&self.auth);
        Ok(routes::router(Arc::new(Shared {
            client: self.client,
            auth: self.auth,
            keys,
            secure_cookies: self.secure_cookies,
        })))
    }
}

/// What every request shares.
pub(crate) struct Shared {
    pub client: Client,
    pub auth: Auth,
    /// The session cookie's value and the CSRF token, derived from the secret.
    pub keys: auth::Keys,
    /// Whether the session cookie is `Secure` whatever the request's scheme.
    pub secure_cookies: bool,
}
