//! On invalid input, still emit a `Classify` impl beside the errors, so the user's crate shows the
//! mistake in the derive and not a second wave of "`Classify` is not implemented" errors.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

pub(crate) fn expand(input: &DeriveInput, err: syn::Error) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let errors = err.to_compile_error();
    quote! {
        #errors

        #[automatically_derived]
        impl #impl_generics ::errand::Classify for #ident #ty_generics #where_clause {
            fn class(&self) -> ::errand::ErrorClass {
                ::errand::ErrorClass::Transient
            }
        }
    }
}
