//! A span-keeping view of a parsed TOML document: every node knows its dotted key path
//! and where it is in the text, so every error can name file, line, column and key.

use std::ops::Range;

use toml_edit::{Item, Table, Value};

use super::ConfigError;

/// A byte range in the configuration text, when known.
pub(super) type Span = Option<Range<usize>>;

/// The text being parsed and the name it is reported under.
pub(super) struct Source<'a> {
    pub text: &'a str,
    pub file: String,
}

impl Source<'_> {
    /// An error at `span` (its start), about `key`.
    pub fn error(&self, span: &Span, key: &str, message: impl Into<String>) -> ConfigError {
        let offset = span.as_ref().map_or(0, |r| r.start);
        let (line, column) = line_col(self.text, offset);
        ConfigError {
            file: self.file.clone(),
            line,
            column,
            key: if key.is_empty() {
                "-".into()
            } else {
                key.into()
            },
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// `parent.key`, quoting keys that are not bare TOML keys (`well_known.client_extra."m.tile"`).
pub(super) fn child_path(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

#[derive(Clone, Copy)]
enum Kind<'a> {
    Table(&'a Table),
    Inline(&'a toml_edit::InlineTable),
    Tables(&'a toml_edit::ArrayOfTables),
    Array(&'a toml_edit::Array),
    Scalar(&'a Value),
    Empty,
}

impl<'a> Kind<'a> {
    fn of_item(item: &'a Item) -> Kind<'a> {
        match item {
            Item::None => Kind::Empty,
            Item::Value(v) => Kind::of_value(v),
            Item::Table(t) => Kind::Table(t),
            Item::ArrayOfTables(a) => Kind::Tables(a),
        }
    }

    fn of_value(value: &'a Value) -> Kind<'a> {
        match value {
            Value::Array(a) => Kind::Array(a),
            Value::InlineTable(t) => Kind::Inline(t),
            v => Kind::Scalar(v),
        }
    }
}

/// A value in the document, with its key path and location.
#[derive(Clone)]
pub(super) struct Node<'a> {
    pub path: String,
    pub span: Span,
    kind: Kind<'a>,
}

/// A scalar TOML value, borrowed.
pub(super) enum Scalar<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime,
}

/// One element of a node, for generic conversions (TOML to JSON).
pub(super) enum Shape<'a> {
    Scalar(Scalar<'a>),
    Array(Vec<Node<'a>>),
    Table(Vec<(&'a str, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// The document root.
    pub fn root(item: &'a Item) -> Node<'a> {
        Node {
            path: String::new(),
            span: Some(0..0),
            kind: Kind::of_item(item),
        }
    }

    fn of_item(item: &'a Item, path: String, fallback: Span) -> Node<'a> {
        Node {
            path,
            span: item.span().or(fallback),
            kind: Kind::of_item(item),
        }
    }

    fn of_value(value: &'a Value, path: String, fallback: Span) -> Node<'a> {
        Node {
            path,
            span: value.span().or(fallback),
            kind: Kind::of_value(value),
        }
    }

    /// What this node is, for "found …" in messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Table(_) | Kind::Inline(_) => "a table",
            Kind::Tables(_) => "an array of tables",
            Kind::Array(_) => "an array",
            Kind::Empty => "nothing",
            Kind::Scalar(v) => match v {
                Value::String(_) => "a string",
                Value::Integer(_) => "an integer",
                Value::Float(_) => "a float",
                Value::Boolean(_) => "a boolean",
                Value::Datetime(_) => "a date-time",
                Value::Array(_) => "an array",
                Value::InlineTable(_) => "a table",
            },
        }
    }

    pub fn error(&self, src: &Source<'_>, message: impl Into<String>) -> ConfigError {
        src.error(&self.span, &self.path, message)
    }

    /// "expected X, found Y".
    pub fn expected(&self, src: &Source<'_>, what: &str) -> ConfigError {
        self.error(src, format!("expected {what}, found {}", self.type_name()))
    }

    pub fn scalar(&self) -> Option<Scalar<'a>> {
        match self.kind {
            Kind::Scalar(v) => Some(match v {
                Value::String(s) => Scalar::Str(s.value()),
                Value::Integer(i) => Scalar::Int(*i.value()),
                Value::Float(f) => Scalar::Float(*f.value()),
                Value::Boolean(b) => Scalar::Bool(*b.value()),
                _ => Scalar::Datetime,
            }),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&'a str> {
        match self.scalar() {
            Some(Scalar::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.scalar() {
            Some(Scalar::Bool(b)) => Some(b),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self.scalar() {
            Some(Scalar::Int(i)) => Some(i),
            _ => None,
        }
    }

    /// A string, or an error saying `what` was expected.
    pub fn string(&self, src: &Source<'_>, what: &str) -> Result<&'a str, ConfigError> {
        self.as_str().ok_or_else(|| self.expected(src, what))
    }

    pub fn boolean(&self, src: &Source<'_>) -> Result<bool, ConfigError> {
        self.as_bool()
            .ok_or_else(|| self.expected(src, "`true` or `false`"))
    }

    pub fn is_table(&self) -> bool {
        matches!(self.kind, Kind::Table(_) | Kind::Inline(_))
    }

    /// The elements of an array (or array of tables), each with its `path[i]`.
    pub fn elements(&self) -> Option<Vec<Node<'a>>> {
        match self.kind {
            Kind::Array(a) => Some(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        Node::of_value(v, format!("{}[{i}]", self.path), self.span.clone())
                    })
                    .collect(),
            ),
            Kind::Tables(a) => Some(
                a.iter()
                    .enumerate()
                    .map(|(i, t)| Node {
                        path: format!("{}[{i}]", self.path),
                        span: t.span().or_else(|| self.span.clone()),
                        kind: Kind::Table(t),
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    pub fn array(&self, src: &Source<'_>, what: &str) -> Result<Vec<Node<'a>>, ConfigError> {
        self.elements().ok_or_else(|| self.expected(src, what))
    }

    /// A list that may also be written as a single value (`bind = "[::]:443"`).
    pub fn one_or_many(&self) -> Vec<Node<'a>> {
        self.elements().unwrap_or_else(|| vec![self.clone()])
    }

    /// The entries of a table, in document order, with each key's location.
    pub fn entries(&self) -> Option<Vec<(&'a str, Span, Node<'a>)>> {
        match self.kind {
            Kind::Table(t) => Some(
                t.iter()
                    .map(|(k, item)| {
                        let key_span = t.get_key_value(k).and_then(|(key, _)| key.span());
                        let key_span = key_span.or_else(|| self.span.clone());
                        let node = Node::of_item(item, child_path(&self.path, k), key_span.clone());
                        (k, key_span, node)
                    })
                    .collect(),
            ),
            Kind::Inline(t) => Some(
                t.iter()
                    .map(|(k, value)| {
                        let key_span = t.get_key_value(k).and_then(|(key, _)| key.span());
                        let key_span = key_span.or_else(|| self.span.clone());
                        let node =
                            Node::of_value(value, child_path(&self.path, k), key_span.clone());
                        (k, key_span, node)
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The table at this node, refusing keys not in `allowed`.
    pub fn table(
        &self,
        src: &Source<'_>,
        allowed: &'static [&'static str],
    ) -> Result<Fields<'a>, ConfigError> {
        let entries = self
            .entries()
            .ok_or_else(|| self.expected(src, "a table"))?;
        for (key, key_span, _) in &entries {
            if !allowed.contains(key) {
                return Err(src.error(
                    key_span,
                    &child_path(&self.path, key),
                    unknown_key_message(key, allowed),
                ));
            }
        }
        Ok(Fields {
            path: self.path.clone(),
            span: self.span.clone(),
            entries: entries.into_iter().map(|(k, _, n)| (k, n)).collect(),
        })
    }

    /// The generic shape of this node.
    pub fn shape(&self) -> Shape<'a> {
        if let Some(entries) = self.entries() {
            return Shape::Table(entries.into_iter().map(|(k, _, n)| (k, n)).collect());
        }
        if let Some(elements) = self.elements() {
            return Shape::Array(elements);
        }
        Shape::Scalar(self.scalar().unwrap_or(Scalar::Datetime))
    }
}

fn unknown_key_message(key: &str, allowed: &[&str]) -> String {
    let mut message = format!(
        "unknown key `{key}`, expected one of {}",
        allowed.join(", ")
    );
    if let Some(close) = allowed
        .iter()
        .filter(|a| key.len() > 1 && edit_distance(key, a) <= (key.len() / 3).max(2))
        .min_by_key(|a| edit_distance(key, a))
    {
        message.push_str(&format!(" (did you mean `{close}`?)"));
    }
    message
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The known keys of a table.
pub(super) struct Fields<'a> {
    pub path: String,
    pub span: Span,
    entries: Vec<(&'a str, Node<'a>)>,
}

impl<'a> Fields<'a> {
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, n)| n)
    }

    /// A required key; the error says what was expected.
    pub fn require(
        &self,
        src: &Source<'_>,
        key: &str,
        what: &str,
    ) -> Result<&Node<'a>, ConfigError> {
        self.get(key).ok_or_else(|| {
            src.error(
                &self.span,
                &child_path(&self.path, key),
                format!("missing; expected {what}"),
            )
        })
    }

    /// An error about a key that is absent (at the table's location).
    pub fn missing(&self, src: &Source<'_>, key: &str, message: impl Into<String>) -> ConfigError {
        src.error(&self.span, &child_path(&self.path, key), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // After "bé " (4 bytes, 3 characters).
        assert_eq!(line_col(text, 10), (2, 4));
        assert_eq!(line_col(text, 1000), (3, 1));
    }

    #[test]
    fn paths_quote_keys_that_are_not_bare() {
        assert_eq!(child_path("", "tls"), "tls");
        assert_eq!(child_path("tls", "sni"), "tls.sni");
        assert_eq!(
            child_path("well_known", "m.server"),
            "well_known.\"m.server\""
        );
    }

    #[test]
    fn close_keys_are_suggested() {
        let m = unknown_key_message("bnd", &["role", "bind", "tls"]);
        assert_eq!(
            m,
            "unknown key `bnd`, expected one of role, bind, tls (did you mean `bind`?)"
        );
        let m = unknown_key_message("zzzzzz", &["role", "bind"]);
        assert_eq!(m, "unknown key `zzzzzz`, expected one of role, bind");
    }
}
