//! Real processes for tests about processes: worker processes to start, kill and stop, and
//! throwaway PostgreSQL servers to restart under them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// How to start a worker process.
#[derive(Clone)]
pub struct Options {
    pub lease: Duration,
    pub concurrency: usize,
    /// Record each death in the table `deaths`.
    pub record_deaths: bool,
    /// How long the death handler takes before it records the death.
    pub death_handler_delay: Duration,
    pub queue: Option<String>,
    /// A cron expression for the schedule `ticks` (see the worker binary).
    pub periodic: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lease: Duration::from_secs(30),
            concurrency: 8,
            record_deaths: false,
            death_handler_delay: Duration::ZERO,
            queue: None,
            periodic: None,
        }
    }
}

/// A running `errand-test-worker` process.
pub struct WorkerProcess {
    child: tokio::process::Child,
    pub pid: u32,
}

impl WorkerProcess {
    /// Starts a worker on `url` and `schema` and waits until it says it is ready.
    pub async fn start(bin: &str, url: &str, schema: &str, lease: Duration) -> WorkerProcess {
        WorkerProcess::start_with_concurrency(bin, url, schema, lease, 8).await
    }

    /// [`WorkerProcess::start`], with a death handler that records each death in `deaths`.
    pub async fn start_recording_deaths(bin: &str, url: &str, schema: &str) -> WorkerProcess {
        WorkerProcess::spawn(
            bin,
            url,
            schema,
            &Options {
                record_deaths: true,
                ..Options::default()
            },
        )
        .await
    }

    /// [`WorkerProcess::start`], working only `queue`, one job at a time.
    pub async fn start_on_queue(bin: &str, url: &str, schema: &str, queue: &str) -> WorkerProcess {
        let options = Options {
            queue: Some(queue.to_owned()),
            concurrency: 1,
            ..Options::default()
        };
        WorkerProcess::spawn(bin, url, schema, &options).await
    }

    /// [`WorkerProcess::start`], running at most `concurrency` jobs at once.
    pub async fn start_with_concurrency(
        bin: &str,
        url: &str,
        schema: &str,
        lease: Duration,
        concurrency: usize,
    ) -> WorkerProcess {
        WorkerProcess::spawn(
            bin,
            url,
            schema,
            &Options {
                lease,
                concurrency,
                ..Options::default()
            },
        )
        .await
    }

    /// Starts a worker as `options` say.
    pub async fn start_with(
        bin: &str,
        url: &str,
        schema: &str,
        options: &Options,
    ) -> WorkerProcess {
        WorkerProcess::spawn(bin, url, schema, options).await
    }

    async fn spawn(bin: &str, url: &str, schema: &str, options: &Options) -> WorkerProcess {
        let mut command = tokio::process::Command::new(bin);
        if options.record_deaths {
            command.env("ERRAND_DEATHS", "1");
            command.env(
                "ERRAND_DEATH_HANDLER_MS",
                options.death_handler_delay.as_millis().to_string(),
            );
        }
        if let Some(queue) = &options.queue {
            command.env("ERRAND_QUEUE", queue);
        }
        if let Some(cron) = &options.periodic {
            command.env("ERRAND_PERIODIC", cron);
        }
        let mut child = command
            .env("ERRAND_CONCURRENCY", options.concurrency.to_string())
            .env("DATABASE_URL", url)
            .env("ERRAND_SCHEMA", schema)
            .env("ERRAND_LEASE_MS", options.lease.as_millis().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start a worker process");
        let pid = child.id().expect("a running child has a pid");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        assert!(
            matches!(ready, Ok(Ok(Some(ref line))) if line == "ready"),
            "worker process {pid} did not start: {ready:?}"
        );
        WorkerProcess { child, pid }
    }

    /// SIGKILL: no shutdown, no release; whatever it ran stays `running` until its lease ends.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL the worker");
    }

    /// SIGSTOP: the process stalls, holding its jobs, renewing nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: a stalled process carries on where it stopped.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", self.pid);
    }

    /// SIGTERM, then waits for the graceful shutdown; panics if it does not exit cleanly.
    pub async fn terminate(mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid);
        let exit = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("worker exits within a minute of SIGTERM")
            .expect("wait for the worker");
        assert!(exit.success(), "worker {} exited with {exit}", self.pid);
    }
}

/// A PostgreSQL server of the test's own, in a temporary folder on a free port, so that a test
/// can stop and restart it without disturbing anything else. Stopped when dropped.
pub struct TempCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl TempCluster {
    /// Creates and starts a cluster, or returns `None` when PostgreSQL's server programs are not
    /// installed (under `CI`, panics instead).
    pub fn start() -> Option<TempCluster> {
        let Some(bin) = postgres_bin() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL's initdb and pg_ctl are required when CI is set"
            );
            eprintln!(
                "SKIPPED (PostgreSQL restart): no initdb/pg_ctl under /usr/lib/postgresql/*/bin"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("temporary folder");
        let port = free_port();
        let cluster = TempCluster { dir, bin, port };
        if is_root() {
            // initdb and the server refuse to run as root: hand the folder to `postgres`.
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(cluster.dir.path()));
        }
        cluster.pg(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        cluster.start_server();
        Some(cluster)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (clients are cut off) and starts it again.
    pub fn restart(&self) {
        self.stop();
        self.start_server();
    }

    /// Stops the server at once: clients are cut off, and new connections refused.
    pub fn stop(&self) {
        self.pg(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs one of PostgreSQL's programs, as `postgres` when we are root.
    fn pg(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(&program);
            c
        } else {
            Command::new(&program)
        };
        run(command.args(args));
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = self.pg_quiet(&["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}

impl TempCluster {
    fn pg_quiet(&self, args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
        let program = self.bin.join("pg_ctl");
        if is_root() {
            Command::new("runuser")
                .arg("-u")
                .arg("postgres")
                .arg("--")
                .arg(&program)
                .args(args)
                .output()
                .map(|o| o.status)
        } else {
            Command::new(&program).args(args).output().map(|o| o.status)
        }
    }
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The newest `/usr/lib/postgresql/<version>/bin` with initdb and pg_ctl.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| Path::new(&bin.join("initdb")).exists() && bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}
