//! The subset of HCL 1 (hashicorp/hcl v1, the parser Consul reads ACL rules with) that rules use, parsed
//! into a small tree that remembers where each name and value was written.
//!
//! HCL 1 differs from HCL 2 in ways real policies rely on: items inside a block need no separator
//! (`{ policy = "read" intentions = "read" }`), a comma after an item is optional, a block may be written
//! with several labels (`key "a" { ... }`) or as an assignment of an object (`key = { "a" = { ... } }`),
//! and names may be quoted. What it refuses, this refuses too: labels followed by `=`
//! (`key "a" = "read"`), bare words as values, and a second assignment of the same attribute in one object.

use std::iter::Peekable;
use std::str::CharIndices;

/// Deeper nesting than this is refused, so hostile input cannot exhaust the stack. Rules need three.
const MAX_DEPTH: usize = 64;

/// A place in the source text, 1-based, columns counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// Why the text is not HCL 1, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) pos: Pos,
    pub(crate) message: String,
}

/// A value with the place it starts, when known (values read from JSON carry none).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) pos: Option<Pos>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    /// The number as written; rules never need its value, only to show it in an error.
    Number(String),
    Bool(bool),
    Null,
    List(Vec<Node>),
    Object(Vec<Item>),
}

/// One item of an object: `a "b" "c" { ... }` has the keys `a`, `b`, `c`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub(crate) keys: Vec<Key>,
    pub(crate) value: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub(crate) name: String,
    pub(crate) pos: Option<Pos>,
}

impl Value {
    /// The value as an error message shows it: JSON-like, strings quoted.
    pub(crate) fn render(&self) -> String {
        match self {
            Value::Str(s) => format!("{s:?}"),
            Value::Number(n) => n.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Null => "null".to_owned(),
            Value::List(_) => "a list".to_owned(),
            Value::Object(_) => "an object".to_owned(),
        }
    }
}

/// Converts a JSON document into the same tree, without positions.
pub(crate) fn from_json(value: &serde_json::Value) -> Node {
    let value = match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Number(n.to_string()),
        serde_json::Value::String(s) => Value::Str(s.clone()),
        serde_json::Value::Array(items) => Value::List(items.iter().map(from_json).collect()),
        serde_json::Value::Object(map) => Value::Object(
            map.iter()
                .map(|(name, value)| Item {
                    keys: vec![Key {
                        name: name.clone(),
                        pos: None,
                    }],
                    value: from_json(value),
                })
                .collect(),
        ),
    };
    Node { value, pos: None }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Heredoc(String),
    Number(String),
    Bool(bool),
    LBrace,
    RBrace,
    LBrack,
    RBrack,
    Assign,
    Comma,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Str(s) => format!("{s:?}"),
            Tok::Heredoc(_) => "a heredoc".to_owned(),
            Tok::Number(n) => format!("`{n}`"),
            Tok::Bool(b) => format!("`{b}`"),
            Tok::LBrace => "`{`".to_owned(),
            Tok::RBrace => "`}`".to_owned(),
            Tok::LBrack => "`[`".to_owned(),
            Tok::RBrack => "`]`".to_owned(),
            Tok::Assign => "`=`".to_owned(),
            Tok::Comma => "`,`".to_owned(),
            Tok::Eof => "the end of the rules".to_owned(),
        }
    }
}

struct Lexer<'a> {
    text: &'a str,
    chars: Peekable<CharIndices<'a>>,
    line: usize,
    column: usize,
}

fn err<T>(pos: Pos, message: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        pos,
        message: message.into(),
    })
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer {
            text,
            chars: text.char_indices().peekable(),
            line: 1,
            column: 1,
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().map(|&(_, c)| c)
    }

    fn offset(&mut self) -> usize {
        self.chars.peek().map_or(self.text.len(), |&(i, _)| i)
    }

    fn bump(&mut self) -> Option<char> {
        let (_, c) = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_trivia(&mut self) -> Result<(), SyntaxError> {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => self.skip_line(),
                Some('/') => {
                    let start = self.pos();
                    let rest = self.text.get(self.offset()..).unwrap_or("");
                    if rest.starts_with("//") {
                        self.skip_line();
                    } else if rest.starts_with("/*") {
                        self.bump();
                        self.bump();
                        loop {
                            match self.bump() {
                                None => return err(start, "comment not terminated (missing `*/`)"),
                                Some('*') if self.peek() == Some('/') => {
                                    self.bump();
                                    break;
                                }
                                Some(_) => {}
                            }
                        }
                    } else {
                        return err(start, "unexpected `/`");
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' {
                break;
            }
            self.bump();
        }
    }

    fn next(&mut self) -> Result<(Tok, Pos), SyntaxError> {
        self.skip_trivia()?;
        let pos = self.pos();
        let Some(c) = self.peek() else {
            return Ok((Tok::Eof, pos));
        };
        let tok = match c {
            '{' | '}' | '[' | ']' | '=' | ',' => {
                self.bump();
                match c {
                    '{' => Tok::LBrace,
                    '}' => Tok::RBrace,
                    '[' => Tok::LBrack,
                    ']' => Tok::RBrack,
                    '=' => Tok::Assign,
                    _ => Tok::Comma,
                }
            }
            '"' => Tok::Str(self.string(pos)?),
            '<' => Tok::Heredoc(self.heredoc(pos)?),
            c if c == '-' || c.is_ascii_digit() => Tok::Number(self.number(pos)?),
            c if c == '_' || c.is_alphabetic() => {
                let start = self.offset();
                while self
                    .peek()
                    .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
                {
                    self.bump();
                }
                let word = self.text.get(start..self.offset()).unwrap_or("");
                match word {
                    "true" => Tok::Bool(true),
                    "false" => Tok::Bool(false),
                    _ => Tok::Ident(word.to_owned()),
                }
            }
            other => return err(pos, format!("unexpected character {other:?}")),
        };
        Ok((tok, pos))
    }

    fn number(&mut self, pos: Pos) -> Result<String, SyntaxError> {
        let start = self.offset();
        if self.peek() == Some('-') {
            self.bump();
        }
        if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return err(pos, "expected a digit after `-`");
        }
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '.') {
            // An exponent's sign belongs to the number.
            let c = self.bump();
            if matches!(c, Some('e' | 'E')) && matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
        }
        let text = self.text.get(start..self.offset()).unwrap_or("");
        let digits = text.strip_prefix('-').unwrap_or(text);
        let valid = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
            Some(hex) => !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()),
            None => digits.parse::<f64>().is_ok() && !digits.contains(['i', 'I', 'n', 'N']),
        };
        if !valid {
            return err(pos, format!("invalid number `{text}`"));
        }
        Ok(text.to_owned())
    }

    fn string(&mut self, pos: Pos) -> Result<String, SyntaxError> {
        self.bump();
        let mut out = String::new();
        // Inside `${ ... }` HCL 1 keeps the text as written, quotes included.
        let mut interpolation = 0usize;
        loop {
            let here = self.pos();
            match self.bump() {
                None => return err(pos, "string not terminated (missing closing `\"`)"),
                Some('\n') if interpolation == 0 => {
                    return err(pos, "string not terminated before the end of the line");
                }
                Some('"') if interpolation == 0 => return Ok(out),
                Some('$') if self.peek() == Some('{') => {
                    self.bump();
                    interpolation += 1;
                    out.push_str("${");
                }
                Some('{') if interpolation > 0 => {
                    interpolation += 1;
                    out.push('{');
                }
                Some('}') if interpolation > 0 => {
                    interpolation -= 1;
                    out.push('}');
                }
                Some('\\') if interpolation == 0 => out.push(self.escape(here)?),
                Some(c) => out.push(c),
            }
        }
    }

    fn escape(&mut self, pos: Pos) -> Result<char, SyntaxError> {
        let Some(c) = self.bump() else {
            return err(pos, "string not terminated (missing closing `\"`)");
        };
        let simple = match c {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '\\' => Some('\\'),
            '"' => Some('"'),
            _ => None,
        };
        if let Some(simple) = simple {
            return Ok(simple);
        }
        let (digits, radix, first) = match c {
            '0'..='7' => (3, 8, Some(c)),
            'x' => (2, 16, None),
            'u' => (4, 16, None),
            'U' => (8, 16, None),
            other => return err(pos, format!("unknown escape sequence `\\{other}`")),
        };
        let mut code: u32 = 0;
        let mut read = 0;
        if let Some(first) = first {
            code = first.to_digit(8).unwrap_or(0);
            read = 1;
        }
        while read < digits {
            match self.peek().and_then(|c| c.to_digit(radix)) {
                Some(d) => {
                    self.bump();
                    code = code.saturating_mul(radix).saturating_add(d);
                    read += 1;
                }
                None => return err(pos, "escape sequence is too short"),
            }
        }
        char::from_u32(code).ok_or_else(|| SyntaxError {
            pos,
            message: format!("escape sequence names no character ({code:#x})"),
        })
    }

    fn heredoc(&mut self, pos: Pos) -> Result<String, SyntaxError> {
        let rest = self.text.get(self.offset()..).unwrap_or("");
        let indented = rest.starts_with("<<-");
        if !rest.starts_with("<<") {
            return err(pos, "unexpected `<`");
        }
        let Some(newline) = rest.find('\n') else {
            return err(pos, "heredoc not terminated");
        };
        let header = rest.get(if indented { 3 } else { 2 }..newline).unwrap_or("");
        let anchor = header.trim_end_matches('\r');
        if anchor.is_empty() || !anchor.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return err(pos, "a heredoc needs an identifier after `<<`, then a new line");
        }
        let body_start = newline + 1;
        let body = rest.get(body_start..).unwrap_or("");
        let mut lines = Vec::new();
        let mut consumed = None;
        let mut offset = 0;
        for line in body.split_inclusive('\n') {
            let content = line.trim_end_matches(['\n', '\r']);
            let candidate = if indented { content.trim_start() } else { content };
            offset += line.len();
            if candidate == anchor {
                consumed = Some(offset);
                break;
            }
            lines.push(content);
        }
        let Some(consumed) = consumed else {
            return err(pos, format!("heredoc not terminated (no line `{anchor}`)"));
        };
        // Move the lexer over the whole heredoc, keeping line counts right; the anchor's line ending
        // stays for the next token.
        let mut total = body_start + consumed;
        if rest.get(..total).is_some_and(|s| s.ends_with('\n')) {
            total -= 1;
        }
        let end = self.offset() + total;
        while self.offset() < end {
            if self.bump().is_none() {
                break;
            }
        }
        let strip = if indented {
            lines
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0)
        } else {
            0
        };
        let mut out = String::new();
        for line in lines {
            out.push_str(line.get(strip..).unwrap_or(line.trim_start()));
            out.push('\n');
        }
        Ok(out)
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<(Tok, Pos)>,
    depth: usize,
}

/// Parses a whole HCL 1 document into its top-level items.
pub(crate) fn parse(text: &str) -> Result<Vec<Item>, SyntaxError> {
    let mut parser = Parser {
        lexer: Lexer::new(text),
        peeked: None,
        depth: 0,
    };
    parser.items(None)
}

impl Parser<'_> {
    fn next(&mut self) -> Result<(Tok, Pos), SyntaxError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next(),
        }
    }

    fn peek(&mut self) -> Result<&(Tok, Pos), SyntaxError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next()?);
        }
        match &self.peeked {
            Some(t) => Ok(t),
            // Just filled above.
            None => err(self.lexer.pos(), "internal parser state"),
        }
    }

    fn enter(&mut self, pos: Pos) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(pos, format!("nested more than {MAX_DEPTH} levels deep"));
        }
        Ok(())
    }

    /// Items up to the end of the text (`open` is `None`) or up to the `}` closing the brace at `open`.
    fn items(&mut self, open: Option<Pos>) -> Result<Vec<Item>, SyntaxError> {
        let mut items: Vec<Item> = Vec::new();
        // Attributes assigned a plain value, for HCL 1's "each argument can only be defined once".
        let mut assigned: Vec<(String, Pos)> = Vec::new();
        loop {
            let (tok, pos) = self.peek()?.clone();
            match (&tok, open) {
                (Tok::RBrace, Some(_)) => {
                    self.next()?;
                    return Ok(items);
                }
                (Tok::Eof, None) => return Ok(items),
                (Tok::Eof, Some(open)) => {
                    return err(
                        pos,
                        format!(
                            "missing `}}` to close the `{{` opened on line {}, column {}",
                            open.line, open.column
                        ),
                    );
                }
                _ => {}
            }
            let item = self.item()?;
            if let ([key], Value::Str(_) | Value::Number(_) | Value::Bool(_)) =
                (item.keys.as_slice(), &item.value.value)
            {
                let name = key.name.to_ascii_lowercase();
                let here = key.pos.unwrap_or(pos);
                if let Some((_, first)) = assigned.iter().find(|(n, _)| *n == name) {
                    return err(
                        here,
                        format!(
                            "`{}` was already set on line {}; each attribute can only be set once",
                            key.name, first.line
                        ),
                    );
                }
                assigned.push((name, here));
            }
            items.push(item);
            if matches!(self.peek()?.0, Tok::Comma) {
                self.next()?;
            }
        }
    }

    fn item(&mut self) -> Result<Item, SyntaxError> {
        let mut keys: Vec<Key> = Vec::new();
        loop {
            let (tok, pos) = self.next()?;
            match tok {
                Tok::Ident(name) | Tok::Str(name) => keys.push(Key { name, pos: Some(pos) }),
                Tok::Assign => {
                    return match keys.len() {
                        0 => err(pos, "expected a name before `=`"),
                        1 => {
                            let value = self.value(&keys)?;
                            Ok(Item { keys, value })
                        }
                        _ => err(
                            pos,
                            format!(
                                "expected `{{` after `{}`, found `=` (a block with labels takes a body, \
                                 e.g. `{} {{ policy = \"read\" }}`)",
                                render_keys(&keys),
                                render_keys(&keys)
                            ),
                        ),
                    };
                }
                Tok::LBrace => {
                    if keys.is_empty() {
                        return err(pos, "expected a name before `{`");
                    }
                    let value = self.object(pos)?;
                    return Ok(Item { keys, value });
                }
                other => {
                    return match keys.len() {
                        0 => err(pos, format!("expected a name, found {}", other.describe())),
                        1 => err(
                            pos,
                            format!(
                                "expected `=` after `{}`, found {}",
                                render_keys(&keys),
                                other.describe()
                            ),
                        ),
                        // Most often a forgotten `=` (`policy "read"`): point at the word after the
                        // name rather than at whatever ended the line.
                        _ => err(
                            keys.get(1).and_then(|k| k.pos).unwrap_or(pos),
                            format!(
                                "expected `=` after `{}`, or `{{` after `{}`; found {}",
                                render_keys(keys.get(..1).unwrap_or_default()),
                                render_keys(&keys),
                                other.describe()
                            ),
                        ),
                    };
                }
            }
        }
    }

    fn object(&mut self, open: Pos) -> Result<Node, SyntaxError> {
        self.enter(open)?;
        let items = self.items(Some(open))?;
        self.depth -= 1;
        Ok(Node {
            value: Value::Object(items),
            pos: Some(open),
        })
    }

    /// The value after `=`.
    fn value(&mut self, keys: &[Key]) -> Result<Node, SyntaxError> {
        let (tok, pos) = self.next()?;
        let value = match tok {
            Tok::Str(s) | Tok::Heredoc(s) => Value::Str(s),
            Tok::Number(n) => Value::Number(n),
            Tok::Bool(b) => Value::Bool(b),
            Tok::LBrace => return self.object(pos),
            Tok::LBrack => return self.list(pos),
            Tok::Ident(word) => {
                return err(
                    pos,
                    format!(
                        "expected a value after `{} =`, found `{word}` (strings need double quotes: \"{word}\")",
                        render_keys(keys)
                    ),
                );
            }
            other => {
                return err(
                    pos,
                    format!(
                        "expected a value after `{} =`, found {}",
                        render_keys(keys),
                        other.describe()
                    ),
                );
            }
        };
        Ok(Node {
            value,
            pos: Some(pos),
        })
    }

    fn list(&mut self, open: Pos) -> Result<Node, SyntaxError> {
        self.enter(open)?;
        let mut elements = Vec::new();
        let mut need_comma = false;
        loop {
            let (tok, pos) = self.next()?;
            if need_comma && !matches!(tok, Tok::Comma | Tok::RBrack) {
                return err(
                    pos,
                    format!("expected `,` or `]` in the list, found {}", tok.describe()),
                );
            }
            let element = match tok {
                Tok::RBrack => break,
                Tok::Comma if need_comma => {
                    need_comma = false;
                    continue;
                }
                Tok::Str(s) | Tok::Heredoc(s) => Value::Str(s),
                Tok::Number(n) => Value::Number(n),
                Tok::Bool(b) => Value::Bool(b),
                Tok::LBrace => {
                    elements.push(self.object(pos)?);
                    need_comma = true;
                    continue;
                }
                Tok::LBrack => {
                    elements.push(self.list(pos)?);
                    need_comma = true;
                    continue;
                }
                Tok::Eof => {
                    return err(
                        pos,
                        format!(
                            "missing `]` to close the `[` opened on line {}, column {}",
                            open.line, open.column
                        ),
                    );
                }
                other => {
                    return err(
                        pos,
                        format!("expected a list element, found {}", other.describe()),
                    );
                }
            };
            elements.push(Node {
                value: element,
                pos: Some(pos),
            });
            need_comma = true;
        }
        self.depth -= 1;
        Ok(Node {
            value: Value::List(elements),
            pos: Some(open),
        })
    }
}

fn render_keys(keys: &[Key]) -> String {
    let mut out = String::new();
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = i == 0
            && key
                .name
                .chars()
                .next()
                .is_some_and(|c| c == '_' || c.is_alphabetic())
            && key
                .name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if bare {
            out.push_str(&key.name);
        } else {
            out.push_str(&format!("{:?}", key.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(item: &Item) -> Vec<&str> {
        item.keys.iter().map(|k| k.name.as_str()).collect()
    }

    #[test]
    fn one_line_block_with_several_attributes() {
        let items = parse(r#"service_prefix "" { policy = "read" intentions = "read" }"#).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(keys(&items[0]), ["service_prefix", ""]);
        let Value::Object(body) = &items[0].value.value else {
            panic!("not an object")
        };
        assert_eq!(body.len(), 2);
        assert_eq!(body[1].value.value, Value::Str("read".into()));
        assert_eq!(body[1].keys[0].pos, Some(Pos { line: 1, column: 37 }));
    }

    #[test]
    fn comments_heredocs_escapes_numbers_lists() {
        let text = "# c\n// c\n/* a\nb */ a = <<EOT\nx\n  y\nEOT\nb = <<-EOT\n    p\n      q\n    EOT\n\
                    c = \"\\t\\u00e9\\101${x(\"{}\")}\"\nd = [1, -2.5e3, 0x1F, true, [\"x\",], {e = 1}]\n";
        let items = parse(text).unwrap();
        assert_eq!(items[0].value.value, Value::Str("x\n  y\n".into()));
        assert_eq!(items[0].keys[0].pos, Some(Pos { line: 4, column: 6 }));
        assert_eq!(items[1].value.value, Value::Str("p\n  q\n".into()));
        assert_eq!(items[1].keys[0].pos, Some(Pos { line: 8, column: 1 }));
        assert_eq!(items[2].value.value, Value::Str("\téA${x(\"{}\")}".into()));
        let Value::List(list) = &items[3].value.value else {
            panic!("not a list")
        };
        assert_eq!(list.len(), 6);
        assert_eq!(items[3].keys[0].pos.map(|p| p.line), Some(13));
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases = [
            (
                "key \"a\" {\n  policy \"read\"\n}",
                2,
                10,
                "expected `=` after `policy`",
            ),
            (
                "key \"a\" {\n  policy read\n}",
                2,
                10,
                "expected `=` after `policy`",
            ),
            (
                "acl = \"write\"\nkey \"x\" = \"read\"",
                2,
                9,
                "expected `{` after `key \"x\"`, found `=`",
            ),
            ("\n\nacl = write", 3, 7, "strings need double quotes"),
            (
                "key \"a\" {\n policy = \"read\"\n",
                3,
                1,
                "opened on line 1, column 9",
            ),
            ("acl = \"read\"\n\nacl = \"write\"", 3, 1, "already set on line 1"),
            ("acl = \"wr\nite\"", 1, 7, "not terminated"),
            ("x = [1 2]", 1, 8, "expected `,` or `]`"),
            ("/* open", 1, 1, "comment not terminated"),
            ("a = \"\\q\"", 1, 6, "unknown escape"),
        ];
        for (text, line, column, needle) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!((e.pos.line, e.pos.column), (line, column), "{text:?}: {e:?}");
            assert!(e.message.contains(needle), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("x = {}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
        let deep = format!("x {}{}", "{ y ".repeat(100_000), "}".repeat(100_000));
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
    }
}
