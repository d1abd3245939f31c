//! Code generation for `#[job]`.
//!
//! Beside the user's function (emitted unchanged) it writes, Rocket-style, a braced struct of the
//! same name: it lives in the type namespace only, so `charge_order(..)` still calls the function
//! while `charge_order::with(..)` reaches the generated API. Paths are absolute
//! (`::errand::__private::...`, or under `#[job(crate = "...")]`'s path) so the expansion
//! never depends on the user's imports.

use std::time::Duration;

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned as _;

use crate::job::ast::JobFn;
use crate::job::attr::{Backoff, CatchUp, JobAttr, OnConflict, UniqueStrategy};
use crate::job::template::{self, Segment};
use crate::job::valid::Templates;

pub(crate) fn expand(attr: &JobAttr, job: &JobFn, templates: &Templates) -> TokenStream {
    let key = templates.key.as_deref();
    let krate = match &attr.krate {
        Some(path) => quote!(#path),
        None => quote!(::errand),
    };
    let serde_crate = format!("{krate}::__private::serde");
    let item = job.item;
    let vis = &item.vis;
    let ident = job.ident();
    let args_ident = format_ident!("__errand_args_{}", ident);
    let kind = attr
        .name
        .as_ref()
        .map_or_else(|| ident.to_string(), |n| n.value.clone());
    let options = options(&krate, attr);

    let names: Vec<_> = job.params.iter().map(|p| p.ident).collect();
    let types: Vec<_> = job.params.iter().map(|p| p.ty).collect();
    // Each field of the stored-arguments struct is written and read through `JobArg`'s
    // functions, which require `T: JobArg`: the one requirement on a parameter's type. Both
    // sides are spanned on the parameter's type, so a type that is not serializable is one
    // error there, with errand's message (rustc reports one unmet requirement once per
    // place). The struct's serde impls require nothing of their own, so the `Job::Args` bound
    // adds no errors either. `Serialize` is written here rather than derived, as the derive
    // would span its calls on the attribute instead.
    let field_names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let field_count = names.len();
    let readers = types.iter().map(|ty| {
        let de = quote!(<#ty as #krate::__private::JobArg>::deserialize).to_string();
        let de = syn::LitStr::new(&de, ty.span());
        // A missing `Option` field reads as `None`, as serde's derive reads it without
        // `deserialize_with` (and by the same test of the type's name): a job stored before an
        // optional parameter was added still runs.
        let default = is_option(ty).then(|| quote!(default,));
        quote_spanned! {ty.span()=> #[serde(#default deserialize_with = #de)] }
    });
    let writers = names.iter().zip(&types).zip(&field_names).map(|((name, ty), field)| {
        // Every token of the call on the type's span, so that the call's span is the type's.
        let name = syn::Ident::new(&name.to_string(), ty.span());
        let field = syn::LitStr::new(field, ty.span());
        quote_spanned! {ty.span()=>
            <#ty as #krate::__private::JobArg>::serialize_field(&self.#name, &mut __errand_fields, #field)?;
        }
    });
    let args_type = quote!(#args_ident);

    let ctx_arg = job.takes_context.then(|| quote!(&__errand_ctx,));
    let ret_ty = match &item.sig.output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, ty) => quote!(#ty),
    };
    let ret_span = item.sig.output.span();
    let into_outcome = quote_spanned! {ret_span=>
        <#ret_ty as #krate::__private::IntoOutcome>::into_outcome(__errand_result)
    };
    let assert_send = quote_spanned! {ident.span()=>
        #krate::__private::assert_send(__errand_future)
    };

    let (key_fn, key_impl) = match key {
        Some(segments) => key_fns(&krate, job, ident, segments),
        None => (quote!(), quote!(::core::option::Option::None)),
    };
    let rendered = |segments: Option<&Vec<Segment>>| match segments {
        Some(segments) => {
            let pieces = render(&krate, segments, |head| quote!(__errand_args.#head));
            quote! {
                let mut __errand_key = ::std::string::String::new();
                #( #pieces )*
                ::core::option::Option::Some(__errand_key)
            }
        }
        None => quote!(::core::option::Option::None),
    };
    let limit_key_impl = rendered(templates.limit.as_ref());
    let fair_key_impl = rendered(templates.fair.as_ref());

    let periodic = attr.cron.as_ref().map(|cron| {
        let tz = attr
            .timezone
            .as_ref()
            .map_or_else(|| "UTC".to_owned(), |t| t.value());
        let catch_up = match attr.catch_up.as_ref().map(|c| c.value) {
            None | Some(CatchUp::None) => quote!(#krate::CatchUp::None),
            Some(CatchUp::Latest) => quote!(#krate::CatchUp::Latest),
            Some(CatchUp::All(max)) => quote!(#krate::CatchUp::All { max: #max }),
        };
        quote! {
            .periodic(|| {
                #krate::Periodic::new(#cron, #ident::with())
                    .timezone(#tz)
                    .catch_up(#catch_up)
            })
        }
    });

    // The compensation is called with this job's arguments, in order: a job that does not exist,
    // or takes other arguments, fails to compile on the path in the attribute.
    let compensated = attr.compensate.as_ref().map(|path| {
        let call = quote_spanned! {path.span()=> #path::with(#( #names ),*) };
        quote! {
            #[automatically_derived]
            impl #krate::Compensated for #ident {
                type Compensation = #path;

                fn compensation(__errand_args: Self::Args) -> #krate::Request<#path> {
                    let #args_ident { #( #names ),* } = __errand_args;
                    #call
                }
            }
        }
    });

    let doc = format!(
        "The `{kind}` job: enqueue it with [`{ident}::with`] or [`{ident}::enqueue`].\n\n\
         Generated by `#[errand::job]` beside the function of the same name."
    );
    let args_doc = format!("The stored arguments of the `{kind}` job, one field per parameter.");
    let with_doc = format!(
        "A typed request to run `{kind}` with these arguments; finish it with `.enqueue(&client)`."
    );
    let enqueue_doc =
        format!("Enqueues `{kind}` with these arguments now, with the job's default options.");

    quote! {
        #item

        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #vis struct #ident {}

        #[doc = #args_doc]
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #[derive(#krate::__private::serde::Deserialize)]
        #[serde(crate = #serde_crate)]
        #vis struct #args_ident {
            #( #readers #vis #names: #types, )*
        }

        #[automatically_derived]
        impl #krate::__private::serde::Serialize for #args_ident {
            fn serialize<__ErrandS: #krate::__private::serde::Serializer>(
                &self,
                __errand_serializer: __ErrandS,
            ) -> ::core::result::Result<__ErrandS::Ok, __ErrandS::Error> {
                use #krate::__private::serde::ser::SerializeStruct as _;
                let mut __errand_fields = __errand_serializer
                    .serialize_struct(::core::stringify!(#args_ident), #field_count)?;
                #( #writers )*
                __errand_fields.end()
            }
        }

        #[automatically_derived]
        impl #ident {
            #[doc = #with_doc]
            #[allow(clippy::too_many_arguments, clippy::new_ret_no_self)]
            #vis fn with(#( #names: #types ),*) -> #krate::Request<#ident> {
                #krate::__private::new_request(#args_ident { #( #names ),* })
            }

            #[doc = #enqueue_doc]
            #[allow(clippy::too_many_arguments)]
            #vis async fn enqueue(
                __errand_client: &#krate::Client,
                #( #names: #types ),*
            ) -> ::core::result::Result<#krate::Enqueued, #krate::Error> {
                Self::with(#( #names ),*).enqueue(__errand_client).await
            }

            #key_fn
        }

        #[automatically_derived]
        impl #krate::Job for #ident {
            type Args = #args_type;
            const KIND: &'static str = #kind;
            const OPTIONS: #krate::JobOptions = #options;

            fn key(__errand_args: &Self::Args) -> ::core::option::Option<::std::string::String> {
                #key_impl
            }

            fn limit_key(__errand_args: &Self::Args) -> ::core::option::Option<::std::string::String> {
                #limit_key_impl
            }

            fn fair_key(__errand_args: &Self::Args) -> ::core::option::Option<::std::string::String> {
                #fair_key_impl
            }

            fn run(
                __errand_ctx: #krate::Context,
                __errand_args: Self::Args,
            ) -> #krate::__private::JobFuture {
                let #args_ident { #( #names ),* } = __errand_args;
                ::std::boxed::Box::pin(async move {
                    let __errand_future = #ident(#ctx_arg #( #names ),*);
                    let __errand_result = #assert_send.await;
                    #into_outcome
                })
            }
        }

        #compensated

        const _: () = {
            #krate::__private::inventory::submit! {
                #krate::__private::Registration::of::<#ident>()#periodic
            }
        };
    }
}

/// The `JobOptions` constant: only what the attribute set, the rest from `JobOptions::DEFAULT`.
fn options(krate: &TokenStream, attr: &JobAttr) -> TokenStream {
    let mut fields = Vec::new();
    if let Some(q) = &attr.queue {
        let v = &q.value;
        fields.push(quote!(queue: #v,));
    }
    if let Some(r) = &attr.retry {
        let v = r.value;
        fields.push(quote!(retry: #v,));
    }
    if let Some(b) = &attr.backoff {
        let v = match &b.value {
            Backoff::Exponential => quote!(#krate::Backoff::Exponential),
            Backoff::Linear => quote!(#krate::Backoff::Linear),
            Backoff::Constant => quote!(#krate::Backoff::Constant),
            // The cast checks the signature at the user's path.
            Backoff::Custom(path) => quote_spanned! {b.span=>
                #krate::Backoff::Custom(#path as fn(u32) -> ::core::time::Duration)
            },
        };
        fields.push(quote!(backoff: #v,));
    }
    if let Some(u) = &attr.unique {
        let strategy = match u.value {
            UniqueStrategy::UntilExecuting => quote!(UntilExecuting),
            UniqueStrategy::UntilExecuted => quote!(UntilExecuted),
            UniqueStrategy::WhileExecuting => quote!(WhileExecuting),
            UniqueStrategy::UntilExpired => quote!(UntilExpired),
        };
        let unique_for = match &attr.unique_for {
            Some(d) => {
                let d = duration(d.value);
                quote!(::core::option::Option::Some(#d))
            }
            None => quote!(::core::option::Option::None),
        };
        let on_conflict = match attr.on_conflict.as_ref().map(|c| c.value) {
            None | Some(OnConflict::Skip) => quote!(Skip),
            Some(OnConflict::Replace) => quote!(Replace),
            Some(OnConflict::Reject) => quote!(Reject),
        };
        fields.push(quote!(unique: ::core::option::Option::Some(#krate::Unique {
            strategy: #krate::UniqueStrategy::#strategy,
            unique_for: #unique_for,
            on_conflict: #krate::OnConflict::#on_conflict,
        }),));
    }
    if let Some(p) = &attr.priority {
        let v = p.value;
        fields.push(quote!(priority: #v,));
    }
    if let Some(t) = &attr.timeout {
        let d = duration(t.value);
        fields.push(quote!(timeout: ::core::option::Option::Some(#d),));
    }
    if let Some(c) = &attr.concurrency {
        let v = c.value;
        fields.push(quote!(concurrency: ::core::option::Option::Some(#v),));
    }
    if let Some(r) = &attr.rate {
        let (max, per) = r.value;
        let per = duration(per);
        fields.push(
            quote!(rate: ::core::option::Option::Some(#krate::Rate { max: #max, per: #per }),),
        );
    }
    if attr.fair_by.is_some() {
        fields.push(quote!(fair: true,));
    }
    if let Some(t) = &attr.expires_in {
        let d = duration(t.value);
        fields.push(quote!(expires_in: ::core::option::Option::Some(#d),));
    }
    quote!(#krate::JobOptions { #( #fields )* ..#krate::JobOptions::DEFAULT })
}

fn duration(d: Duration) -> TokenStream {
    let millis = d.as_millis() as u64;
    quote!(::core::time::Duration::from_millis(#millis))
}

/// The public `key(&args..)` function, taking the parameters the template uses in the order the
/// function declares them, and the `Job::key` body that calls it.
fn key_fns(
    krate: &TokenStream,
    job: &JobFn,
    ident: &syn::Ident,
    segments: &[Segment],
) -> (TokenStream, TokenStream) {
    let used: Vec<_> = job
        .params
        .iter()
        .filter(|p| {
            segments
                .iter()
                .any(|s| matches!(s, Segment::Placeholder(path) if p.ident == path[0].as_str()))
        })
        .collect();
    let names: Vec<_> = used.iter().map(|p| p.ident).collect();
    let types: Vec<_> = used.iter().map(|p| p.ty).collect();
    let pieces = render(krate, segments, |head| quote!(#head));
    let vis = &job.item.vis;
    let doc = format!(
        "Renders the idempotency key of `{ident}` for these arguments: the same function the runtime uses."
    );
    let key_fn = quote! {
        #[doc = #doc]
        #vis fn key(#( #names: &#types ),*) -> ::std::string::String {
            let mut __errand_key = ::std::string::String::new();
            #( #pieces )*
            __errand_key
        }
    };
    let call = quote!(::core::option::Option::Some(#ident::key(#( &__errand_args.#names ),*)));
    (key_fn, call)
}

/// The statements that render a template into `__errand_key`, each placeholder's value read
/// from `access(head)` and its fields.
fn render(
    krate: &TokenStream,
    segments: &[Segment],
    access: impl Fn(&syn::Ident) -> TokenStream,
) -> Vec<TokenStream> {
    segments.iter().enumerate().map(|(i, s)| match s {
        Segment::Text(text) => quote!(__errand_key.push_str(#text);),
        Segment::Placeholder(path) => {
            let head = access(&format_ident!("{}", path[0]));
            let fields = path[1..].iter().map(|f| format_ident!("{}", f));
            match template::separator(segments, i) {
                // Escaped, so that the separator after it in the key is never part of it.
                Some(separator) => quote! {
                    #krate::__private::push_key_value(&mut __errand_key, &#head #( .#fields )*, #separator);
                },
                // Writing to a `String` only fails if the value's own `Display` does; the key
                // then holds what was written, as `to_string` would.
                None => quote! {
                    let _ = ::core::fmt::Write::write_fmt(
                        &mut __errand_key,
                        ::core::format_args!("{}", #head #( .#fields )*),
                    );
                },
            }
        }
    }).collect()
}

/// On invalid input: the function unchanged (so calls to it and IDEs keep working) plus the errors.
/// Whether `ty` is spelled `Option<..>` (or a path ending in it), as serde's derive tests.
fn is_option(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident == "Option"),
        syn::Type::Group(group) => is_option(&group.elem),
        _ => false,
    }
}

pub(crate) fn fallback(item: &TokenStream, err: syn::Error) -> TokenStream {
    let errors = err.to_compile_error();
    quote!(#item #errors)
}
