//! Field paths: `spec.template.spec.containers[name=web].resources.limits["cpu"]`.
//!
//! One type serves both the policy patterns (which may use `[*]`) and the concrete paths
//! that the diff and the managedFields decoder produce, so that a deny message prints a
//! changed field in exactly the syntax a policy author writes.
//!
//! Syntax (see docs/reference.md, "Field paths"):
//!
//! | text | segment |
//! |---|---|
//! | `name` (after `.` or at the start) | [`Segment::Field`]; a bare name is letters, digits, `_`, `-`, `$` |
//! | `["a.b/c"]` | [`Segment::Field`], a JSON string literal (escapes allowed) |
//! | `[*]` | [`Segment::Any`] |
//! | `[3]` | [`Segment::Index`] |
//! | `[name=web]`, `[containerPort=80,protocol=TCP]`, `[name="a,b"]` | [`Segment::Key`], sorted by field name |
//! | `[="json scalar"]`, `[=80]` | [`Segment::Value`], the JSON text of the scalar |
//!
//! In a key, a field name is bare or a JSON string; a value is plain text (no whitespace
//! and none of `,` `]` `[` `=` `"` `\` `*`) or a JSON string. No whitespace is allowed
//! between tokens. [`FieldPath`]'s `Display` prints the canonical text, which [`parse`]
//! reads back to an equal value.

use std::fmt;

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A map key or struct field: `.name` or `["a.b/c"]`.
    Field(String),
    /// The element of a keyed list, by its key fields (sorted by field name):
    /// `[name=web]`, `[containerPort=80,protocol=TCP]`. Values are the scalar's text
    /// (a JSON string unquoted, a number or bool as written).
    Key(Vec<(String, String)>),
    /// The element of an unkeyed list at this position: `[3]` (managedFields `i:`).
    Index(usize),
    /// The element of a set (a list of scalars): `[="value"]`, the JSON text of the value
    /// (managedFields `v:`).
    Value(String),
    /// `[*]`: any element (patterns only).
    Any,
}

/// A parsed path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(pub Vec<Segment>);

/// A path that could not be parsed; `column` is 1-based, in characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct PathError {
    pub column: usize,
    pub message: String,
}

impl FieldPath {
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
}

impl std::str::FromStr for FieldPath {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// True for a character allowed in a bare name: letters, digits, `_`, `-`, `$`.
fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-' || c == '$'
}

/// True when `name` prints bare (without `["..."]`).
pub fn is_bare_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(is_name_char)
}

/// True for a character allowed in an unquoted key value.
fn is_plain_value_char(c: char) -> bool {
    !(c.is_whitespace() || c.is_control() || matches!(c, ',' | ']' | '[' | '=' | '"' | '\\' | '*'))
}

/// True when a key value prints unquoted.
fn is_plain_value(value: &str) -> bool {
    !value.is_empty() && value.chars().all(is_plain_value_char)
}

/// Describes a character for an error message.
fn describe(c: Option<char>) -> String {
    match c {
        None => "the end of the path".to_string(),
        Some(c) if c.is_whitespace() => "whitespace".to_string(),
        Some(c) if c.is_control() => format!("control character {:?}", c),
        Some(c) => format!("'{c}'"),
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    /// An error at character index `pos` (0-based).
    fn error_at(&self, pos: usize, message: impl Into<String>) -> PathError {
        PathError { column: pos + 1, message: message.into() }
    }

    /// An error at the current position.
    fn error(&self, message: impl Into<String>) -> PathError {
        self.error_at(self.pos, message)
    }

    fn path(&mut self) -> Result<FieldPath, PathError> {
        if self.chars.is_empty() {
            return Err(self.error("empty path"));
        }
        let mut segments = Vec::new();
        // The first segment: a name or a bracket.
        match self.peek() {
            Some('[') => segments.push(self.bracket()?),
            Some('.') => return Err(self.error("expected a field name, found '.'")),
            _ => segments.push(Segment::Field(self.bare_name("a field name")?)),
        }
        while let Some(c) = self.peek() {
            match c {
                '.' => {
                    self.pos += 1;
                    match self.peek() {
                        None | Some('.') => {
                            return Err(self.error("expected a field name after '.'"));
                        }
                        Some('[') => {
                            return Err(
                                self.error("expected a field name after '.' (write [...] without a '.' before it)")
                            );
                        }
                        _ => segments.push(Segment::Field(self.bare_name("a field name after '.'")?)),
                    }
                }
                '[' => segments.push(self.bracket()?),
                ']' => return Err(self.error("unexpected ']' without a matching '['")),
                other => {
                    return Err(
                        self.error(format!("expected '.' or '[' after a segment, found {}", describe(Some(other))))
                    );
                }
            }
        }
        Ok(FieldPath(segments))
    }

    /// A bare name: one or more name characters.
    fn bare_name(&mut self, what: &str) -> Result<String, PathError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if is_name_char(c) {
                self.pos += 1;
            } else {
                break;
            }
        }
        if self.pos == start {
            let c = self.peek();
            let hint = match c {
                Some('"') => " (a quoted name goes in brackets: [\"...\"])",
                Some(c) if !c.is_whitespace() && !matches!(c, '.' | '[' | ']') => {
                    " (a name with other characters goes in brackets: [\"...\"])"
                }
                _ => "",
            };
            return Err(self.error(format!("expected {what}, found {}{hint}", describe(c))));
        }
        // A name followed directly by a character that cannot continue a path: say that
        // the name contains it, which is the likely mistake (`example.com/x`).
        if let Some(c) = self.peek()
            && !matches!(c, '.' | '[' | ']' | '=' | ',')
            && !c.is_whitespace()
            && !c.is_control()
        {
            return Err(self.error(format!(
                "unexpected {} in a field name; quote names with other characters: [\"...\"]",
                describe(Some(c))
            )));
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    /// `[` ... `]`.
    fn bracket(&mut self) -> Result<Segment, PathError> {
        let open = self.pos;
        self.pos += 1; // '['
        let segment = match self.peek() {
            None => return Err(self.error_at(open, "unclosed '['")),
            Some(']') => {
                return Err(self.error("empty brackets: expected '*', an index, key=value, =value or a quoted name"));
            }
            Some('*') => {
                self.pos += 1;
                Segment::Any
            }
            Some('=') => {
                self.pos += 1;
                Segment::Value(self.json_value()?)
            }
            Some('"') => {
                let name = self.json_string()?;
                match self.peek() {
                    Some('=') => self.key(name)?,
                    _ => Segment::Field(name),
                }
            }
            Some(c) if c.is_ascii_digit() || is_name_char(c) => {
                let start = self.pos;
                let name = self.bare_name("a key field name")?;
                match self.peek() {
                    Some('=') => self.key(name)?,
                    Some(']') if name.chars().all(|c| c.is_ascii_digit()) => {
                        let index = name
                            .parse::<usize>()
                            .map_err(|_| self.error_at(start, format!("index {name} is too large")))?;
                        Segment::Index(index)
                    }
                    Some(']') => {
                        return Err(self.error(format!(
                            "expected '=' and a value after key field '{name}' (a map key is written [\"{name}\"] or .{name})"
                        )));
                    }
                    None => return Err(self.error_at(open, "unclosed '['")),
                    Some(c) => {
                        return Err(self.error(format!("expected '=' or ']', found {}", describe(Some(c)))));
                    }
                }
            }
            Some(c) => {
                return Err(self.error(format!(
                    "expected '*', an index, key=value, =value or a quoted name after '[', found {}",
                    describe(Some(c))
                )));
            }
        };
        match self.peek() {
            Some(']') => {
                self.pos += 1;
                Ok(segment)
            }
            None => Err(self.error_at(open, "unclosed '['")),
            Some(c) => Err(self.error(format!("expected ']', found {}", describe(Some(c))))),
        }
    }

    /// `field=value(,field=value)*`, positioned at the first `=`; stops before `]`.
    fn key(&mut self, first: String) -> Result<Segment, PathError> {
        let mut pairs: Vec<(String, String, usize)> = Vec::new();
        let mut field = first;
        let mut field_pos = self.pos;
        loop {
            // At '='.
            self.pos += 1;
            let value = match self.peek() {
                Some('"') => self.json_string()?,
                Some(c) if is_plain_value_char(c) => {
                    let start = self.pos;
                    while self.peek().is_some_and(is_plain_value_char) {
                        self.pos += 1;
                    }
                    if self.peek() == Some('*') {
                        return Err(self.error(
                            "'*' is not a wildcard in a key value: use [*] for any element, or quote the value",
                        ));
                    }
                    self.chars[start..self.pos].iter().collect()
                }
                Some('*') => {
                    return Err(
                        self.error("'*' is not a wildcard in a key value: use [*] for any element, or quote the value")
                    );
                }
                c => {
                    return Err(self.error(format!(
                        "expected a value after '=', found {} (an empty value is written \"\")",
                        describe(c)
                    )));
                }
            };
            if pairs.iter().any(|(f, _, _)| *f == field) {
                return Err(self.error_at(field_pos, format!("key field '{field}' given twice")));
            }
            pairs.push((field, value, field_pos));
            match self.peek() {
                Some(',') => {
                    self.pos += 1;
                    field_pos = self.pos;
                    field = match self.peek() {
                        Some('"') => self.json_string()?,
                        _ => self.bare_name("a key field name after ','")?,
                    };
                    if self.peek() != Some('=') {
                        return Err(
                            self.error(format!("expected '=' after key field name, found {}", describe(self.peek())))
                        );
                    }
                }
                _ => break,
            }
        }
        let mut pairs: Vec<(String, String)> = pairs.into_iter().map(|(f, v, _)| (f, v)).collect();
        pairs.sort();
        Ok(Segment::Key(pairs))
    }

    /// A JSON string literal at the current position (which is `"`); returns its value.
    fn json_string(&mut self) -> Result<String, PathError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error_at(open, "unterminated string: expected a closing '\"'"));
            };
            match c {
                '"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                '\\' => {
                    let escape = self.pos;
                    self.pos += 1;
                    let Some(e) = self.peek() else {
                        return Err(self.error_at(open, "unterminated string: expected a closing '\"'"));
                    };
                    self.pos += 1;
                    match e {
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        '/' => out.push('/'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'u' => out.push(self.unicode_escape(escape)?),
                        other => {
                            return Err(self.error_at(escape, format!("invalid escape '\\{other}' in a string")));
                        }
                    }
                }
                c if (c as u32) < 0x20 => {
                    return Err(self.error(format!("{} in a string must be escaped", describe(Some(c)))));
                }
                c => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// Four hex digits after `\u`; a high surrogate must be followed by `\uDC00`..`\uDFFF`.
    fn unicode_escape(&mut self, escape: usize) -> Result<char, PathError> {
        let high = self.hex4(escape)?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if self.peek() != Some('\\') || self.chars.get(self.pos + 1) != Some(&'u') {
                return Err(self.error_at(escape, "unpaired surrogate in a \\u escape"));
            }
            let second = self.pos;
            self.pos += 2;
            let low = self.hex4(second)?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(self.error_at(second, "invalid low surrogate in a \\u escape"));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| self.error_at(escape, "unpaired surrogate in a \\u escape"))
    }

    fn hex4(&mut self, escape: usize) -> Result<u32, PathError> {
        let mut value = 0u32;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.error_at(escape, "invalid \\u escape: expected four hex digits"))?;
            value = value * 16 + digit;
            self.pos += 1;
        }
        Ok(value)
    }

    /// The value of a set element after `[=`: a JSON scalar, or a JSON object or array (a
    /// set of atomic maps or lists, which managedFields writes as `v:{...}`), as compact
    /// JSON with sorted keys, the text the managedFields decoder stores.
    fn json_value(&mut self) -> Result<String, PathError> {
        if !matches!(self.peek(), Some('{' | '[')) {
            return self.json_scalar();
        }
        let rest: String = self.chars[self.pos..].iter().collect();
        let mut values = serde_json::Deserializer::from_str(&rest).into_iter::<serde_json::Value>();
        match values.next() {
            Some(Ok(value)) => {
                self.pos += rest[..values.byte_offset()].chars().count();
                Ok(value.to_string())
            }
            _ => Err(self.error("expected a JSON value after '='")),
        }
    }

    /// A JSON scalar after `[=`; returns its canonical JSON text (strings re-encoded,
    /// numbers as written).
    fn json_scalar(&mut self) -> Result<String, PathError> {
        let start = self.pos;
        match self.peek() {
            Some('"') => {
                let s = self.json_string()?;
                Ok(quote(&s))
            }
            Some(c) if c == '-' || c.is_ascii_digit() => {
                self.number()?;
                Ok(self.chars[start..self.pos].iter().collect())
            }
            Some(c) if c.is_ascii_alphabetic() => {
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
                    self.pos += 1;
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                match word.as_str() {
                    "true" | "false" | "null" => Ok(word),
                    _ => Err(self.error_at(
                        start,
                        format!("expected a JSON scalar after '=' (a string is quoted: [=\"{word}\"])"),
                    )),
                }
            }
            c => Err(self.error(format!(
                "expected a JSON scalar (string, number, true, false or null) after '=', found {}",
                describe(c)
            ))),
        }
    }

    /// A JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Result<(), PathError> {
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        match self.peek() {
            Some('0') => self.pos += 1,
            Some(c) if c.is_ascii_digit() => self.digits(),
            c => return Err(self.error(format!("expected a digit, found {}", describe(c)))),
        }
        if self.peek() == Some('.') {
            self.pos += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.error(format!("expected a digit after '.', found {}", describe(self.peek()))));
            }
            self.digits();
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some('+' | '-')) {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.error(format!("expected a digit in the exponent, found {}", describe(self.peek()))));
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
    }
}

/// Parses the path syntax (docs/reference.md, "Field paths").
pub fn parse(text: &str) -> Result<FieldPath, PathError> {
    let mut parser = Parser { chars: text.chars().collect(), pos: 0 };
    let path = parser.path()?;
    debug_assert!(parser.at_end());
    Ok(path)
}

/// The canonical JSON text of a scalar, as [`Segment::Value`] stores it: strings
/// re-encoded (`"\u0041"` -> `"A"`), numbers as written, `true`/`false`/`null`. `None`
/// when `json` is not exactly one JSON scalar. For the managedFields decoder, so that a
/// `v:` entry and a policy's `[=...]` compare equal.
pub fn canonical_scalar(json: &str) -> Option<String> {
    let mut parser = Parser { chars: json.trim().chars().collect(), pos: 0 };
    let text = parser.json_scalar().ok()?;
    parser.at_end().then_some(text)
}

/// True when one path is a prefix of the other, segment by segment, where `[*]` in the
/// pattern matches any element and a pattern key matches an element whose key contains
/// every field of the pattern's key. A path covers everything below it, so a change to a
/// parent of an owned field, or to a child of one, both touch it.
pub fn overlaps(pattern: &[Segment], path: &[Segment]) -> bool {
    pattern.iter().zip(path).all(|(p, q)| segment_matches(p, q))
}

/// One segment of a pattern against one segment of a path.
pub fn segment_matches(pattern: &Segment, path: &Segment) -> bool {
    use Segment::*;
    match (pattern, path) {
        (Any, Key(_) | Index(_) | Value(_) | Any) => true,
        (Key(_) | Index(_) | Value(_), Any) => true,
        (Key(want), Key(have)) => want.iter().all(|pair| have.contains(pair)),
        (p, q) => p == q,
    }
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    // Serialising a `str` cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

fn write_name(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    if is_bare_name(name) { f.write_str(name) } else { f.write_str(&quote(name)) }
}

impl fmt::Display for Segment {
    /// A segment as it appears after another one (a field with its leading `.`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Field(name) if is_bare_name(name) => write!(f, ".{name}"),
            Segment::Field(name) => write!(f, "[{}]", quote(name)),
            Segment::Key(pairs) => {
                f.write_str("[")?;
                for (i, (field, value)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write_name(f, field)?;
                    f.write_str("=")?;
                    if is_plain_value(value) {
                        f.write_str(value)?;
                    } else {
                        f.write_str(&quote(value))?;
                    }
                }
                f.write_str("]")
            }
            Segment::Index(i) => write!(f, "[{i}]"),
            Segment::Value(json) => write!(f, "[={json}]"),
            Segment::Any => f.write_str("[*]"),
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Field(name) if i == 0 && is_bare_name(name) => f.write_str(name)?,
                other => other.fmt(f)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Segment::*;
    use proptest::prelude::*;

    fn field(s: &str) -> Segment {
        Field(s.to_string())
    }

    fn key(pairs: &[(&str, &str)]) -> Segment {
        Key(pairs.iter().map(|(f, v)| (f.to_string(), v.to_string())).collect())
    }

    fn p(text: &str) -> Vec<Segment> {
        match parse(text) {
            Ok(path) => path.0,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    #[test]
    fn valid_paths() {
        let cases: Vec<(&str, Vec<Segment>)> = vec![
            ("spec", vec![field("spec")]),
            ("spec.template.spec", vec![field("spec"), field("template"), field("spec")]),
            (
                "spec.template.spec.containers[*].resources",
                vec![field("spec"), field("template"), field("spec"), field("containers"), Any, field("resources")],
            ),
            ("containers[name=web].image", vec![field("containers"), key(&[("name", "web")]), field("image")]),
            (
                "ports[protocol=TCP,containerPort=80]",
                vec![field("ports"), key(&[("containerPort", "80"), ("protocol", "TCP")])],
            ),
            (r#"c[name="a,b"]"#, vec![field("c"), key(&[("name", "a,b")])]),
            (r#"c[name="x]=y\"z"]"#, vec![field("c"), key(&[("name", "x]=y\"z")])]),
            (r#"c[name=""]"#, vec![field("c"), key(&[("name", "")])]),
            (r#"c["a b"=1]"#, vec![field("c"), key(&[("a b", "1")])]),
            ("c[ip=10.0.0.1]", vec![field("c"), key(&[("ip", "10.0.0.1")])]),
            ("args[3]", vec![field("args"), Index(3)]),
            ("args[03]", vec![field("args"), Index(3)]),
            (r#"finalizers[="a/b"]"#, vec![field("finalizers"), Value("\"a/b\"".into())]),
            (r#"f[="\u0041"]"#, vec![field("f"), Value("\"A\"".into())]),
            ("f[=80]", vec![field("f"), Value("80".into())]),
            ("f[=-1.5e+3]", vec![field("f"), Value("-1.5e+3".into())]),
            ("f[=true]", vec![field("f"), Value("true".into())]),
            ("f[=null]", vec![field("f"), Value("null".into())]),
            (
                r#"metadata.annotations["example.com/x"]"#,
                vec![field("metadata"), field("annotations"), field("example.com/x")],
            ),
            (r#"metadata.labels["cost-center"]"#, vec![field("metadata"), field("labels"), field("cost-center")]),
            (r#"["a.b"].c"#, vec![field("a.b"), field("c")]),
            ("[*]", vec![Any]),
            ("[0][1]", vec![Index(0), Index(1)]),
            (r#"[""]"#, vec![field("")]),
            (r#"["tab\there"]"#, vec![field("tab\there")]),
            (r#"["\ud83d\ude00"]"#, vec![field("😀")]),
            ("a.0.b", vec![field("a"), field("0"), field("b")]),
            ("$x-y_z", vec![field("$x-y_z")]),
            ("größe.straße", vec![field("größe"), field("straße")]),
        ];
        for (text, want) in cases {
            assert_eq!(p(text), want, "{text}");
        }
    }

    #[test]
    fn invalid_paths() {
        let cases: Vec<(&str, usize, &str)> = vec![
            ("", 1, "empty path"),
            ("a..b", 3, "expected a field name after '.'"),
            ("a.", 3, "expected a field name after '.'"),
            (".a", 1, "expected a field name, found '.'"),
            ("a.[0]", 3, "expected a field name after '.'"),
            ("a[", 2, "unclosed '['"),
            ("a[0", 2, "unclosed '['"),
            ("a[name=web", 2, "unclosed '['"),
            ("a[]", 3, "empty brackets"),
            ("a[*", 2, "unclosed '['"),
            ("a[*x]", 4, "expected ']', found 'x'"),
            ("a]", 2, "unexpected ']'"),
            ("a b", 2, "expected '.' or '[' after a segment, found whitespace"),
            ("a[name]", 7, "expected '=' and a value after key field 'name'"),
            ("a[name=]", 8, "expected a value after '='"),
            ("a[name=web,]", 12, "expected a key field name after ','"),
            ("a[name=web,x]", 13, "expected '=' after key field name"),
            ("a[name=1,name=2]", 10, "key field 'name' given twice"),
            ("a[name=web*]", 11, "'*' is not a wildcard"),
            ("a[name=*]", 8, "'*' is not a wildcard"),
            ("a[name=\"web]", 8, "unterminated string"),
            ("a[\"x]", 3, "unterminated string"),
            ("a[\"x\\q\"]", 5, "invalid escape '\\q'"),
            ("a[\"\\u12\"]", 4, "invalid \\u escape"),
            ("a[\"\\ud83d\"]", 4, "unpaired surrogate"),
            ("a[\"x\"y]", 6, "expected ']', found 'y'"),
            ("a[=web]", 4, "expected a JSON scalar after '='"),
            ("a[=]", 4, "expected a JSON scalar"),
            ("a[=1.]", 6, "expected a digit after '.'"),
            ("a[=01]", 5, "expected ']', found '1'"),
            ("a[99999999999999999999999]", 3, "too large"),
            ("example.com/x", 12, "unexpected '/' in a field name"),
            ("a.\"b\"", 3, "a quoted name goes in brackets"),
            ("a.b c", 4, "found whitespace"),
            ("a[\"b\"]x", 7, "expected '.' or '['"),
            ("a[-1]", 5, "expected '=' and a value after key field '-1'"),
            ("a[,]", 3, "expected '*', an index"),
        ];
        for (text, column, message) in cases {
            match parse(text) {
                Ok(path) => panic!("{text:?} parsed as {path:?}"),
                Err(e) => {
                    assert_eq!(e.column, column, "{text:?}: {e}");
                    assert!(e.message.contains(message), "{text:?}: {e}");
                }
            }
        }
    }

    #[test]
    fn canonical_scalars() {
        assert_eq!(canonical_scalar(r#""\u0041/b""#), Some(r#""A/b""#.into()));
        assert_eq!(canonical_scalar("80"), Some("80".into()));
        assert_eq!(canonical_scalar(" true "), Some("true".into()));
        assert_eq!(canonical_scalar("tru"), None);
        assert_eq!(canonical_scalar(r#""a" 1"#), None);
        assert_eq!(canonical_scalar("{}"), None);
    }

    #[test]
    fn error_display() {
        let e = parse("spec.a..b").unwrap_err();
        assert_eq!(e.to_string(), "column 8: expected a field name after '.'");
    }

    #[test]
    fn display() {
        let cases: Vec<(Vec<Segment>, &str)> = vec![
            (vec![field("metadata"), field("labels"), field("cost-center")], "metadata.labels.cost-center"),
            (
                vec![field("metadata"), field("annotations"), field("example.com/x")],
                r#"metadata.annotations["example.com/x"]"#,
            ),
            (
                vec![field("spec"), field("containers"), key(&[("name", "web")]), field("resources")],
                "spec.containers[name=web].resources",
            ),
            (
                vec![field("ports"), key(&[("containerPort", "80"), ("protocol", "TCP")])],
                "ports[containerPort=80,protocol=TCP]",
            ),
            (vec![field("c"), key(&[("name", "a,b")])], r#"c[name="a,b"]"#),
            (vec![field("c"), key(&[("name", "")])], r#"c[name=""]"#),
            (vec![field("c"), key(&[("a.b", "x y")])], r#"c["a.b"="x y"]"#),
            (vec![field("args"), Index(3)], "args[3]"),
            (vec![field("f"), Value("\"a\"".into())], r#"f[="a"]"#),
            (vec![field("a"), Any, field("b")], "a[*].b"),
            (vec![field("a.b"), field("c")], r#"["a.b"].c"#),
            (vec![field("")], r#"[""]"#),
            (vec![field("line\nbreak")], r#"["line\nbreak"]"#),
            (vec![Any], "[*]"),
        ];
        for (segments, want) in cases {
            let path = FieldPath(segments);
            assert_eq!(path.to_string(), want);
            assert_eq!(parse(want), Ok(path), "{want}");
        }
    }

    #[test]
    fn overlaps_table() {
        let cases: Vec<(&str, &str, bool)> = vec![
            ("spec.replicas", "spec.replicas", true),
            ("spec.replicas", "spec", true),
            ("spec", "spec.replicas", true),
            ("spec.replicas", "spec.template", false),
            ("spec.containers[*].image", "spec.containers[name=web].image", true),
            ("spec.containers[*].image", "spec.containers[name=web]", true),
            ("spec.containers[*].image", "spec.containers[name=web].env", false),
            ("spec.containers[*]", "spec.containers[3].image", true),
            ("spec.containers[*]", r#"spec.containers[="x"]"#, true),
            ("spec.containers[*]", "spec.containers.x", false),
            ("c[name=web]", "c[name=web]", true),
            ("c[name=web]", "c[name=db]", false),
            ("p[containerPort=80]", "p[containerPort=80,protocol=TCP]", true),
            ("p[containerPort=80,protocol=TCP]", "p[containerPort=80]", false),
            ("p[containerPort=80,protocol=UDP]", "p[containerPort=80,protocol=TCP]", false),
            ("c[name=web]", "c[*]", true),
            ("c[name=web]", "c[0]", false),
            ("a[0]", "a[0].b", true),
            ("a[0]", "a[1]", false),
            (r#"a[="x"]"#, r#"a[="x"]"#, true),
            (r#"a[="x"]"#, r#"a[="y"]"#, false),
            (r#"metadata.labels["cost-center"]"#, "metadata.labels", true),
            (r#"metadata.labels["cost-center"]"#, "metadata.labels.team", false),
            ("metadata.labels.cost-center", r#"metadata.labels["cost-center"]"#, true),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(overlaps(&p(pattern), &p(path)), want, "{pattern} vs {path}");
        }
        // The empty path (the whole object) overlaps everything.
        assert!(overlaps(&[], &p("a.b")));
        assert!(overlaps(&p("a.b"), &[]));
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-zA-Z0-9_$-]{1,8}", "[ -~]{0,8}", any::<String>().prop_map(|s| s.chars().take(8).collect()),]
    }

    fn arb_json_scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            arb_text().prop_map(|s| quote(&s)),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| serde_json::Number::from_f64(f).map(|n| n.to_string()).unwrap_or_else(|| "0".into())),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("null".to_string()),
        ]
    }

    fn arb_segment() -> impl Strategy<Value = Segment> {
        prop_oneof![
            arb_text().prop_map(Segment::Field),
            proptest::collection::btree_map(arb_text(), arb_text(), 1..4)
                .prop_map(|m| Segment::Key(m.into_iter().collect())),
            any::<usize>().prop_map(Segment::Index),
            arb_json_scalar().prop_map(Segment::Value),
            Just(Segment::Any),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(segments in proptest::collection::vec(arb_segment(), 1..6)) {
            let path = FieldPath(segments);
            let text = path.to_string();
            prop_assert_eq!(parse(&text), Ok(path), "{}", text);
        }

        #[test]
        fn parse_never_panics(text in "[a-z.\\[\\]=,*\"\\\\0-9 ]{0,16}") {
            if let Ok(path) = parse(&text) {
                prop_assert_eq!(parse(&path.to_string()), Ok(path));
            }
        }
    }
}
