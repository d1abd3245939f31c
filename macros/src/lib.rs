//! Procedural macros for [errand](https://docs.rs/errand): `#[job]` and `#[derive(JobError)]`.
//!
//! Depend on `errand`, which re-exports these; the expansions refer to `::errand` paths.
//! Set `ERRAND_MACROS_DEBUG=1` while building to print every expansion to stderr.

#![forbid(unsafe_code)]

mod ctxt;
mod job;
mod job_error;
mod symbol;

use proc_macro::TokenStream;

/// Turns an `async fn` into a stored, retried, registered background job.
///
/// See the `errand` crate's documentation for the options and what is generated.
#[proc_macro_attribute]
pub fn job(args: TokenStream, input: TokenStream) -> TokenStream {
    debug_expansion("#[job]", job::expand(args.into(), input.into())).into()
}

/// Implements `errand::Classify` from `#[transient]` / `#[permanent]` on each variant.
#[proc_macro_derive(JobError, attributes(transient, permanent, retry_after, job_error))]
pub fn derive_job_error(input: TokenStream) -> TokenStream {
    debug_expansion("#[derive(JobError)]", job_error::derive(input.into())).into()
}

fn debug_expansion(what: &str, tokens: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    if std::env::var_os("ERRAND_MACROS_DEBUG").is_some() {
        eprintln!("// {what} expanded to:\n{tokens}\n");
    }
    tokens
}
