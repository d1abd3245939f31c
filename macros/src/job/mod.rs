//! `#[job]`: parse the options, read the function, validate both, expand.

mod ast;
mod attr;
mod expand;
mod template;
mod valid;

use proc_macro2::TokenStream;

use crate::ctxt::Ctxt;

pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let item: syn::ItemFn = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(err) => {
            let err = syn::Error::new(err.span(), "`#[job]` must be placed on an `async fn`");
            return expand::fallback(&input, err);
        }
    };
    let cx = Ctxt::new();
    let attr = match attr::JobAttr::parse(&cx, args) {
        Ok(attr) => Some(attr),
        Err(err) => {
            cx.syn_error(err);
            None
        }
    };
    let job = ast::JobFn::from_item(&cx, &item);
    let templates = attr
        .as_ref()
        .map(|attr| valid::check(&cx, attr, &job))
        .unwrap_or_default();
    match (cx.check(), attr) {
        (Ok(()), Some(attr)) => expand::expand(&attr, &job, &templates),
        (Err(err), _) => expand::fallback(&input, err),
        // A parse failure is always recorded in `cx`, so `check` failed above.
        (Ok(()), None) => expand::fallback(
            &input,
            syn::Error::new(proc_macro2::Span::call_site(), "invalid `#[job]` attribute"),
        ),
    }
}
