//! Every compile-time check of `#[job]` and `#[derive(JobError)]` has a failing case here with
//! its expected `.stderr`; `ui/pass` holds cases that must compile cleanly and run.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p errand-ui-tests` and
//! read the diff before committing it.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/job/*.rs");
    cases.compile_fail("ui/job_error/*.rs");
    cases.pass("ui/pass/*.rs");
}
