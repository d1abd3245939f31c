//! Every compile-time check of `#[job]` and `#[derive(JobError)]` has a failing case here with
//! its expected `.stderr`; `ui/pass` holds cases that must compile cleanly and run.
//!
//! The expected messages are rustc's, and rustc words them differently from one release to the
//! next: they were written by the compiler named in [`RUSTC`]. On another compiler the failing
//! cases are skipped with a message saying so (the passing cases still run); to check them
//! there, regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p errand-ui-tests`, read the diff, and update [`RUSTC`].

use std::process::Command;

/// The compiler that wrote the `.stderr` files, as `rustc --version` starts.
const RUSTC: &str = "rustc 1.95.";

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    if version.starts_with(RUSTC) {
        cases.compile_fail("ui/job/*.rs");
        cases.compile_fail("ui/job_error/*.rs");
        cases.compile_fail("ui/worker/*.rs");
    } else {
        eprintln!(
            "SKIPPED the compile-fail cases: their messages were written by {RUSTC}x, and this \
             is `{version}`. Regenerate them with `TRYBUILD=overwrite cargo test -p \
             errand-ui-tests`, check the diff, and update `RUSTC` in ui-tests/tests/ui.rs."
        );
    }
}
