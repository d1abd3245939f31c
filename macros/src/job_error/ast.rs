//! A typed view of the error type under `#[derive(JobError)]`: each variant (or the struct) with
//! its class and its `#[retry_after]` field.

use syn::{Data, DeriveInput, Fields, Ident, Member, Type};

use crate::ctxt::Ctxt;
use crate::job_error::attr::{self, ClassAttr};

pub(crate) struct Input<'a> {
    pub ident: &'a Ident,
    pub generics: &'a syn::Generics,
    pub default: Option<ClassAttr>,
    pub shape: Shape<'a>,
}

pub(crate) enum Shape<'a> {
    Enum(Vec<Variant<'a>>),
    Struct(Variant<'a>),
}

/// A variant, or the struct itself.
pub(crate) struct Variant<'a> {
    /// `None` for a struct.
    pub ident: Option<&'a Ident>,
    pub class: Option<ClassAttr>,
    pub retry_after: Option<RetryAfterField<'a>>,
}

pub(crate) struct RetryAfterField<'a> {
    pub member: Member,
    pub ty: &'a Type,
}

impl<'a> Input<'a> {
    pub(crate) fn from_syn(cx: &Ctxt, input: &'a DeriveInput) -> Option<Input<'a>> {
        let default = attr::default_class(cx, &input.attrs);
        let shape = match &input.data {
            Data::Enum(data) => {
                if let Some(class) = attr::class(cx, &input.attrs) {
                    cx.syn_error(syn::Error::new(
                        class.span,
                        "put `#[transient]` or `#[permanent]` on each variant; for the whole enum use `#[job_error(default = \"...\")]`",
                    ));
                }
                Shape::Enum(
                    data.variants
                        .iter()
                        .map(|v| Variant {
                            ident: Some(&v.ident),
                            class: attr::class(cx, &v.attrs),
                            retry_after: retry_after_field(cx, &v.fields),
                        })
                        .collect(),
                )
            }
            Data::Struct(data) => Shape::Struct(Variant {
                ident: None,
                class: attr::class(cx, &input.attrs),
                retry_after: retry_after_field(cx, &data.fields),
            }),
            Data::Union(_) => {
                cx.error_spanned_by(
                    input,
                    "`#[derive(JobError)]` supports enums and structs, not unions",
                );
                return None;
            }
        };
        Some(Input {
            ident: &input.ident,
            generics: &input.generics,
            default,
            shape,
        })
    }
}

fn retry_after_field<'a>(cx: &Ctxt, fields: &'a Fields) -> Option<RetryAfterField<'a>> {
    let mut found = None;
    for (i, field) in fields.iter().enumerate() {
        if !attr::is_retry_after(cx, &field.attrs) {
            continue;
        }
        if found.is_some() {
            cx.error_spanned_by(field, "only one field can be `#[retry_after]`");
            continue;
        }
        let member = match &field.ident {
            Some(ident) => Member::Named(ident.clone()),
            None => Member::Unnamed(syn::Index::from(i)),
        };
        found = Some(RetryAfterField {
            member,
            ty: &field.ty,
        });
    }
    found
}
