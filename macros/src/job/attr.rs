//! Parsing of `#[job(...)]` options into typed values.
//!
//! Each option is parsed on its own; a bad value is recorded in the [`Ctxt`] and parsing goes on,
//! so one build reports every mistake. Rules that relate several options live in `valid.rs`.

use std::str::FromStr as _;
use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::{Expr, ExprLit, Lit, LitStr};

use crate::ctxt::{did_you_mean, one_of, Ctxt};
use crate::symbol::*;

/// A value together with the tokens it was written as, for error spans.
pub(crate) struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum UniqueStrategy {
    UntilExecuting,
    UntilExecuted,
    WhileExecuting,
    UntilExpired,
}

pub(crate) const UNIQUE_STRATEGIES: &[&str] = &[
    "until_executing",
    "until_executed",
    "while_executing",
    "until_expired",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum OnConflict {
    Skip,
    Replace,
    Reject,
}

pub(crate) const ON_CONFLICT_VALUES: &[&str] = &["skip", "replace", "reject"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum CatchUp {
    None,
    Latest,
    All(u32),
}

pub(crate) const CATCH_UP_VALUES: &[&str] = &["none", "latest", "all", "all:<max>"];

pub(crate) enum Backoff {
    Exponential,
    Linear,
    Constant,
    /// A path to `fn(attempt: u32) -> Duration`.
    Custom(syn::Path),
}

pub(crate) const BACKOFF_VALUES: &[&str] = &["exponential", "linear", "constant"];

/// Everything `#[job(...)]` said, each option absent when not written.
#[derive(Default)]
pub(crate) struct JobAttr {
    pub queue: Option<Spanned<String>>,
    /// Attempts after the first.
    pub retry: Option<Spanned<u32>>,
    pub backoff: Option<Spanned<Backoff>>,
    pub unique: Option<Spanned<UniqueStrategy>>,
    pub unique_for: Option<Spanned<Duration>>,
    pub on_conflict: Option<Spanned<OnConflict>>,
    pub key: Option<LitStr>,
    pub priority: Option<Spanned<u8>>,
    pub timeout: Option<Spanned<Duration>>,
    /// How long after its run time a job that has not started is discarded.
    pub expires_in: Option<Spanned<Duration>>,
    /// A periodic job's cron expression, checked.
    pub cron: Option<LitStr>,
    /// The time zone its expression is read in, checked.
    pub timezone: Option<LitStr>,
    pub catch_up: Option<Spanned<CatchUp>>,
    /// At most this many jobs of the kind (or of one `concurrency_key`) run at once.
    pub concurrency: Option<Spanned<u32>>,
    /// The template of the key limits apply per, e.g. `"<account_id>"`.
    pub concurrency_key: Option<LitStr>,
    /// At most `max` starts per `per`, of the kind (or of one `concurrency_key`).
    pub rate: Option<Spanned<(u32, Duration)>>,
    /// The template of the key claims take turns between, e.g. `"<account_id>"`.
    pub fair_by: Option<LitStr>,
    /// The job that undoes this one in a saga, called with the same arguments.
    pub compensate: Option<syn::Path>,
    pub name: Option<Spanned<String>>,
    /// The path of the errand crate, for a user who renamed the dependency.
    pub krate: Option<syn::Path>,
}

/// The highest `retry` count accepted.
const MAX_RETRY: u64 = 100;
/// The lowest priority number (runs last).
const MAX_PRIORITY: u64 = 9;

impl JobAttr {
    /// Parses the attribute's arguments. Syntax errors (a missing `=`, an unparsable value) stop
    /// parsing and are returned; everything else is recorded in `cx`.
    pub(crate) fn parse(cx: &Ctxt, args: TokenStream) -> syn::Result<JobAttr> {
        let mut attr = JobAttr::default();
        let parser = syn::meta::parser(|meta| attr.parse_option(cx, meta));
        syn::parse::Parser::parse2(parser, args)?;
        Ok(attr)
    }

    fn parse_option(&mut self, cx: &Ctxt, meta: ParseNestedMeta) -> syn::Result<()> {
        let Some(ident) = meta.path.get_ident() else {
            cx.error_spanned_by(
                &meta.path,
                unknown_option_message(&path_to_string(&meta.path)),
            );
            return skip_value(&meta);
        };
        let key = ident.to_string();
        let value: Expr = meta.value()?.parse()?;
        match key.as_str() {
            // queue = "critical"
            QUEUE => {
                if let Some(s) = expect_str(cx, QUEUE, &value, "queue = \"critical\"") {
                    let name = s.value();
                    match check_queue_name(&name) {
                        Ok(()) => set(cx, &mut self.queue, ident, Spanned { value: name, span: s.span() }),
                        Err(why) => cx.error_spanned_by(&s, format!("invalid queue name `{name}`: {why}")),
                    }
                }
            }
            // retry = 5 | retry = false
            RETRY => match &value {
                Expr::Lit(ExprLit { lit: Lit::Int(n), .. }) => match n.base10_parse::<u64>() {
                    Ok(v) if v <= MAX_RETRY => {
                        set(cx, &mut self.retry, ident, Spanned { value: v as u32, span: n.span() })
                    }
                    _ => cx.error_spanned_by(
                        n,
                        format!("`retry = {n}` is out of range; expected a number of retries from 0 to {MAX_RETRY}, or `false`"),
                    ),
                },
                Expr::Lit(ExprLit { lit: Lit::Bool(b), .. }) if !b.value => {
                    set(cx, &mut self.retry, ident, Spanned { value: 0, span: b.span() })
                }
                other => cx.error_spanned_by(
                    other,
                    format!("expected a number of retries from 0 to {MAX_RETRY}, or `false`, for `retry`, e.g. `retry = 5`"),
                ),
            },
            // backoff = "exponential" | "linear" | "constant" | path::to::fn
            BACKOFF => match &value {
                Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => {
                    let b = match s.value().as_str() {
                        "exponential" => Some(Backoff::Exponential),
                        "linear" => Some(Backoff::Linear),
                        "constant" => Some(Backoff::Constant),
                        _ => None,
                    };
                    match b {
                        Some(b) => set(cx, &mut self.backoff, ident, Spanned { value: b, span: s.span() }),
                        None => cx.error_spanned_by(
                            s,
                            format!(
                                "unknown backoff `{}`; expected {}, or a path to a `fn(u32) -> std::time::Duration`",
                                s.value(),
                                one_of(BACKOFF_VALUES)
                            ),
                        ),
                    }
                }
                Expr::Path(p) if p.qself.is_none() => {
                    set(cx, &mut self.backoff, ident, Spanned { value: Backoff::Custom(p.path.clone()), span: span_of(p) })
                }
                other => cx.error_spanned_by(
                    other,
                    format!(
                        "expected {} or a path to a `fn(u32) -> std::time::Duration` for `backoff`",
                        one_of(BACKOFF_VALUES)
                    ),
                ),
            },
            // unique = "until_executed"
            UNIQUE => {
                if let Some(s) = expect_str(cx, UNIQUE, &value, "unique = \"until_executed\"") {
                    let strategy = match s.value().as_str() {
                        "until_executing" => Some(UniqueStrategy::UntilExecuting),
                        "until_executed" => Some(UniqueStrategy::UntilExecuted),
                        "while_executing" => Some(UniqueStrategy::WhileExecuting),
                        "until_expired" => Some(UniqueStrategy::UntilExpired),
                        _ => None,
                    };
                    match strategy {
                        Some(v) => set(cx, &mut self.unique, ident, Spanned { value: v, span: s.span() }),
                        None => cx.error_spanned_by(
                            &s,
                            format!(
                                "unknown unique strategy `{}`; expected {}{}",
                                s.value(),
                                one_of(UNIQUE_STRATEGIES),
                                suggestion(&s.value(), UNIQUE_STRATEGIES)
                            ),
                        ),
                    }
                }
            }
            // unique_for = "24h"
            UNIQUE_FOR => {
                if let Some(d) = parse_duration(cx, UNIQUE_FOR, &value) {
                    set(cx, &mut self.unique_for, ident, d);
                }
            }
            // on_conflict = "skip" | "replace" | "reject"
            ON_CONFLICT => {
                if let Some(s) = expect_str(cx, ON_CONFLICT, &value, "on_conflict = \"skip\"") {
                    let v = match s.value().as_str() {
                        "skip" => Some(OnConflict::Skip),
                        "replace" => Some(OnConflict::Replace),
                        "reject" => Some(OnConflict::Reject),
                        _ => None,
                    };
                    match v {
                        Some(v) => set(cx, &mut self.on_conflict, ident, Spanned { value: v, span: s.span() }),
                        None => cx.error_spanned_by(
                            &s,
                            format!("unknown on_conflict `{}`; expected {}", s.value(), one_of(ON_CONFLICT_VALUES)),
                        ),
                    }
                }
            }
            // key = "charge-<order_id>"
            KEY => {
                if let Some(s) = expect_str(cx, KEY, &value, "key = \"charge-<order_id>\"") {
                    if self.key.is_some() {
                        cx.error_spanned_by(ident, format!("duplicate `#[job]` option `{KEY}`"));
                    } else {
                        self.key = Some(s);
                    }
                }
            }
            // priority = 0..=9
            PRIORITY => match &value {
                Expr::Lit(ExprLit { lit: Lit::Int(n), .. }) => match n.base10_parse::<u64>() {
                    Ok(v) if v <= MAX_PRIORITY => {
                        set(cx, &mut self.priority, ident, Spanned { value: v as u8, span: n.span() })
                    }
                    _ => cx.error_spanned_by(
                        n,
                        format!("`priority = {n}` is out of range; expected 0 (runs first) to {MAX_PRIORITY}"),
                    ),
                },
                other => cx.error_spanned_by(
                    other,
                    format!("expected an integer from 0 to {MAX_PRIORITY} for `priority`, e.g. `priority = 1`"),
                ),
            },
            // timeout = "30s"
            TIMEOUT => {
                if let Some(d) = parse_duration(cx, TIMEOUT, &value) {
                    set(cx, &mut self.timeout, ident, d);
                }
            }
            // expires_in = "1h"
            EXPIRES_IN => {
                if let Some(d) = parse_duration(cx, EXPIRES_IN, &value) {
                    set(cx, &mut self.expires_in, ident, d);
                }
            }
            // cron = "0 */5 * * * *"
            CRON => {
                if let Some(s) = expect_str(cx, CRON, &value, "cron = \"0 */5 * * * *\"") {
                    match croner::Cron::from_str(&s.value()) {
                        Ok(_) if self.cron.is_some() => {
                            cx.error_spanned_by(ident, format!("duplicate `#[job]` option `{CRON}`"))
                        }
                        Ok(_) => self.cron = Some(s),
                        Err(e) => cx.error_spanned_by(
                            &s,
                            format!(
                                "invalid cron expression `{}` ({e}); expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, e.g. `\"0 */5 * * * *\"`",
                                s.value()
                            ),
                        ),
                    }
                }
            }
            // timezone = "Europe/Berlin"
            TIMEZONE => {
                if let Some(s) = expect_str(cx, TIMEZONE, &value, "timezone = \"Europe/Berlin\"") {
                    let name = s.value();
                    if jiff::tz::db().get(&name).is_ok() {
                        if self.timezone.is_some() {
                            cx.error_spanned_by(ident, format!("duplicate `#[job]` option `{TIMEZONE}`"));
                        } else {
                            self.timezone = Some(s);
                        }
                    } else {
                        let names: Vec<String> = jiff::tz::db().available().map(|n| n.to_string()).collect();
                        let hint = match did_you_mean(&name, names.iter().map(String::as_str)) {
                            Some(s) => format!(" (did you mean `{s}`?)"),
                            None => String::new(),
                        };
                        cx.error_spanned_by(
                            &s,
                            format!("unknown time zone `{name}`{hint}; expected an IANA name such as `\"Europe/Berlin\"` or `\"UTC\"`"),
                        );
                    }
                }
            }
            // catch_up = "none" | "latest" | "all" | "all:48"
            CATCH_UP => {
                if let Some(s) = expect_str(cx, CATCH_UP, &value, "catch_up = \"latest\"") {
                    let v = match s.value().as_str() {
                        "none" => Some(CatchUp::None),
                        "latest" => Some(CatchUp::Latest),
                        "all" => Some(CatchUp::All(24)),
                        other => other
                            .strip_prefix("all:")
                            .and_then(|max| max.parse::<u32>().ok())
                            .filter(|max| *max > 0)
                            .map(CatchUp::All),
                    };
                    match v {
                        Some(v) => set(cx, &mut self.catch_up, ident, Spanned { value: v, span: s.span() }),
                        None => cx.error_spanned_by(
                            &s,
                            format!("unknown catch_up `{}`; expected {} (`all:48` runs at most the latest 48 missed slots)", s.value(), one_of(CATCH_UP_VALUES)),
                        ),
                    }
                }
            }
            // concurrency = 2
            CONCURRENCY => match &value {
                Expr::Lit(ExprLit { lit: Lit::Int(n), .. }) => match n.base10_parse::<u32>() {
                    Ok(v) if v >= 1 => set(cx, &mut self.concurrency, ident, Spanned { value: v, span: n.span() }),
                    _ => cx.error_spanned_by(n, format!("`concurrency = {n}` is out of range; expected 1 or more")),
                },
                other => cx.error_spanned_by(other, "expected an integer for `concurrency`, e.g. `concurrency = 2`"),
            },
            // concurrency_key = "<account_id>"
            CONCURRENCY_KEY => {
                if let Some(s) = expect_str(cx, CONCURRENCY_KEY, &value, "concurrency_key = \"<account_id>\"") {
                    if self.concurrency_key.is_some() {
                        cx.error_spanned_by(ident, format!("duplicate `#[job]` option `{CONCURRENCY_KEY}`"));
                    } else {
                        self.concurrency_key = Some(s);
                    }
                }
            }
            // rate = "100/1m"
            RATE => {
                if let Some(s) = expect_str(cx, RATE, &value, "rate = \"100/1m\"") {
                    let text = s.value();
                    let parsed = text.split_once('/').and_then(|(max, per)| {
                        let max = max.trim().parse::<u32>().ok().filter(|m| *m >= 1)?;
                        let per = humantime::parse_duration(per.trim()).ok().filter(|d| !d.is_zero())?;
                        Some((max, per))
                    });
                    match parsed {
                        Some(v) => set(cx, &mut self.rate, ident, Spanned { value: v, span: s.span() }),
                        None => cx.error_spanned_by(
                            &s,
                            format!("invalid rate `{text}`; expected starts per window, e.g. `\"100/1m\"`, `\"5/1s\"` or `\"1000/1h\"`"),
                        ),
                    }
                }
            }
            // fair_by = "<account_id>"
            FAIR_BY => {
                if let Some(s) = expect_str(cx, FAIR_BY, &value, "fair_by = \"<account_id>\"") {
                    if self.fair_by.is_some() {
                        cx.error_spanned_by(ident, format!("duplicate `#[job]` option `{FAIR_BY}`"));
                    } else {
                        self.fair_by = Some(s);
                    }
                }
            }
            // compensate = refund | compensate = billing::refund
            COMPENSATE => match &value {
                Expr::Path(p) if p.qself.is_none() => {
                    if self.compensate.is_some() {
                        cx.error_spanned_by(ident, format!("duplicate `#[job]` option `{COMPENSATE}`"));
                    } else {
                        self.compensate = Some(p.path.clone());
                    }
                }
                other => cx.error_spanned_by(
                    other,
                    "expected the path of the `#[job]` that undoes this one, taking the same arguments, e.g. `compensate = refund`",
                ),
            },
            // name = "billing.charge_order"
            NAME => {
                if let Some(s) = expect_str(cx, NAME, &value, "name = \"charge_order\"") {
                    let name = s.value();
                    match check_kind_name(&name) {
                        Ok(()) => set(cx, &mut self.name, ident, Spanned { value: name, span: s.span() }),
                        Err(why) => cx.error_spanned_by(&s, format!("invalid job name `{name}`: {why}")),
                    }
                }
            }
            // crate = "my_errand"
            CRATE => {
                if let Some(s) = expect_str(cx, CRATE, &value, "crate = \"my_errand\"") {
                    match s.parse::<syn::Path>() {
                        Ok(path) if self.krate.is_none() => self.krate = Some(path),
                        Ok(_) => cx.error_spanned_by(ident, "duplicate `#[job]` option `crate`"),
                        Err(_) => cx.error_spanned_by(
                            &s,
                            format!("invalid crate path `{}`; expected a path such as `\"my_errand\"` or `\"::my_errand\"`", s.value()),
                        ),
                    }
                }
            }
            _ => cx.error_spanned_by(ident, unknown_option_message(&key)),
        }
        Ok(())
    }
}

/// Stores an option, or reports a duplicate on its second occurrence.
fn set<T>(cx: &Ctxt, slot: &mut Option<T>, key: &syn::Ident, value: T) {
    if slot.is_some() {
        cx.error_spanned_by(key, format!("duplicate `#[job]` option `{key}`"));
    } else {
        *slot = Some(value);
    }
}

fn unknown_option_message(key: &str) -> String {
    format!(
        "unknown `#[job]` option `{key}`; expected one of {}{}",
        one_of(JOB_OPTIONS),
        suggestion(key, JOB_OPTIONS)
    )
}

/// `" (did you mean `x`?)"`, or nothing.
pub(crate) fn suggestion(word: &str, candidates: &[&str]) -> String {
    match did_you_mean(word, candidates.iter().copied()) {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

/// Consumes `= value` after an option whose name was not a single identifier.
fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let _: Expr = meta.value()?.parse()?;
    }
    Ok(())
}

fn path_to_string(path: &syn::Path) -> String {
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    segments.join("::")
}

fn span_of<T: quote::ToTokens>(t: &T) -> Span {
    syn::spanned::Spanned::span(t)
}

fn expect_str(cx: &Ctxt, key: &str, value: &Expr, example: &str) -> Option<LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.clone()),
        other => {
            cx.error_spanned_by(
                other,
                format!("expected a string literal for `{key}`, e.g. `{example}`"),
            );
            None
        }
    }
}

fn parse_duration(cx: &Ctxt, key: &str, value: &Expr) -> Option<Spanned<Duration>> {
    let example = format!("{key} = \"30s\"");
    let s = expect_str(cx, key, value, &example)?;
    match humantime::parse_duration(&s.value()) {
        Ok(d) if !d.is_zero() => Some(Spanned {
            value: d,
            span: s.span(),
        }),
        Ok(_) => {
            cx.error_spanned_by(&s, format!("`{key}` must be longer than zero; expected e.g. `\"30s\"`, `\"5m\"`, `\"24h\"`"));
            None
        }
        Err(_) => {
            cx.error_spanned_by(
                &s,
                format!("invalid duration `{:?}` for `{key}`; expected e.g. `\"30s\"`, `\"5m\"`, `\"24h\"`", s.value()),
            );
            None
        }
    }
}

/// Queue names are `[a-z0-9_-]{1,64}`: safe in logs, URLs and metric labels.
pub(crate) fn check_queue_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("expected 1 to 64 characters, found {}", name.len()));
    }
    match name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
    {
        Some(c) => Err(format!(
            "`{c}` is not allowed; use lowercase letters, digits, `_` and `-`"
        )),
        None => Ok(()),
    }
}

/// Kind names are `[A-Za-z0-9_.:-]{1,128}`.
fn check_kind_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!(
            "expected 1 to 128 characters, found {}",
            name.len()
        ));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        Some(c) => Err(format!(
            "`{c}` is not allowed; use letters, digits, `_`, `.`, `:` and `-`"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: TokenStream) -> (Option<JobAttr>, Vec<String>) {
        let cx = Ctxt::new();
        let attr = JobAttr::parse(&cx, tokens).ok();
        let errors = match cx.check() {
            Ok(()) => vec![],
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        };
        (attr, errors)
    }

    #[test]
    fn parses_every_option() {
        let (attr, errors) = parse(quote!(
            queue = "critical",
            retry = 5,
            backoff = "linear",
            unique = "until_expired",
            unique_for = "24h",
            on_conflict = "replace",
            key = "k-<a>",
            priority = 1,
            timeout = "30s",
            name = "billing.charge"
        ));
        assert!(errors.is_empty(), "{errors:?}");
        let attr = attr.unwrap();
        assert_eq!(attr.queue.unwrap().value, "critical");
        assert_eq!(attr.retry.unwrap().value, 5);
        assert_eq!(attr.unique.unwrap().value, UniqueStrategy::UntilExpired);
        assert_eq!(attr.unique_for.unwrap().value, Duration::from_secs(86_400));
        assert_eq!(attr.on_conflict.unwrap().value, OnConflict::Replace);
        assert_eq!(attr.priority.unwrap().value, 1);
        assert_eq!(attr.timeout.unwrap().value, Duration::from_secs(30));
        assert_eq!(attr.name.unwrap().value, "billing.charge");
    }

    #[test]
    fn retry_false_means_zero() {
        let (attr, _) = parse(quote!(retry = false));
        assert_eq!(attr.unwrap().retry.unwrap().value, 0);
    }

    #[test]
    fn accumulates_every_error() {
        let (_, errors) = parse(quote!(
            retries = 5,
            queue = "Bad Name",
            priority = 12,
            queue = "a"
        ));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("did you mean `retry`"));
        assert!(errors[1].contains("invalid queue name"));
        assert!(errors[2].contains("out of range"));
    }

    #[test]
    fn duplicate_is_reported() {
        let (_, errors) = parse(quote!(queue = "a", queue = "b"));
        assert_eq!(errors, vec!["duplicate `#[job]` option `queue`"]);
    }

    #[test]
    fn queue_names() {
        assert!(check_queue_name("bulk_2-x").is_ok());
        assert!(check_queue_name("").is_err());
        assert!(check_queue_name("Critical").is_err());
        assert!(check_queue_name(&"a".repeat(65)).is_err());
    }
}
