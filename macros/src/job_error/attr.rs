//! Parsing of `#[transient]`, `#[permanent]`, `#[retry_after]` and `#[job_error(default = ...)]`.

use proc_macro2::Span;
use syn::{Attribute, LitStr};

use crate::ctxt::{one_of, Ctxt};
use crate::symbol::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Class {
    Transient,
    Permanent,
}

/// A class as written, with where it was written.
#[derive(Clone, Copy)]
pub(crate) struct ClassAttr {
    pub class: Class,
    pub span: Span,
}

/// `#[transient]` or `#[permanent]` among `attrs`; both, or either twice, is an error.
pub(crate) fn class(cx: &Ctxt, attrs: &[Attribute]) -> Option<ClassAttr> {
    let mut found: Option<ClassAttr> = None;
    for attr in attrs {
        let class = if attr.path().is_ident(TRANSIENT) {
            Class::Transient
        } else if attr.path().is_ident(PERMANENT) {
            Class::Permanent
        } else {
            continue;
        };
        // #[transient] / #[permanent]: a bare word, no arguments.
        if let Err(err) = attr.meta.require_path_only() {
            cx.syn_error(syn::Error::new(
                err.span(),
                format!(
                    "`#[{}]` takes no arguments",
                    attr.path()
                        .get_ident()
                        .map(|i| i.to_string())
                        .unwrap_or_default()
                ),
            ));
        }
        let here = ClassAttr {
            class,
            span: attr_span(attr),
        };
        match found {
            None => found = Some(here),
            Some(prev) if prev.class == class => {
                cx.error_spanned_by(attr, "duplicate error class attribute")
            }
            Some(_) => cx.error_spanned_by(
                attr,
                "an error cannot be both `#[transient]` and `#[permanent]`; keep the one that says whether retrying can help",
            ),
        }
    }
    found
}

/// Whether `attrs` holds `#[retry_after]`.
pub(crate) fn is_retry_after(cx: &Ctxt, attrs: &[Attribute]) -> bool {
    let mut found = false;
    for attr in attrs.iter().filter(|a| a.path().is_ident(RETRY_AFTER)) {
        // #[retry_after]: a bare word.
        if attr.meta.require_path_only().is_err() {
            cx.error_spanned_by(
                attr,
                "`#[retry_after]` takes no arguments; put it on a `Duration` field",
            );
        }
        if found {
            cx.error_spanned_by(attr, "duplicate `#[retry_after]`");
        }
        found = true;
    }
    found
}

/// `#[job_error(default = "transient" | "permanent")]` on the enum.
pub(crate) fn default_class(cx: &Ctxt, attrs: &[Attribute]) -> Option<ClassAttr> {
    let mut default = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident(JOB_ERROR)) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(DEFAULT) {
                // default = "transient" | "permanent"
                let s: LitStr = meta.value()?.parse()?;
                let class = match s.value().as_str() {
                    "transient" => Class::Transient,
                    "permanent" => Class::Permanent,
                    other => {
                        cx.error_spanned_by(
                            &s,
                            format!(
                                "unknown default class `{other}`; expected {}",
                                one_of(&[TRANSIENT, PERMANENT])
                            ),
                        );
                        // Still a default, so unclassified variants are not reported as well.
                        Class::Transient
                    }
                };
                if default.is_some() {
                    cx.error_spanned_by(&meta.path, "duplicate `#[job_error]` option `default`");
                }
                default = Some(ClassAttr {
                    class,
                    span: s.span(),
                });
                Ok(())
            } else {
                Err(meta.error(format!(
                    "unknown `#[job_error]` option; expected {}",
                    one_of(&[DEFAULT])
                )))
            }
        });
        if let Err(err) = result {
            cx.syn_error(err);
        }
    }
    default
}

fn attr_span(attr: &Attribute) -> Span {
    syn::spanned::Spanned::span(attr)
}
