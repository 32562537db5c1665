//! Placeholders in trigger templates: `{{labels.NAME}}` and `{{annotations.NAME}}`.
//!
//! One syntax, used by validation (with stand-in values) and by the trigger engine (with the
//! event's values). Anything else between `{{` and `}}` is an error, never passed through.

use std::collections::BTreeMap;

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without `}}`.
    #[error("unclosed placeholder at byte {pos}: {text:?}")]
    Unclosed {
        /// The template text.
        text: String,
        /// Byte offset of the `{{`.
        pos: usize,
    },
    /// Not `labels.NAME` or `annotations.NAME`.
    #[error(
        "unknown placeholder {{{{{inner}}}}} in {text:?} (use {{{{labels.NAME}}}} or \
         {{{{annotations.NAME}}}})"
    )]
    Unknown {
        /// The template text.
        text: String,
        /// What was between the braces.
        inner: String,
    },
    /// The event has no such label/annotation.
    #[error("the event has no {kind} {name:?} (needed by {text:?})")]
    Missing {
        /// The template text.
        text: String,
        /// `label` or `annotation`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
}

/// Values placeholders are filled from.
pub trait Lookup {
    /// A label value.
    fn label(&self, name: &str) -> Option<&str>;
    /// An annotation value.
    fn annotation(&self, name: &str) -> Option<&str>;
}

/// Labels and annotations of an event.
#[derive(Debug, Clone, Copy)]
pub struct EventValues<'a> {
    /// Labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Annotations.
    pub annotations: &'a BTreeMap<String, String>,
}

impl Lookup for EventValues<'_> {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
    fn annotation(&self, name: &str) -> Option<&str> {
        self.annotations.get(name).map(String::as_str)
    }
}

/// Answers every lookup with the same value (validation of templates without an event).
#[derive(Debug, Clone, Copy)]
pub struct StandIn(pub &'static str);

impl Lookup for StandIn {
    fn label(&self, _: &str) -> Option<&str> {
        Some(self.0)
    }
    fn annotation(&self, _: &str) -> Option<&str> {
        Some(self.0)
    }
}

/// Whether `text` contains a placeholder.
pub fn has_placeholder(text: &str) -> bool {
    text.contains("{{")
}

/// Replaces every placeholder in `text`.
pub fn render(text: &str, values: &dyn Lookup) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| TemplateError::Unclosed {
            text: text.to_owned(),
            pos: offset + start,
        })?;
        let inner = after[..end].trim();
        let (kind, name) = match inner.split_once('.') {
            Some(("labels", n)) if valid_name(n) => ("label", n),
            Some(("annotations", n)) if valid_name(n) => ("annotation", n),
            _ => {
                return Err(TemplateError::Unknown {
                    text: text.to_owned(),
                    inner: inner.to_owned(),
                });
            }
        };
        let value = if kind == "label" {
            values.label(name)
        } else {
            values.annotation(name)
        };
        let value = value.ok_or_else(|| TemplateError::Missing {
            text: text.to_owned(),
            kind,
            name: name.to_owned(),
        })?;
        out.push_str(value);
        let consumed = start + 2 + end + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders every string inside a JSON value (keys and values).
pub fn render_json(
    value: &serde_json::Value,
    values: &dyn Lookup,
) -> Result<serde_json::Value, TemplateError> {
    use serde_json::Value;
    Ok(match value {
        Value::String(s) => Value::String(render(s, values)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_json(v, values))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(render(k, values)?, render_json(v, values)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// Prometheus-style label names (also fine for annotations): `[A-Za-z_][A-Za-z0-9_]*`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels_and_annotations() {
        let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        let annotations = BTreeMap::from([("summary".to_owned(), "down".to_owned())]);
        let v = EventValues {
            labels: &labels,
            annotations: &annotations,
        };
        let cases = [
            ("plain", Ok("plain".to_owned())),
            ("{{labels.app}}", Ok("web".to_owned())),
            (
                "x-{{ labels.app }}-{{annotations.summary}}",
                Ok("x-web-down".to_owned()),
            ),
            ("{{labels.pod}}", Err("no label \"pod\"")),
            ("{{env.HOME}}", Err("unknown placeholder")),
            ("{{labels.a-b}}", Err("unknown placeholder")),
            ("{{labels.app", Err("unclosed")),
        ];
        for (text, want) in cases {
            match (render(text, &v), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(err), Err(want)) => assert!(err.to_string().contains(want), "{text}: {err}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn renders_json_keys_and_values() {
        let json = serde_json::json!({"matchLabels": {"{{labels.k}}": "{{labels.k}}"}, "n": 1});
        let got = render_json(&json, &StandIn("x")).expect("renders");
        assert_eq!(got, serde_json::json!({"matchLabels": {"x": "x"}, "n": 1}));
    }
}
