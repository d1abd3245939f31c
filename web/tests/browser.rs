//! The dashboard in a real browser (headless Chromium through chromedriver, driven by
//! fantoccini), and over plain HTTP: credentials on every route, CSRF on every action, job
//! values rendered inert, and the actions reaching the database.
//!
//! Screenshots of each page are saved under `target/tmp/screenshots/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use errand::{Client, JobId, JobState};
use errand_tests::common::{job, postgres, sqlite, tag, wait_for, worker, TestStore};
use errand_tests::jobs::{broken, in_first, succeed, undo_step};
use errand_web::Auth;
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "test-token-0123456789";
const INJECTED: &str = "stuck<script>document.title='pwned';window.pwned=1</script>";

/// Jobs in several states: completed, dead (one whose arguments and error carry a script),
/// and waiting in `first`.
struct Filled {
    dead: JobId,
    injected: JobId,
    waiting: JobId,
}

async fn fill(client: &Client) -> Filled {
    let t = tag("web");
    for _ in 0..3 {
        succeed::with(t.clone()).enqueue(client).await.unwrap();
    }
    let dead = broken::with(t.clone()).enqueue(client).await.unwrap().id;
    let injected = undo_step::with(t.clone(), INJECTED.to_owned(), true)
        .queue("default")
        .tags(["<b>bold</b>"])
        .enqueue(client)
        .await
        .unwrap()
        .id;
    let waiting = in_first::with(t, "w".into())
        .enqueue(client)
        .await
        .unwrap()
        .id;
    worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(job(client, dead).await.state, JobState::Dead);
    assert_eq!(job(client, injected).await.state, JobState::Dead);
    Filled {
        dead,
        injected,
        waiting,
    }
}

/// Serves the dashboard for `client` under `/errand` in an app of its own, on a free port.
async fn serve(client: Client, auth: Auth) -> SocketAddr {
    let dashboard = errand_web::router(client, auth).expect("credentials the dashboard accepts");
    let app = axum::Router::new().nest("/errand", dashboard);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// One HTTP/1.1 request; the status code and the whole response.
async fn http(address: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

fn get(path: &str, auth: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\r\n")
}

fn post(path: &str, auth: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const BEARER: &str = "Authorization: Bearer test-token-0123456789\r\n";

/// Over plain HTTP: every route asks for credentials, actions need the page's CSRF token,
/// and what a job carries is escaped.
async fn credentials_csrf_and_escaping(store: TestStore) {
    let client = &store.client;
    let filled = fill(client).await;
    let address = serve(client.clone(), Auth::token(TOKEN)).await;
    let routes = [
        "/errand".to_owned(),
        "/errand/jobs".to_owned(),
        format!("/errand/jobs/{}", filled.dead),
        "/errand/dead".to_owned(),
        "/errand/schedules".to_owned(),
    ];
    for route in &routes {
        let (status, _) = http(address, &get(route, "")).await;
        assert_eq!(status, 401, "{route} without credentials");
        let wrong = "Authorization: Bearer not-the-token\r\n";
        assert_eq!(http(address, &get(route, wrong)).await.0, 401, "{route}");
        let (status, page) = http(address, &get(route, BEARER)).await;
        assert_eq!(status, 200, "{route}: {page}");
        assert!(page.contains("content-security-policy"), "{route}");
    }
    // A token in the address becomes a cookie scoped to the dashboard, and the page's other
    // parameters are kept.
    let (status, response) = http(
        address,
        &get(&format!("/errand/jobs?state=dead&token={TOKEN}"), ""),
    )
    .await;
    assert_eq!(status, 303, "{response}");
    assert!(
        response.contains("location: /errand/jobs?state=dead\r\n"),
        "{response}"
    );
    let cookie = session_cookie(&response);
    assert_eq!(
        http(address, &get("/errand/jobs?state=dead", &cookie))
            .await
            .0,
        200
    );
    let wrong = http(address, &get("/errand/jobs?token=nope", "")).await;
    assert_eq!(wrong.0, 401);
    for action in [
        format!("/errand/jobs/{}/retry", filled.dead),
        "/errand/dead/retry-all".to_owned(),
        "/errand/queues/first/pause".to_owned(),
    ] {
        assert_eq!(http(address, &post(&action, "", "csrf=x")).await.0, 401);
        // Credentials without the page's token: refused, and nothing changes.
        let (status, body) = http(address, &post(&action, BEARER, "csrf=guess")).await;
        assert_eq!(status, 403, "{action}: {body}");
    }
    assert_eq!(job(client, filled.dead).await.state, JobState::Dead);
    assert!(!client.queue_stats().await.unwrap().iter().any(|q| q.paused));
    // With the token from the page, the action runs.
    let (_, page) = http(
        address,
        &get(&format!("/errand/jobs/{}", filled.dead), BEARER),
    )
    .await;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's forms carry the CSRF token")
        .to_owned();
    let retry = format!("/errand/jobs/{}/retry", filled.dead);
    let (status, response) = http(address, &post(&retry, BEARER, &format!("csrf={csrf}"))).await;
    assert_eq!(status, 303, "{response}");
    assert!(response.contains(&format!("location: /errand/jobs/{}", filled.dead)));
    assert_eq!(job(client, filled.dead).await.state, JobState::Available);
    // A request another site made is refused even with the token.
    let cross = format!("{BEARER}Sec-Fetch-Site: cross-site\r\n");
    let pause = post(
        "/errand/queues/first/pause",
        &cross,
        &format!("csrf={csrf}"),
    );
    assert_eq!(http(address, &pause).await.0, 403);

    // Escaped: the script is text, in the arguments, the error and the tags.
    let (_, page) = http(
        address,
        &get(&format!("/errand/jobs/{}", filled.injected), BEARER),
    )
    .await;
    assert!(!page.contains("<script>document.title"), "{page}");
    assert!(page.contains("&lt;script&gt;document.title"), "{page}");
    assert!(page.contains("&lt;b&gt;bold&lt;/b&gt;"));
    let (_, listing) = http(address, &get("/errand/dead", BEARER)).await;
    assert!(!listing.contains("<script>document.title"));
    // Basic authentication asks the browser for credentials.
    let basic = serve(client.clone(), Auth::basic("ops", "correct-horse-battery")).await;
    let (status, response) = http(basic, &get("/errand", "")).await;
    assert_eq!(status, 401);
    assert!(response.to_lowercase().contains("www-authenticate: basic"));
    let ok = "Authorization: Basic b3BzOmNvcnJlY3QtaG9yc2UtYmF0dGVyeQ==\r\n"; // ops:correct-horse-battery
    assert_eq!(http(basic, &get("/errand", ok)).await.0, 200);
    let _ = filled.waiting;
}

/// The session cookie a token login set, as a `Cookie:` header line; checks its attributes
/// (never the token itself, scoped to the dashboard's path).
fn session_cookie(response: &str) -> String {
    let line = response
        .lines()
        .find(|l| l.to_lowercase().starts_with("set-cookie: errand_session_"))
        .unwrap_or_else(|| panic!("no session cookie: {response}"));
    assert!(
        !line.contains(TOKEN),
        "the cookie carries the token: {line}"
    );
    assert!(
        line.ends_with("; Path=/errand; HttpOnly; SameSite=Strict"),
        "{line}"
    );
    let pair = line["set-cookie: ".len()..].split(';').next().unwrap();
    format!("Cookie: {pair}\r\n")
}

/// The page's CSRF token, read from any page with a form.
async fn csrf_of(address: SocketAddr, path: &str) -> String {
    let (_, page) = http(address, &get(path, BEARER)).await;
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's forms carry the CSRF token")
        .to_owned()
}

/// "Retry all" leaves a saga's undone step dead and says how many it skipped; retrying that
/// step alone is refused with the reason (409).
async fn retry_all_skips_what_a_saga_undid(store: TestStore) {
    let client = &store.client;
    let ship = errand_tests::common::undone_saga(client).await;
    let address = serve(client.clone(), Auth::token(TOKEN)).await;
    let csrf = csrf_of(address, "/errand/dead").await;
    let (status, response) = http(
        address,
        &post("/errand/dead/retry-all", BEARER, &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status, 303, "{response}");
    assert!(
        response.contains("location: /errand/dead?skipped=1\r\n"),
        "{response}"
    );
    let (_, page) = http(address, &get("/errand/dead?skipped=1", BEARER)).await;
    assert!(page.contains("1 skipped by Retry all"), "{page}");
    assert_eq!(job(client, ship).await.state, JobState::Dead);
    let retry = format!("/errand/jobs/{ship}/retry");
    let (status, response) = http(address, &post(&retry, BEARER, &format!("csrf={csrf}"))).await;
    assert_eq!(status, 409, "{response}");
    assert!(
        response.contains(&format!(
            "job {ship} is not retried: it is step `saga_step#2` of saga"
        )),
        "{response}"
    );
    assert_eq!(job(client, ship).await.state, JobState::Dead);
}

/// What an attacker tries: empty and short secrets, a stolen cookie, forms from another site,
/// a cached page, a redirect off the site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_finds_no_way_in() {
    let store = sqlite().await;
    let client = &store.client;
    let filled = fill(client).await;

    // Empty or short secrets: the dashboard does not start, and says the minimum.
    for auth in [
        Auth::token(""),
        Auth::token("t0ken"),
        Auth::basic("", "correct-horse-battery"),
        Auth::basic("ops", ""),
        Auth::basic(":", ":"),
    ] {
        let err = errand_web::router(client.clone(), auth).expect_err("refused");
        assert!(err.to_string().contains("at least 16"), "{err}");
    }

    let address = serve(client.clone(), Auth::token(TOKEN)).await;
    // An empty credential never passes.
    assert_eq!(http(address, &get("/errand/jobs?token=", "")).await.0, 401);
    assert_eq!(
        http(address, &get("/errand/jobs", "Authorization: Bearer \r\n"))
            .await
            .0,
        401
    );
    assert_eq!(
        http(
            address,
            &get("/errand/jobs", "Cookie: errand_session_0=\r\n")
        )
        .await
        .0,
        401
    );

    // The cookie holds a value derived from the token, not the token; it is Secure behind
    // HTTPS; it opens the dashboard.
    let (_, login) = http(address, &get(&format!("/errand?token={TOKEN}"), "")).await;
    let cookie = session_cookie(&login);
    assert_eq!(http(address, &get("/errand/jobs", &cookie)).await.0, 200);
    let (_, secure) = http(
        address,
        &get(
            &format!("/errand?token={TOKEN}"),
            "X-Forwarded-Proto: https\r\n",
        ),
    )
    .await;
    assert!(
        secure.contains("; Path=/errand; HttpOnly; SameSite=Strict; Secure"),
        "{secure}"
    );
    // Pages that show arguments are not cached.
    let (_, page) = http(
        address,
        &get(&format!("/errand/jobs/{}", filled.dead), BEARER),
    )
    .await;
    assert!(page.contains("cache-control: no-store"), "{page}");

    // Two replicas with one secret accept each other's forms.
    let replica = serve(client.clone(), Auth::token(TOKEN)).await;
    let csrf = csrf_of(address, "/errand/dead").await;
    let pause = format!("csrf={csrf}");
    let (status, body) = http(replica, &post("/errand/queues/first/pause", BEARER, &pause)).await;
    assert_eq!(status, 303, "{body}");
    assert!(client
        .queue_stats()
        .await
        .unwrap()
        .iter()
        .any(|q| q.queue == "first" && q.paused));
    // A form posted from another site, told by its Origin when Sec-Fetch-Site is absent.
    let evil = format!("{BEARER}Origin: https://evil.example\r\n");
    let resume = post("/errand/queues/first/resume", &evil, &pause);
    assert_eq!(http(address, &resume).await.0, 403);
    let own = format!("{BEARER}Origin: http://localhost\r\n");
    let resume = post("/errand/queues/first/resume", &own, &pause);
    assert_eq!(http(address, &resume).await.0, 303);

    // The token login redirects only to a path on the dashboard, never off the site.
    let alone = errand_web::router(client.clone(), Auth::token(TOKEN)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, alone).await });
    for path in ["//evil.example/", "/\\evil.example/", "///evil.example/x"] {
        let (status, response) = http(bare, &get(&format!("{path}?token={TOKEN}"), "")).await;
        assert_eq!(status, 303, "{path}: {response}");
        let location = response
            .lines()
            .find_map(|l| l.strip_prefix("location: "))
            .unwrap_or_else(|| panic!("{path}: {response}"));
        assert!(
            location.starts_with('/')
                && !location.starts_with("//")
                && !location.starts_with("/\\"),
            "{path} redirects to {location}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_retry_all_skips_what_a_saga_undid() {
    retry_all_skips_what_a_saga_undid(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_retry_all_skips_what_a_saga_undid() {
    if let Some(store) = postgres().await {
        retry_all_skips_what_a_saga_undid(store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_credentials_csrf_and_escaping() {
    credentials_csrf_and_escaping(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_credentials_csrf_and_escaping() {
    if let Some(store) = postgres().await {
        credentials_csrf_and_escaping(store).await;
    }
}

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

async fn chromedriver() -> Option<Driver> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromedriver"]
        .iter()
        .all(|p| std::path::Path::new(p).exists());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs Chromium and chromedriver (Debian's chromium and chromium-driver)"
        );
        eprintln!("SKIPPED (browser): no /usr/bin/chromium or /usr/bin/chromedriver");
        return None;
    }
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let child = tokio::process::Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    wait_for("chromedriver to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    Some(Driver { child, url })
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shoot(browser: &fantoccini::Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// In Chromium: the queues page, a dead job opened from the dead set and retried with its
/// button (and the database agrees), a confirmation before deleting them all, and an
/// injected script that never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_a_dead_job_in_a_browser() {
    let Some(driver) = chromedriver().await else {
        return;
    };
    let store = sqlite().await;
    let client = &store.client;
    let filled = fill(client).await;
    let address = serve(client.clone(), Auth::token(TOKEN)).await;
    let base = format!("http://{address}/errand");

    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,900",
            ],
        }
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object literal")
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");

    // Without credentials: 401.
    browser.goto(&base).await.unwrap();
    let text = browser
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("401"), "{text}");
    // The token once in the address; then a cookie carries it.
    browser
        .goto(&format!("{base}?token={TOKEN}"))
        .await
        .unwrap();
    assert_eq!(browser.current_url().await.unwrap().path(), "/errand");
    let queues = browser
        .find(Locator::Css("table"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        queues.contains("default") && queues.contains("first"),
        "{queues}"
    );
    shoot(&browser, "queues").await;
    browser.goto(&format!("{base}/jobs")).await.unwrap();
    shoot(&browser, "jobs").await;
    browser.goto(&format!("{base}/schedules")).await.unwrap();
    shoot(&browser, "schedules").await;

    // The dead set; open the dead job, retry it with its button.
    browser.goto(&format!("{base}/dead")).await.unwrap();
    shoot(&browser, "dead").await;
    browser
        .find(Locator::Css(&format!("a[href$='/jobs/{}']", filled.dead)))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with(&format!("/jobs/{}", filled.dead)));
    shoot(&browser, "job").await;
    browser
        .find(Locator::Css("form[action$='/retry'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for("the retry to reach the database", || async {
        job(client, filled.dead).await.state == JobState::Available
    })
    .await;

    // The injected script is shown, not run.
    browser
        .goto(&format!("{base}/jobs/{}", filled.injected))
        .await
        .unwrap();
    let ran = browser
        .execute(
            "return [document.title, window.pwned === undefined];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(ran[1], json!(true), "the injected script ran: {ran}");
    assert_ne!(ran[0], json!("pwned"));
    let args = browser
        .find(Locator::Css("pre.args"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(args.contains("<script>document.title"), "{args}");
    shoot(&browser, "job-with-script").await;

    // Delete all asks first; dismissed, nothing goes; accepted, the dead set is empty.
    browser.goto(&format!("{base}/dead")).await.unwrap();
    let delete_all = "form[action$='/dead/delete-all'] button";
    browser
        .find(Locator::Css(delete_all))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let question = browser.get_alert_text().await.unwrap();
    assert!(
        question.starts_with("Delete all 1 dead jobs?"),
        "{question}"
    );
    browser.dismiss_alert().await.unwrap();
    assert_eq!(job(client, filled.injected).await.state, JobState::Dead);
    browser
        .find(Locator::Css(delete_all))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.accept_alert().await.unwrap();
    wait_for("the dead set to be deleted", || async {
        client.job(filled.injected).await.unwrap().is_none()
    })
    .await;
    assert_eq!(job(client, filled.waiting).await.state, JobState::Available);
    browser.close().await.unwrap();
    drop(driver.child);
}
