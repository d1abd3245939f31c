//! A typed view of the function under `#[job]`: its name, its job arguments and its optional
//! `&Context` parameter, borrowing from the syn tree so that errors keep their spans.

use syn::{FnArg, Ident, ItemFn, Pat, Type};

use crate::ctxt::Ctxt;

/// One job argument: a parameter other than the `&Context`.
pub(crate) struct Param<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
}

pub(crate) struct JobFn<'a> {
    pub item: &'a ItemFn,
    /// Whether the first parameter is `&Context`.
    pub takes_context: bool,
    pub params: Vec<Param<'a>>,
}

impl<'a> JobFn<'a> {
    /// Reads the function's shape, recording in `cx` every way in which it cannot be a job.
    pub(crate) fn from_item(cx: &Ctxt, item: &'a ItemFn) -> JobFn<'a> {
        let sig = &item.sig;
        if sig.asyncness.is_none() {
            cx.error_spanned_by(sig.fn_token, "`#[job]` requires an `async fn`");
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            cx.error_spanned_by(
                &sig.generics,
                "`#[job]` functions cannot be generic: a stored job must name one concrete function; \
                 write a separate job per type",
            );
        }
        if let Some(variadic) = &sig.variadic {
            cx.error_spanned_by(variadic, "`#[job]` functions cannot be variadic");
        }

        let mut takes_context = false;
        let mut params = Vec::new();
        for (i, input) in sig.inputs.iter().enumerate() {
            match input {
                FnArg::Receiver(receiver) => cx.error_spanned_by(
                    receiver,
                    "`#[job]` cannot be used on a method: jobs are free functions; \
                     move the body into an `async fn` outside the `impl` block",
                ),
                FnArg::Typed(pat_type) => {
                    if is_context(&pat_type.ty) {
                        if i == 0 {
                            takes_context = true;
                        } else {
                            cx.error_spanned_by(
                                &pat_type.ty,
                                "`&Context` must be the first parameter of a `#[job]` function",
                            );
                        }
                        continue;
                    }
                    match &*pat_type.pat {
                        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                            if let Type::Reference(r) = &*pat_type.ty {
                                cx.error_spanned_by(
                                    r,
                                    "job arguments are stored and decoded later, so they must be owned; \
                                     take the value (e.g. `String` for `&str`)",
                                );
                            } else if let Type::ImplTrait(t) = &*pat_type.ty {
                                cx.error_spanned_by(t, "`#[job]` arguments cannot be `impl Trait`: name a concrete type");
                            }
                            params.push(Param { ident: &p.ident, ty: &pat_type.ty });
                        }
                        other => cx.error_spanned_by(
                            other,
                            "`#[job]` parameters must be plain names, e.g. `order_id: i64`, so they can be stored by name",
                        ),
                    }
                }
            }
        }
        JobFn {
            item,
            takes_context,
            params,
        }
    }

    pub(crate) fn ident(&self) -> &'a Ident {
        &self.item.sig.ident
    }
}

/// `&Context`, `&errand::Context`, `&'a Context`: a shared reference to a type named `Context`.
fn is_context(ty: &Type) -> bool {
    let Type::Reference(r) = ty else { return false };
    if r.mutability.is_some() {
        return false;
    }
    match &*r.elem {
        Type::Path(p) => {
            p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "Context")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn finds_context_and_params() {
        let item: ItemFn = parse_quote!(
            async fn f(ctx: &errand::Context, a: i64, b: String) -> Result<(), E> {}
        );
        let cx = Ctxt::new();
        let job = JobFn::from_item(&cx, &item);
        assert!(cx.check().is_ok());
        assert!(job.takes_context);
        let names: Vec<String> = job.params.iter().map(|p| p.ident.to_string()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn rejects_what_cannot_be_a_job() {
        let item: ItemFn = parse_quote!(
            fn f<T>(&self, (a, b): (i64, i64), s: &str) {}
        );
        let cx = Ctxt::new();
        let _ = JobFn::from_item(&cx, &item);
        let errors: Vec<String> = cx
            .check()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors.len(), 5, "{errors:?}");
    }
}
