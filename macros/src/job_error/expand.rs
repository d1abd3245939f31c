//! Code generation for `#[derive(JobError)]`: an `errand::Classify` impl.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;

use crate::job_error::ast::{Input, Shape, Variant};
use crate::job_error::attr::Class;

pub(crate) fn expand(input: &Input) -> TokenStream {
    let ident = input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let default = input.default.map(|d| d.class);

    let (class_arms, retry_arms) = match &input.shape {
        Shape::Enum(variants) => {
            let class_arms: Vec<_> = variants
                .iter()
                .map(|v| {
                    let path = variant_path(v);
                    let class = class_tokens(v.class.map(|c| c.class).or(default));
                    quote!(#path { .. } => #class,)
                })
                .collect();
            let retry_arms: Vec<_> = variants.iter().filter_map(retry_arm).collect();
            (class_arms, retry_arms)
        }
        Shape::Struct(v) => {
            let class = class_tokens(v.class.map(|c| c.class).or(default));
            (
                vec![quote!(_ => #class,)],
                retry_arm(v).into_iter().collect(),
            )
        }
    };
    // An enum with no variants has no value to match on; `match *self {}` proves it.
    let class_body = if class_arms.is_empty() {
        quote!(match *self {})
    } else {
        quote!(match self { #( #class_arms )* })
    };
    let retry_body = if retry_arms.is_empty() {
        quote!(::core::option::Option::None)
    } else {
        quote! {
            #[allow(unreachable_patterns)]
            match self {
                #( #retry_arms )*
                _ => ::core::option::Option::None,
            }
        }
    };

    quote! {
        #[automatically_derived]
        impl #impl_generics ::errand::Classify for #ident #ty_generics #where_clause {
            fn class(&self) -> ::errand::ErrorClass {
                #class_body
            }

            fn retry_after(&self) -> ::core::option::Option<::core::time::Duration> {
                #retry_body
            }
        }
    }
}

fn variant_path(v: &Variant) -> TokenStream {
    match v.ident {
        Some(ident) => quote!(Self::#ident),
        None => quote!(Self),
    }
}

fn class_tokens(class: Option<Class>) -> TokenStream {
    match class {
        // Unclassified only when validation already failed; the fallback never reaches here.
        Some(Class::Transient) | None => quote!(::errand::ErrorClass::Transient),
        Some(Class::Permanent) => quote!(::errand::ErrorClass::Permanent),
    }
}

fn retry_arm(v: &Variant) -> Option<TokenStream> {
    let field = v.retry_after.as_ref()?;
    let path = variant_path(v);
    let member = &field.member;
    let ty = field.ty;
    // Spanned on the field's type, so a field that is not a `Duration` is reported there.
    let call = quote_spanned! {ty.span()=>
        <#ty as ::errand::__private::RetryAfter>::retry_after(__errand_value)
    };
    Some(quote!(#path { #member: __errand_value, .. } => #call,))
}
