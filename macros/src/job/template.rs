//! Key templates: literal text with `<param>` and `<param.field>` placeholders, rendered with
//! `Display`, as in `key = "charge-<order_id>"`.

/// One piece of a template.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    Text(String),
    /// `<order.id>` is `["order", "id"]`.
    Placeholder(Vec<String>),
}

/// Splits a template into text and placeholders, or says what is wrong with it.
pub(crate) fn parse(template: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('<') {
        if open > 0 {
            segments.push(Segment::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            return Err(format!(
                "unclosed placeholder in key template `{template}`; write `<param>` or `<param.field>`"
            ));
        };
        let inner = after[..close].trim();
        if inner.is_empty() {
            return Err(format!(
                "empty placeholder `<>` in key template `{template}`; write `<param>` or `<param.field>`"
            ));
        }
        let path: Vec<String> = inner.split('.').map(|s| s.trim().to_owned()).collect();
        if let Some(bad) = path.iter().find(|s| !is_identifier(s)) {
            return Err(format!(
                "`<{inner}>` is not a placeholder: `{bad}` is not an identifier; write `<param>` or `<param.field>`"
            ));
        }
        segments.push(Segment::Placeholder(path));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest.to_owned()));
    }
    if segments.is_empty() {
        return Err("key template is empty; write e.g. `key = \"charge-<order_id>\"`".to_owned());
    }
    Ok(segments)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_text_and_placeholders() {
        assert_eq!(
            parse("charge-<order_id>/<user.id>").unwrap(),
            vec![
                Segment::Text("charge-".into()),
                Segment::Placeholder(vec!["order_id".into()]),
                Segment::Text("/".into()),
                Segment::Placeholder(vec!["user".into(), "id".into()]),
            ]
        );
        assert_eq!(
            parse("static").unwrap(),
            vec![Segment::Text("static".into())]
        );
    }

    #[test]
    fn rejects_malformed_templates() {
        assert!(parse("charge-<order_id").unwrap_err().contains("unclosed"));
        assert!(parse("a<>").unwrap_err().contains("empty"));
        assert!(parse("a<1x>").unwrap_err().contains("not an identifier"));
        assert!(parse("").unwrap_err().contains("empty"));
    }
}
