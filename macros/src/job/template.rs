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
///
/// Rendered keys must be injective: two different argument lists never render one key. So a
/// placeholder followed by another one later is escaped (see [`separator`]), and the text
/// between them must give it a separator that escaping cannot produce.
pub(crate) fn parse(template: &str) -> Result<Vec<Segment>, String> {
    let segments = split(template)?;
    for (i, segment) in segments.iter().enumerate() {
        let Segment::Placeholder(path) = segment else {
            continue;
        };
        let later_placeholder = segments[i + 1..]
            .iter()
            .any(|s| matches!(s, Segment::Placeholder(_)));
        if !later_placeholder {
            continue;
        }
        let name = path.join(".");
        match segments.get(i + 1) {
            Some(Segment::Text(text)) => {
                if let Some(c) = text.chars().next().filter(|c| !separates(*c)) {
                    return Err(format!(
                        "the text after `<{name}>` starts with `{c}`, which an escaped value can contain; \
                         start it with another character (e.g. `-`, `:` or `/`) so that different arguments cannot render one key"
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "`<{name}>` is followed directly by another placeholder; put text between them \
                     (e.g. `<a>-<b>`) so that different arguments cannot render one key"
                ));
            }
        }
    }
    Ok(segments)
}

/// The character after placeholder `index` that rendering escapes in its value, when a later
/// placeholder follows it: the first character of the text after it. `None` for the last
/// placeholder, whose value is rendered as it is.
pub(crate) fn separator(segments: &[Segment], index: usize) -> Option<char> {
    let later_placeholder = segments[index + 1..]
        .iter()
        .any(|s| matches!(s, Segment::Placeholder(_)));
    match segments.get(index + 1) {
        Some(Segment::Text(text)) if later_placeholder => text.chars().next(),
        _ => None,
    }
}

/// Whether `c` can end an escaped value: escaping writes `%` and the hex digits `0-9A-F`.
fn separates(c: char) -> bool {
    !(c == '%' || c.is_ascii_digit() || ('A'..='F').contains(&c))
}

fn split(template: &str) -> Result<Vec<Segment>, String> {
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
    fn values_before_another_placeholder_are_escaped_at_their_separator() {
        let segments = parse("ship-<id>-to-<city>").unwrap();
        assert_eq!(separator(&segments, 1), Some('-'));
        assert_eq!(separator(&segments, 3), None);
        let single = parse("charge-<order_id>").unwrap();
        assert_eq!(separator(&single, 1), None);
    }

    #[test]
    fn placeholders_need_a_separator_escaping_cannot_forge() {
        assert!(parse("<a><b>").unwrap_err().contains("followed directly"));
        assert!(parse("<a>7<b>").unwrap_err().contains("starts with `7`"));
        assert!(parse("<a>%<b>").unwrap_err().contains("starts with `%`"));
        assert!(parse("<a>E<b>").unwrap_err().contains("starts with `E`"));
        assert!(parse("<a>e<b>").is_ok());
        assert!(parse("<a>:<b>").is_ok());
        // The last placeholder needs no separator.
        assert!(parse("x<a>").is_ok());
    }

    #[test]
    fn rejects_malformed_templates() {
        assert!(parse("charge-<order_id").unwrap_err().contains("unclosed"));
        assert!(parse("a<>").unwrap_err().contains("empty"));
        assert!(parse("a<1x>").unwrap_err().contains("not an identifier"));
        assert!(parse("").unwrap_err().contains("empty"));
    }
}
