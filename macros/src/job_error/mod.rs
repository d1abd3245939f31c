//! `#[derive(JobError)]`: read the type, validate the classes, expand (or fall back).

mod ast;
mod attr;
mod expand;
mod fallback;
mod valid;

use proc_macro2::TokenStream;

use crate::ctxt::Ctxt;

pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let input: syn::DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(err) => return err.to_compile_error(),
    };
    let cx = Ctxt::new();
    let parsed = ast::Input::from_syn(&cx, &input);
    if let Some(parsed) = &parsed {
        valid::check(&cx, parsed);
    }
    match (cx.check(), parsed) {
        (Ok(()), Some(parsed)) => expand::expand(&parsed),
        (Err(err), _) => fallback::expand(&input, err),
        // `from_syn` returns `None` only after recording an error, so `check` failed above.
        (Ok(()), None) => TokenStream::new(),
    }
}
