//! Who may see the dashboard: a token or basic-auth credentials on every request, and a CSRF
//! token on every action.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;

use crate::Shared;

/// The credentials the dashboard asks for.
#[derive(Clone)]
pub enum Auth {
    /// A secret token, sent as `Authorization: Bearer <token>`; or, from a browser, once as
    /// `?token=<token>` in the address, after which an HTTP-only cookie carries it.
    Token(String),
    /// HTTP basic authentication: the browser asks for the user and password.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// No credentials at all: only for a dashboard that nothing but a trusted network can
    /// reach (behind a VPN, or an authenticating proxy).
    TrustedNetwork,
}

impl Auth {
    /// [`Auth::Token`].
    pub fn token(token: impl Into<String>) -> Auth {
        Auth::Token(token.into())
    }

    /// [`Auth::Basic`].
    pub fn basic(user: impl Into<String>, password: impl Into<String>) -> Auth {
        Auth::Basic {
            user: user.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.write_str(match self {
            Auth::Token(_) => "Auth::Token(..)",
            Auth::Basic { .. } => "Auth::Basic { .. }",
            Auth::TrustedNetwork => "Auth::TrustedNetwork",
        })
    }
}

/// The cookie a token is carried in once given in the address.
const COOKIE: &str = "errand_token";

/// Lets a request through with the right credentials; answers 401 otherwise.
pub(crate) async fn require(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let allowed = match &shared.auth {
        Auth::TrustedNetwork => true,
        Auth::Token(token) => {
            if let Some(given) = query_token(request.uri().query()) {
                if !same(&given, token) {
                    return unauthorized(&shared.auth);
                }
                // Back to the page asked for (under the path the dashboard is mounted at, with
                // its other parameters), the cookie scoped to the dashboard.
                let original = request.extensions().get::<axum::extract::OriginalUri>();
                let base = crate::pages::Base::of_request(original, request.uri()).0;
                let full = original
                    .map_or(request.uri().path(), |o| o.0.path())
                    .to_owned();
                let rest: Vec<&str> = request
                    .uri()
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .filter(|pair| !pair.is_empty() && !pair.starts_with("token="))
                    .collect();
                let back = if rest.is_empty() {
                    full.clone()
                } else {
                    format!("{full}?{}", rest.join("&"))
                };
                let scope = if base.is_empty() { "/" } else { &base };
                return remember(&back, scope, token);
            }
            bearer(headers).is_some_and(|t| same(t, token))
                || cookie(headers).is_some_and(|t| same(t, token))
        }
        Auth::Basic { user, password } => {
            basic(headers).is_some_and(|(u, p)| same(&u, user) & same(&p, password))
        }
    };
    if !allowed {
        return unauthorized(&shared.auth);
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn unauthorized(auth: &Auth) -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "401 Unauthorized: errand's dashboard needs credentials\n",
    )
        .into_response();
    if let Auth::Basic { .. } = auth {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"errand\", charset=\"UTF-8\""),
        );
    }
    response
}

/// The token was right: keep it in a cookie, and take it out of the address.
fn remember(back: &str, scope: &str, token: &str) -> Response {
    let mut response = Redirect::to(back).into_response();
    let cookie = format!("{COOKIE}={token}; Path={scope}; HttpOnly; SameSite=Strict");
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "token")
        .map(|(_, value)| percent_decode(value))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Whether `a` and `b` are equal, in time that does not depend on where they differ.
pub(crate) fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// 32 random bytes from the operating system, in hex.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // Without the operating system's randomness there is no secret to be had: a dashboard
    // that cannot make one refuses every action (an empty token never matches a form's).
    if getrandom::fill(&mut bytes).is_err() {
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether an action (a POST) may run: it carries the dashboard's CSRF token, and it does not
/// come from another site.
pub(crate) fn action_allowed(shared: &Shared, headers: &HeaderMap, csrf: &str) -> bool {
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "cross-site");
    !cross_site && !shared.csrf.is_empty() && same(csrf, &shared.csrf)
}

/// `%XX` and `+` decoded; what is not valid stays as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
