//! Rules across the attributes of an error type.

use crate::ctxt::Ctxt;
use crate::job_error::ast::{Input, Shape, Variant};

pub(crate) fn check(cx: &Ctxt, input: &Input) {
    every_variant_is_classified(cx, input);
}

/// Without a class the runtime could not know whether a retry can help, so each variant says it,
/// unless the type names a default.
fn every_variant_is_classified(cx: &Ctxt, input: &Input) {
    if input.default.is_some() {
        return;
    }
    let unclassified = |v: &Variant| v.class.is_none();
    match &input.shape {
        Shape::Enum(variants) => {
            for v in variants.iter().filter(|v| unclassified(v)) {
                if let Some(ident) = v.ident {
                    cx.error_spanned_by(
                        ident,
                        format!(
                            "variant `{ident}` needs `#[transient]` (retry can help) or `#[permanent]` (it cannot); \
                             or give the enum `#[job_error(default = \"transient\")]`"
                        ),
                    );
                }
            }
        }
        Shape::Struct(v) if unclassified(v) => cx.error_spanned_by(
            input.ident,
            format!(
                "`{}` needs `#[transient]` (retry can help) or `#[permanent]` (it cannot)",
                input.ident
            ),
        ),
        Shape::Struct(_) => {}
    }
}
