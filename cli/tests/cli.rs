//! The `errand` binary, run as a user runs it, against a real SQLite file and a real
//! PostgreSQL schema filled by errand's client and worker.

use std::process::Output;

use errand::{JobId, JobState};
use errand_tests::common::{job, postgres, sqlite, tag, worker, TestStore};
use errand_tests::jobs::{broken, in_first, succeed};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_errand");

/// Runs `errand` with `args` against `store`.
fn errand(store: &TestStore, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(BIN);
    command
        .env_remove("DATABASE_URL")
        .env_remove("ERRAND_SCHEMA");
    command
        .arg("--database-url")
        .arg(store.url.as_deref().unwrap());
    if let Some(schema) = &store.schema {
        command.arg("--schema").arg(schema);
    }
    command.args(args).output().expect("run errand")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `errand`, expecting exit code 0, and returns what it printed.
fn ok(store: &TestStore, args: &[&str]) -> String {
    let output = errand(store, args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "errand {args:?}: {}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

fn json(store: &TestStore, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&ok(store, &args)).expect("errand --json prints JSON")
}

/// A completed job, a dead one and one waiting in the queue `first`, which no worker takes.
async fn fill(store: &TestStore) -> (JobId, JobId, JobId) {
    let client = &store.client;
    let t = tag("cli");
    let done = succeed::with(t.clone()).enqueue(client).await.unwrap().id;
    let dead = broken::with(t.clone()).enqueue(client).await.unwrap().id;
    let waiting = in_first::with(t, "w".into())
        .enqueue(client)
        .await
        .unwrap()
        .id;
    worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(job(client, dead).await.state, JobState::Dead);
    (done, dead, waiting)
}

async fn the_commands_read_and_act_on_the_store(store: TestStore) {
    let client = &store.client;
    let (done, dead, waiting) = fill(&store).await;

    // queues: a table for people, JSON for scripts.
    let table = ok(&store, &["queues"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("QUEUE") && header.contains("DEAD"),
        "{table}"
    );
    let default = table.lines().find(|l| l.starts_with("default")).unwrap();
    let first = table.lines().find(|l| l.starts_with("first")).unwrap();
    // Aligned: each column starts at the same place on every line.
    let dead_column = header.find("DEAD").unwrap();
    assert!(default[dead_column..].starts_with("1 "), "{table}");
    assert!(first[dead_column..].starts_with("0 "), "{table}");
    let queues = json(&store, &["queues"]);
    let of = |name: &str| {
        queues
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(of("default")["counts"]["completed"], 1);
    assert_eq!(of("default")["counts"]["dead"], 1);
    assert_eq!(of("first")["counts"]["available"], 1);
    assert!(of("first")["oldest_available_seconds"].as_f64().unwrap() >= 0.0);
    assert!(first.contains(" no"), "{first}");

    // jobs, filtered.
    let dead_jobs = json(
        &store,
        &[
            "jobs", "--state", "dead", "--kind", "broken", "--since", "1h",
        ],
    );
    let ids: Vec<i64> = dead_jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [dead.get()]);
    assert_eq!(
        dead_jobs[0]["errors"][0]["message"],
        "broken: the card was declined"
    );
    let listing = ok(&store, &["jobs", "--limit", "2"]);
    assert_eq!(
        listing.lines().count(),
        3,
        "a heading and two jobs: {listing}"
    );
    assert!(listing
        .lines()
        .nth(1)
        .unwrap()
        .starts_with(&waiting.to_string()));

    // job ID: arguments, key, every attempt's error.
    let detail = ok(&store, &["job", &dead.to_string()]);
    assert!(detail.contains("state      dead"), "{detail}");
    assert!(detail.contains("\"tag\": \"cli-"), "{detail}");
    assert!(detail.contains("(permanent, after"), "{detail}");
    assert!(detail.contains("broken: the card was declined"), "{detail}");
    let missing = errand(&store, &["job", "999999"]);
    assert_eq!(missing.status.code(), Some(4));
    assert!(stderr(&missing).contains("no job 999999"));

    // retry: a dead job comes back; a completed one is refused, by name.
    ok(&store, &["retry", &dead.to_string()]);
    assert_eq!(job(client, dead).await.state, JobState::Available);
    let refused = errand(&store, &["retry", &done.to_string()]);
    assert_eq!(refused.status.code(), Some(4));
    assert!(
        stderr(&refused).contains(&format!(
            "job {done} was not retried: it is completed, not dead"
        )),
        "{}",
        stderr(&refused)
    );
    worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(
        ok(&store, &["retry", "--dead", "--kind", "broken"]).trim(),
        "1 dead jobs retried"
    );
    assert_eq!(job(client, dead).await.state, JobState::Available);

    // cancel, pause, resume.
    assert_eq!(
        ok(&store, &["cancel", &waiting.to_string()]).trim(),
        format!("job {waiting}: cancelled")
    );
    assert_eq!(job(client, waiting).await.state, JobState::Cancelled);
    assert_eq!(errand(&store, &["cancel", "999999"]).status.code(), Some(4));
    assert_eq!(
        ok(&store, &["pause", "first"]).trim(),
        "queue first: paused"
    );
    let paused = client.queue_stats().await.unwrap();
    assert!(paused.iter().any(|q| q.queue == "first" && q.paused));
    assert_eq!(
        ok(&store, &["resume", "first"]).trim(),
        "queue first: running"
    );
    assert_eq!(
        ok(&store, &["resume", "first"]).trim(),
        "queue first: already running"
    );

    // delete the dead set, prune what is finished.
    worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(json(&store, &["delete", "--dead"])["deleted"], 1);
    assert!(client.job(dead).await.unwrap().is_none());
    let pruned = json(&store, &["prune", "--keep-finished", "0s"]);
    assert!(pruned["deleted"].as_u64().unwrap() >= 2, "{pruned}");
    assert!(client.job(done).await.unwrap().is_none());
}

async fn missing_tables_and_bad_urls_are_named(store: TestStore) {
    // migrate --print: the store's SQL, without touching it.
    let printed = ok(&store, &["migrate", "--print"]);
    assert!(
        printed.starts_with("-- migration 1 (0001_jobs)"),
        "{printed}"
    );
    assert!(printed.contains("CREATE TABLE"));
    // No URL is bad usage.
    let none = std::process::Command::new(BIN)
        .env_remove("DATABASE_URL")
        .arg("queues")
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(stderr(&none).contains("pass --database-url or set DATABASE_URL"));
    // An unknown scheme.
    let bad = std::process::Command::new(BIN)
        .args(["--database-url", "mysql://root@localhost/db", "queues"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("mysql://root@localhost/db"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commands() {
    the_commands_read_and_act_on_the_store(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commands() {
    if let Some(store) = postgres().await {
        the_commands_read_and_act_on_the_store(store).await;
    }
}

/// A saga whose second step died and was undone: `retry --dead` skips the step and says how
/// many it skipped; `retry ID` refuses it, with the reason and exit code 4.
async fn retries_skip_what_a_saga_undid(store: TestStore) {
    let client = &store.client;
    let ship = errand_tests::common::undone_saga(client).await;
    let out = ok(&store, &["retry", "--dead"]);
    assert!(out.contains("0 dead jobs retried"), "{out}");
    assert!(out.contains("1 skipped: their death was acted on"), "{out}");
    assert_eq!(
        json(&store, &["retry", "--dead"]),
        serde_json::json!({"retried": 0, "skipped": 1})
    );
    let refused = errand(&store, &["retry", &ship.to_string()]);
    assert_eq!(refused.status.code(), Some(4));
    let why = stderr(&refused);
    assert!(
        why.contains(&format!(
            "job {ship} was not retried: it is step `saga_step#2` of saga"
        )),
        "{why}"
    );
    assert_eq!(job(client, ship).await.state, JobState::Dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_retries_skip_what_a_saga_undid() {
    retries_skip_what_a_saga_undid(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_retries_skip_what_a_saga_undid() {
    if let Some(store) = postgres().await {
        retries_skip_what_a_saga_undid(store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_errors() {
    missing_tables_and_bad_urls_are_named(sqlite().await).await;
    // A file that does not exist is not created behind the user's back.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.db");
    let url = format!("sqlite://{}", path.display());
    let missing = std::process::Command::new(BIN)
        .args(["--database-url", &url, "queues"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(3));
    assert!(
        stderr(&missing).contains("no database at"),
        "{}",
        stderr(&missing)
    );
    assert!(!path.exists());
    // migrate creates it; then it answers.
    let migrated = std::process::Command::new(BIN)
        .args(["--database-url", &url, "migrate"])
        .output()
        .unwrap();
    assert_eq!(migrated.status.code(), Some(0), "{}", stderr(&migrated));
    let latest = errand::migrations::SQLITE.last().unwrap().version;
    assert_eq!(
        stdout(&migrated).trim(),
        format!("errand's tables are at version {latest}")
    );
    let empty = std::process::Command::new(BIN)
        .args(["--database-url", &url, "queues"])
        .output()
        .unwrap();
    assert_eq!(stdout(&empty).trim(), "no queues have jobs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_errors() {
    let Some(store) = postgres().await else {
        return;
    };
    missing_tables_and_bad_urls_are_named(store).await;
    // A schema without errand's tables.
    let url = errand_tests::common::postgres_url();
    let absent = std::process::Command::new(BIN)
        .args([
            "--database-url",
            &url,
            "--schema",
            "no_errand_here",
            "queues",
        ])
        .output()
        .unwrap();
    assert_eq!(absent.status.code(), Some(3), "{}", stderr(&absent));
    assert!(
        stderr(&absent).contains("no errand tables")
            && stderr(&absent).contains("schema `no_errand_here`"),
        "{}",
        stderr(&absent)
    );
    // A server that does not answer.
    let refused = std::process::Command::new(BIN)
        .args(["--database-url", "postgres://app@127.0.0.1:1/db", "queues"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("cannot connect"),
        "{}",
        stderr(&refused)
    );
}

/// `errand web` serves the dashboard with the credentials it was given, and refuses to start
/// without any unless told the network is trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_serves_the_dashboard_behind_a_token() {
    let store = sqlite().await;
    let url = store.url.clone().unwrap();
    let refused = std::process::Command::new(BIN)
        .args(["--database-url", &url, "web", "--listen", "127.0.0.1:0"])
        .env_remove("ERRAND_WEB_TOKEN")
        .env_remove("ERRAND_WEB_BASIC")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("the dashboard needs credentials"));
    // Empty and short secrets: refused, saying the minimum.
    for args in [
        &["--token", ""][..],
        &["--token", "t0ken"],
        &["--basic", ":"],
    ] {
        let weak = std::process::Command::new(BIN)
            .args(["--database-url", &url, "web", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("ERRAND_WEB_TOKEN")
            .env_remove("ERRAND_WEB_BASIC")
            .output()
            .unwrap();
        assert_eq!(weak.status.code(), Some(2), "{args:?}");
        assert!(stderr(&weak).contains("at least 16"), "{}", stderr(&weak));
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    // The token from a file, not the command line.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "a-token-of-24-characters\n").unwrap();
    let server = tokio::process::Command::new(BIN)
        .args(["--database-url", &url, "web", "--listen", &listen])
        .arg("--token-file")
        .arg(&token_file)
        .env_remove("ERRAND_WEB_TOKEN")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    errand_tests::common::wait_for("the dashboard to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    let status = |auth: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let request = format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response.split_whitespace().nth(1).unwrap_or("").to_owned()
    };
    assert_eq!(status("").await, "401");
    assert_eq!(
        status("Authorization: Bearer a-token-of-24-characters\r\n").await,
        "200"
    );
    // SIGTERM, as a container runtime sends it: a graceful stop, exit code 0.
    let pid = server.id().expect("the server runs");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        server.wait_with_output(),
    )
    .await
    .expect("the dashboard stops on SIGTERM")
    .unwrap();
    assert_eq!(exit.status.code(), Some(0), "{exit:?}");
}
