//! Who may see the dashboard: a token or basic-auth credentials on every request, and a CSRF
//! token on every action.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::Shared;

/// The shortest token or basic-auth password the dashboard accepts.
pub const MIN_SECRET_LEN: usize = 16;

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

impl Auth {
    /// Refuses credentials too weak to protect anything: an empty or short token or
    /// password, an empty user name.
    pub(crate) fn check(&self) -> Result<(), InvalidAuth> {
        let short = |what: &'static str, secret: &str| {
            let len = secret.chars().count();
            (len < MIN_SECRET_LEN).then(|| {
                InvalidAuth(format!(
                "the dashboard's {what} is {len} characters long; use at least {MIN_SECRET_LEN} \
                 (for example `openssl rand -hex 16`)"
            ))
            })
        };
        let refused = match self {
            Auth::Token(token) => short("token", token.trim()),
            Auth::Basic { user, .. } if user.trim().is_empty() || user.contains(':') => {
                Some(InvalidAuth(format!(
                    "the dashboard's basic-auth user name `{user}` is empty or holds `:`; give a \
                     user name, and a password of at least {MIN_SECRET_LEN} characters"
                )))
            }
            Auth::Basic { password, .. } => short("password", password.trim()),
            Auth::TrustedNetwork => None,
        };
        refused.map_or(Ok(()), Err)
    }

    /// The secret every derived value comes from, if there is one.
    fn secret(&self) -> Option<String> {
        match self {
            Auth::Token(token) => Some(token.clone()),
            Auth::Basic { user, password } => Some(format!("{user}:{password}")),
            Auth::TrustedNetwork => None,
        }
    }
}

/// Credentials too weak to protect anything: the dashboard refuses to start with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidAuth(String);

impl std::fmt::Display for InvalidAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidAuth {}

/// Values derived from the secret (HMAC-SHA256, each for its own purpose), so that nothing the
/// browser holds reveals the secret, no server state is kept, and replicas that share the
/// secret agree.
pub(crate) struct Keys {
    /// The session cookie's value, once a token was given in the address.
    pub(crate) session: String,
    /// The token every form carries and every action checks.
    pub(crate) csrf: String,
}

impl Keys {
    pub(crate) fn of(auth: &Auth) -> Keys {
        match auth.secret() {
            Some(secret) => Keys {
                session: derive(&secret, "errand dashboard session v1"),
                csrf: derive(&secret, "errand dashboard csrf v1"),
            },
            // No secret (a trusted network): the CSRF token is random per process, so
            // replicas refuse each other's forms (reload the page).
            None => Keys {
                session: String::new(),
                csrf: random_token(),
            },
        }
    }
}

/// HMAC-SHA256 of `purpose` under `secret`, in hex.
fn derive(secret: &str, purpose: &str) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return random_token();
    };
    mac.update(purpose.as_bytes());
    hex::encode(mac.finalize().into_bytes())
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

/// The session cookie's name: `errand_session_` and a hash of the host (with its port) and
/// the dashboard's path, so that two dashboards on one host keep a cookie each.
fn cookie_name(headers: &HeaderMap, base: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let digest = Sha256::digest(format!("{host}{base}").as_bytes());
    format!("errand_session_{}", hex::encode(&digest[..6]))
}

/// Whether the request came over HTTPS, as a proxy in front says.
fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// Lets a request through with the right credentials; answers 401 otherwise.
pub(crate) async fn require(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let original = request.extensions().get::<axum::extract::OriginalUri>();
    let base = crate::pages::Base::of_request(original, request.uri()).0;
    let session = cookie_name(headers, &base);
    let allowed = match &shared.auth {
        Auth::TrustedNetwork => true,
        Auth::Token(token) => {
            if let Some(given) = query_token(request.uri().query()) {
                if given.is_empty() || !same(&given, token) {
                    return unauthorized(&shared.auth);
                }
                // Back to the page asked for, with its other parameters: a path on the
                // dashboard, whatever the address held.
                let rest: Vec<&str> = request
                    .uri()
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .filter(|pair| !pair.is_empty() && !pair.starts_with("token="))
                    .collect();
                let page = request.uri().path().trim_start_matches(['/', '\\']);
                let mut back = match (base.is_empty(), page.is_empty()) {
                    (true, true) => "/".to_owned(),
                    // The dashboard's root, as axum routes a nested router's.
                    (false, true) => base.clone(),
                    _ => format!("{base}/{page}"),
                };
                if !rest.is_empty() {
                    back = format!("{back}?{}", rest.join("&"));
                }
                let scope = if base.is_empty() { "/" } else { &base };
                let secure = shared.secure_cookies || over_https(headers);
                return remember(&back, &session, scope, &shared.keys.session, secure);
            }
            bearer(headers).is_some_and(|t| !t.is_empty() && same(t, token))
                || cookie(headers, &session)
                    .is_some_and(|c| !c.is_empty() && same(c, &shared.keys.session))
        }
        Auth::Basic { user, password } => basic(headers).is_some_and(|(u, p)| {
            !u.is_empty() && !p.is_empty() && same(&u, user) & same(&p, password)
        }),
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
    // Pages show job arguments: never kept by a browser or a proxy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
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

/// The token was right: keep the session (derived from it) in a cookie, and take the token
/// out of the address.
fn remember(back: &str, name: &str, scope: &str, session: &str, secure: bool) -> Response {
    let mut response = Redirect::to(back).into_response();
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{name}={session}; Path={scope}; HttpOnly; SameSite=Strict{secure}");
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

fn cookie<'h>(headers: &'h HeaderMap, wanted: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
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
/// come from another site: as `Sec-Fetch-Site` says, or, from a browser that does not send
/// it, as `Origin` says (another host than the one asked, or `null`).
pub(crate) fn action_allowed(shared: &Shared, headers: &HeaderMap, csrf: &str) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let cross_site = match text("sec-fetch-site") {
        Some(site) => site == "cross-site",
        None => text("origin").is_some_and(|origin| {
            let from = origin.split_once("://").map_or(origin, |(_, host)| host);
            Some(from) != text("host")
        }),
    };
    let expected = &shared.keys.csrf;
    !cross_site && !expected.is_empty() && same(csrf, expected)
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
