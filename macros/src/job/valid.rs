//! Rules that relate several options, or options and the function, each in one small function.

use crate::ctxt::{did_you_mean, Ctxt};
use crate::job::ast::JobFn;
use crate::job::attr::{JobAttr, UniqueStrategy};
use crate::job::template::{self, Segment};

/// The job's templates, parsed.
#[derive(Default)]
pub(crate) struct Templates {
    /// `key`.
    pub key: Option<Vec<Segment>>,
    /// `concurrency_key`.
    pub limit: Option<Vec<Segment>>,
    /// `fair_by`.
    pub fair: Option<Vec<Segment>>,
}

/// Runs every check, recording failures in `cx`. Returns the parsed templates that are valid.
pub(crate) fn check(cx: &Ctxt, attr: &JobAttr, job: &JobFn) -> Templates {
    unique_needs_key(cx, attr);
    until_expired_needs_unique_for(cx, attr);
    uniqueness_options_need_unique(cx, attr);
    schedule_options(cx, attr, job);
    concurrency_key_needs_a_limit(cx, attr);
    fairness_or_limits(cx, attr);
    Templates {
        key: attr.key.as_ref().and_then(|lit| template_of(cx, lit, job)),
        limit: attr
            .concurrency_key
            .as_ref()
            .and_then(|lit| template_of(cx, lit, job)),
        fair: attr
            .fair_by
            .as_ref()
            .and_then(|lit| template_of(cx, lit, job)),
    }
}

/// A limited job takes turns by its limit's key already; `fair_by` is for jobs without limits.
fn fairness_or_limits(cx: &Ctxt, attr: &JobAttr) {
    if let (Some(fair), true) = (
        &attr.fair_by,
        attr.concurrency.is_some() || attr.rate.is_some(),
    ) {
        cx.error_spanned_by(
            fair,
            "`fair_by` cannot be combined with `concurrency` or `rate`; a limit's `concurrency_key` already shares the slots per key",
        );
    }
}

/// A `concurrency_key` says what `concurrency` and `rate` apply per.
fn concurrency_key_needs_a_limit(cx: &Ctxt, attr: &JobAttr) {
    if let (Some(key), None, None) = (&attr.concurrency_key, &attr.concurrency, &attr.rate) {
        cx.error_spanned_by(
            key,
            "`concurrency_key` says what limits apply per, but the job has none; add e.g. `concurrency = 2` or `rate = \"100/1m\"`",
        );
    }
}

/// `cron` schedules a job with nothing to pass it; `timezone` and `catch_up` qualify `cron`.
fn schedule_options(cx: &Ctxt, attr: &JobAttr, job: &JobFn) {
    match &attr.cron {
        Some(cron) => {
            if !job.params.is_empty() {
                let names: Vec<String> = job
                    .params
                    .iter()
                    .map(|p| format!("`{}`", p.ident))
                    .collect();
                cx.error_spanned_by(
                    cron,
                    format!(
                        "`cron` schedules a job without arguments, but `{}` takes {}; schedule it with arguments on the worker instead: `Worker::periodic(\"{}\", {}::with(..))`",
                        job.ident(),
                        names.join(", "),
                        cron.value(),
                        job.ident()
                    ),
                );
            }
        }
        None => {
            if let Some(tz) = &attr.timezone {
                cx.error_spanned_by(
                    tz,
                    "`timezone` has no effect without `cron`; add e.g. `cron = \"0 3 * * *\"`",
                );
            }
            if let Some(c) = &attr.catch_up {
                cx.syn_error(syn::Error::new(
                    c.span,
                    "`catch_up` has no effect without `cron`; add e.g. `cron = \"0 3 * * *\"`",
                ));
            }
        }
    }
}

/// A unique job is unique *by its key*: without one there is nothing to compare.
fn unique_needs_key(cx: &Ctxt, attr: &JobAttr) {
    if let (Some(unique), None) = (&attr.unique, &attr.key) {
        cx.syn_error(syn::Error::new(
            unique.span,
            "`unique` needs a `key` to compare jobs by; add e.g. `key = \"charge-<order_id>\"`",
        ));
    }
}

/// `until_expired` holds the key for a fixed time, so the time must be given.
fn until_expired_needs_unique_for(cx: &Ctxt, attr: &JobAttr) {
    if let Some(unique) = &attr.unique {
        if unique.value == UniqueStrategy::UntilExpired && attr.unique_for.is_none() {
            cx.syn_error(syn::Error::new(
                unique.span,
                "`unique = \"until_expired\"` needs `unique_for` to say when the key expires; add e.g. `unique_for = \"24h\"`",
            ));
        }
    }
}

/// `unique_for` and `on_conflict` only mean something for a unique job.
fn uniqueness_options_need_unique(cx: &Ctxt, attr: &JobAttr) {
    if attr.unique.is_some() {
        return;
    }
    if let Some(d) = &attr.unique_for {
        cx.syn_error(syn::Error::new(
            d.span,
            "`unique_for` has no effect without `unique`; add e.g. `unique = \"until_executed\"`",
        ));
    }
    if let Some(c) = &attr.on_conflict {
        cx.syn_error(syn::Error::new(
            c.span,
            "`on_conflict` has no effect without `unique`; add e.g. `unique = \"until_executed\"`",
        ));
    }
}

/// A template whose every placeholder names a job argument (not the `&Context`).
fn template_of(cx: &Ctxt, lit: &syn::LitStr, job: &JobFn) -> Option<Vec<Segment>> {
    let segments = match template::parse(&lit.value()) {
        Ok(s) => s,
        Err(msg) => {
            cx.error_spanned_by(lit, msg);
            return None;
        }
    };
    let names: Vec<String> = job.params.iter().map(|p| p.ident.to_string()).collect();
    let mut ok = true;
    for segment in &segments {
        let Segment::Placeholder(path) = segment else {
            continue;
        };
        let param = &path[0];
        if names.iter().any(|n| n == param) {
            continue;
        }
        ok = false;
        let hint = match did_you_mean(param, names.iter().map(String::as_str)) {
            Some(s) => format!("; did you mean `<{s}>`?"),
            None if names.is_empty() => "; the function takes no job arguments".to_owned(),
            None => format!(
                "; its arguments are {}",
                crate::ctxt::one_of(&names.iter().map(String::as_str).collect::<Vec<_>>())
            ),
        };
        cx.error_spanned_by(
            lit,
            format!(
                "`<{}>` names no parameter of `{}`{hint}",
                path.join("."),
                job.ident()
            ),
        );
    }
    ok.then_some(segments)
}
