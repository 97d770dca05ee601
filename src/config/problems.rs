//! Configuration problems: every error found in one pass, each with its key path and, where the
//! TOML source has one, its line and column.

use std::fmt;

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Zero-based key path such as `routes[2].allow.pipelines` (empty for the whole file).
    pub path: String,
    /// What is wrong, in words for an operator. Never contains a secret value.
    pub message: String,
    /// One-based line and column in the TOML source, when the path exists there.
    pub location: Option<(usize, usize)>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() { "<file>" } else { &self.path };
        match self.location {
            Some((line, col)) => write!(f, "{path} (line {line}, column {col}): {}", self.message),
            None => write!(f, "{path}: {}", self.message),
        }
    }
}

/// All problems of one configuration, in the order they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl fmt::Display, message: impl Into<String>) {
        self.list.push(Problem { path: path.to_string(), message: message.into(), location: None });
    }

    /// Records a problem whose location is already known (TOML syntax errors).
    pub fn push_at(&mut self, path: impl fmt::Display, message: impl Into<String>, location: (usize, usize)) {
        self.list.push(Problem { path: path.to_string(), message: message.into(), location: Some(location) });
    }

    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The problems found so far.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.list.iter()
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Fills in line and column for every problem whose path exists in `source`.
    pub fn locate(&mut self, source: &str) {
        let Ok(doc) = source.parse::<toml_edit::Document<String>>() else { return };
        for problem in &mut self.list {
            if problem.location.is_none() {
                problem.location = span_of(doc.as_table(), &problem.path).map(|offset| line_col(source, offset));
            }
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "configuration has {} problem(s):", self.list.len())?;
        for p in &self.list {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// One step of a key path.
#[derive(Debug, PartialEq, Eq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `routes[2].allow."a.b"` into steps. Quoted keys may contain dots.
fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            rest = r;
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').unwrap_or(r.len());
            if let Ok(i) = r[..end].parse() {
                out.push(Step::Index(i));
            }
            rest = r.get(end + 1..).unwrap_or("");
        } else if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            out.push(Step::Key(&r[..end]));
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            out.push(Step::Key(&rest[..end]));
            rest = &rest[end..];
        }
    }
    out
}

/// A place in the parsed document that a path step can enter.
enum Node<'a> {
    Table(&'a toml_edit::Table),
    Inline(&'a toml_edit::InlineTable),
    Array(&'a toml_edit::Array),
    Tables(&'a toml_edit::ArrayOfTables),
    Leaf,
}

impl<'a> Node<'a> {
    fn of_item(item: &'a toml_edit::Item) -> Self {
        match item {
            toml_edit::Item::Table(t) => Node::Table(t),
            toml_edit::Item::ArrayOfTables(a) => Node::Tables(a),
            toml_edit::Item::Value(v) => Node::of_value(v),
            toml_edit::Item::None => Node::Leaf,
        }
    }

    fn of_value(value: &'a toml_edit::Value) -> Self {
        match value {
            toml_edit::Value::InlineTable(t) => Node::Inline(t),
            toml_edit::Value::Array(a) => Node::Array(a),
            _ => Node::Leaf,
        }
    }
}

/// Byte offset of the deepest part of `path` present in the document.
fn span_of(root: &toml_edit::Table, path: &str) -> Option<usize> {
    let mut best = None;
    let mut node = Node::Table(root);
    for step in steps(path) {
        let (span, next) = match (node, step) {
            (Node::Table(t), Step::Key(k)) => match t.get_key_value(k) {
                Some((key, item)) => (key.span(), Node::of_item(item)),
                None => break,
            },
            (Node::Inline(t), Step::Key(k)) => match t.get_key_value(k) {
                Some((key, value)) => (key.span(), Node::of_item(value)),
                None => break,
            },
            (Node::Tables(a), Step::Index(i)) => match a.get(i) {
                Some(t) => (t.span(), Node::Table(t)),
                None => break,
            },
            (Node::Array(a), Step::Index(i)) => match a.get(i) {
                Some(v) => (v.span(), Node::of_value(v)),
                None => break,
            },
            _ => break,
        };
        best = span.map(|s| s.start).or(best);
        node = next;
    }
    best
}

/// One-based line and column (in characters) of a byte offset.
pub(super) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_steps() {
        assert_eq!(
            steps("routes[2].allow.\"a.b\""),
            vec![Step::Key("routes"), Step::Index(2), Step::Key("allow"), Step::Key("a.b")]
        );
    }

    #[test]
    fn locates_keys_inside_arrays_of_tables_and_inline_tables() {
        let src = "[server]\nlisten = \"x\"\n\n[[routes]]\nname = \"a\"\n\n[[routes]]\nname = \"b\"\nallow = { pipelines = [\"x\", 3] }\n";
        let mut p = Problems::default();
        p.push("routes[1].allow.pipelines[1]", "not a string");
        p.push("server.listen", "bad");
        p.push("routes[1].missing", "required");
        p.locate(src);
        let locs: Vec<_> = p.iter().map(|p| p.location).collect();
        assert_eq!(locs[0], Some((9, 29)));
        assert_eq!(locs[1], Some((2, 1)));
        assert_eq!(locs[2], Some((7, 1)), "falls back to the nearest existing ancestor");
    }
}
