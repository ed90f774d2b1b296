//! Binding-rule selectors: the subset of go-bexpr's boolean expression language that Consul evaluates
//! against the fields a login produced (`value.<name>` strings and `list.<name>` string lists).
//!
//! Grammar, loosest binding first: `a or b`, `a and b`, `not a`, `( a )`, and the match forms
//! `sel == v`, `sel != v`, `sel contains v`, `sel not contains v`, `sel matches "re"`,
//! `sel not matches "re"`, `sel is empty`, `sel is not empty`, `v in sel`, `v not in sel`. A value is a
//! double-quoted (Go escapes) or back-quoted string, a number, or a bare word (taken literally).

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

/// The fields a selector can look at, as an auth method fills them for one login.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SelectableFields {
    /// `value.<name>`: one string per `ClaimMappings` target.
    pub values: BTreeMap<String, String>,
    /// `list.<name>`: a list of strings per `ListClaimMappings` target.
    pub lists: BTreeMap<String, Vec<String>>,
}

/// Why a selector did not parse. `position` is the byte offset in the selector text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector is invalid at position {position}: {kind}")]
pub struct SelectorError {
    /// Byte offset of the offending token in the selector.
    pub position: usize,
    /// What was wrong there.
    pub kind: SelectorErrorKind,
}

/// The kinds of [`SelectorError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorErrorKind {
    /// The text ended where more was needed.
    #[error("unexpected end of selector, expected {expected}")]
    UnexpectedEnd {
        /// What the parser was looking for.
        expected: &'static str,
    },
    /// A token that cannot stand here.
    #[error("unexpected {found:?}, expected {expected}")]
    Unexpected {
        /// The token's text.
        found: String,
        /// What the parser was looking for.
        expected: &'static str,
    },
    /// A character that starts no token.
    #[error("unexpected character {0:?}")]
    BadCharacter(char),
    /// A string literal without its closing quote.
    #[error("unterminated string literal")]
    UnterminatedString,
    /// A backslash escape Go's string syntax does not have.
    #[error("invalid escape sequence {0:?} in string literal")]
    InvalidEscape(String),
    /// A number literal that is not `-?(0|[1-9][0-9]*)(\.[0-9]+)?`.
    #[error("invalid number literal {0:?}")]
    InvalidNumber(String),
    /// An opening parenthesis without its closing one.
    #[error("unmatched parentheses")]
    UnmatchedParenthesis,
    /// A selector naming no field a login produces (only `value`, `value.<name>`, `list`, `list.<name>`).
    #[error("selector {0:?} is not valid")]
    UnknownField(String),
    /// An operator that does not apply to the field's kind (e.g. `==` on a list).
    #[error("operator {operator:?} is not supported on {selector:?} ({kind})")]
    UnsupportedOperator {
        /// The operator as written.
        operator: &'static str,
        /// The selector it was applied to.
        selector: String,
        /// The selected field's kind.
        kind: &'static str,
    },
    /// The pattern of `matches` is not a valid regular expression.
    #[error("invalid regular expression {pattern:?}: {reason}")]
    InvalidRegex {
        /// The pattern.
        pattern: String,
        /// The regex engine's explanation.
        reason: String,
    },
}

/// Why a parsed selector could not be evaluated against one login's fields (the rule then does not
/// match, as in Consul).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorEvalError {
    /// `value.<name>` or `list.<name>` names a field this login does not have.
    #[error("selector {0:?} names no field of this identity")]
    MissingField(String),
}

/// A parsed selector. The empty selector matches every login.
#[derive(Debug, Clone)]
pub struct Selector {
    source: String,
    expr: Option<Expr>,
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Selector {
    /// Parses `text`; an empty (or all-whitespace) text is the match-everything selector.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let tokens = lex(text)?;
        if tokens.is_empty() {
            return Ok(Selector {
                source: text.to_owned(),
                expr: None,
            });
        }
        let mut parser = Parser {
            tokens: &tokens,
            next: 0,
            end: text.len(),
        };
        let expr = parser.or_expression()?;
        if let Some(token) = parser.peek() {
            let kind = if matches!(token.kind, TokenKind::RParen) {
                SelectorErrorKind::UnmatchedParenthesis
            } else {
                SelectorErrorKind::Unexpected {
                    found: token.text.clone(),
                    expected: "\"and\", \"or\" or the end of the selector",
                }
            };
            return Err(SelectorError {
                position: token.position,
                kind,
            });
        }
        Ok(Selector {
            source: text.to_owned(),
            expr: Some(expr),
        })
    }

    /// The selector's text as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when this is the empty, match-everything selector.
    pub fn is_empty(&self) -> bool {
        self.expr.is_none()
    }

    /// Evaluates the selector against one login's fields.
    pub fn evaluate(&self, fields: &SelectableFields) -> Result<bool, SelectorEvalError> {
        match &self.expr {
            None => Ok(true),
            Some(expr) => expr.evaluate(fields),
        }
    }

    /// Consul's rule: a selector matches when it evaluates to true; an evaluation error is no match.
    pub fn matches(&self, fields: &SelectableFields) -> bool {
        self.evaluate(fields).unwrap_or(false)
    }
}

#[derive(Debug, Clone)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Match(Match),
}

#[derive(Debug, Clone)]
struct Match {
    field: Field,
    operation: Operation,
}

/// A selector resolved against the fixed shape of a login's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    AllValues,
    AllLists,
    Value(String),
    List(String),
}

impl Field {
    fn kind(&self) -> &'static str {
        match self {
            Field::AllValues | Field::AllLists => "map",
            Field::Value(_) => "string",
            Field::List(_) => "list",
        }
    }

    fn describe(&self) -> String {
        match self {
            Field::AllValues => "value".to_owned(),
            Field::AllLists => "list".to_owned(),
            Field::Value(name) => format!("value.{name}"),
            Field::List(name) => format!("list.{name}"),
        }
    }
}

#[derive(Debug, Clone)]
enum Operation {
    Equal(String),
    NotEqual(String),
    /// `contains` and `in`: substring of a string, element of a list, key of a map.
    Contains(String),
    NotContains(String),
    IsEmpty,
    IsNotEmpty,
    Matches(Regex),
    NotMatches(Regex),
}

impl Expr {
    fn evaluate(&self, fields: &SelectableFields) -> Result<bool, SelectorEvalError> {
        match self {
            Expr::Or(left, right) => Ok(left.evaluate(fields)? || right.evaluate(fields)?),
            Expr::And(left, right) => Ok(left.evaluate(fields)? && right.evaluate(fields)?),
            Expr::Not(inner) => Ok(!inner.evaluate(fields)?),
            Expr::Match(m) => m.evaluate(fields),
        }
    }
}

enum Resolved<'a> {
    Str(&'a str),
    List(&'a [String]),
    ValueMap(&'a BTreeMap<String, String>),
    ListMap(&'a BTreeMap<String, Vec<String>>),
}

impl Match {
    fn evaluate(&self, fields: &SelectableFields) -> Result<bool, SelectorEvalError> {
        let resolved = match &self.field {
            Field::AllValues => Resolved::ValueMap(&fields.values),
            Field::AllLists => Resolved::ListMap(&fields.lists),
            Field::Value(name) => Resolved::Str(
                fields
                    .values
                    .get(name)
                    .ok_or_else(|| SelectorEvalError::MissingField(self.field.describe()))?,
            ),
            Field::List(name) => Resolved::List(
                fields
                    .lists
                    .get(name)
                    .ok_or_else(|| SelectorEvalError::MissingField(self.field.describe()))?,
            ),
        };
        let contains = |needle: &str| match resolved {
            Resolved::Str(s) => s.contains(needle),
            Resolved::List(items) => items.iter().any(|item| item == needle),
            Resolved::ValueMap(map) => map.contains_key(needle),
            Resolved::ListMap(map) => map.contains_key(needle),
        };
        let is_empty = || match resolved {
            Resolved::Str(s) => s.is_empty(),
            Resolved::List(items) => items.is_empty(),
            Resolved::ValueMap(map) => map.is_empty(),
            Resolved::ListMap(map) => map.is_empty(),
        };
        let text = match resolved {
            Resolved::Str(s) => s,
            // Parsing only lets string-only operators reach a string field.
            _ => "",
        };
        Ok(match &self.operation {
            Operation::Equal(v) => text == v,
            Operation::NotEqual(v) => text != v,
            Operation::Contains(v) => contains(v),
            Operation::NotContains(v) => !contains(v),
            Operation::IsEmpty => is_empty(),
            Operation::IsNotEmpty => !is_empty(),
            Operation::Matches(re) => re.is_match(text),
            Operation::NotMatches(re) => !re.is_match(text),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenKind {
    Word,
    Str(String),
    Number,
    Dot,
    LBracket,
    RBracket,
    LParen,
    RParen,
    EqEq,
    NotEq,
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    /// The token as written (for words and numbers, its value).
    text: String,
    position: usize,
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic()
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '/'
}

fn lex(text: &str) -> Result<Vec<Token>, SelectorError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(position, c)) = chars.peek() {
        let err = |kind| SelectorError { position, kind };
        let single = |kind: TokenKind| Token {
            kind,
            text: c.to_string(),
            position,
        };
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                chars.next();
            }
            '(' | ')' | '[' | ']' | '.' => {
                chars.next();
                tokens.push(single(match c {
                    '(' => TokenKind::LParen,
                    ')' => TokenKind::RParen,
                    '[' => TokenKind::LBracket,
                    ']' => TokenKind::RBracket,
                    _ => TokenKind::Dot,
                }));
            }
            '=' | '!' => {
                chars.next();
                if chars.next_if(|&(_, n)| n == '=').is_none() {
                    return Err(err(SelectorErrorKind::BadCharacter(c)));
                }
                tokens.push(Token {
                    kind: if c == '=' {
                        TokenKind::EqEq
                    } else {
                        TokenKind::NotEq
                    },
                    text: format!("{c}="),
                    position,
                });
            }
            '"' | '`' => {
                chars.next();
                let mut raw = String::new();
                let mut closed = false;
                while let Some((_, n)) = chars.next() {
                    if n == c {
                        closed = true;
                        break;
                    }
                    if n == '\\' && c == '"' {
                        raw.push(n);
                        if let Some((_, escaped)) = chars.next() {
                            raw.push(escaped);
                        }
                        continue;
                    }
                    raw.push(n);
                }
                if !closed {
                    return Err(err(SelectorErrorKind::UnterminatedString));
                }
                let value = if c == '"' {
                    unescape_go(&raw).map_err(err)?
                } else {
                    raw.clone()
                };
                tokens.push(Token {
                    kind: TokenKind::Str(value),
                    text: format!("{c}{raw}{c}"),
                    position,
                });
            }
            c if c == '-' || c.is_ascii_digit() => {
                let mut number = String::new();
                while let Some((_, n)) =
                    chars.next_if(|&(_, n)| n.is_ascii_alphanumeric() || n == '.' || n == '-' || n == '_')
                {
                    number.push(n);
                }
                if !is_number_literal(&number) {
                    // `value.0` style index segments lex here as digits after a dot.
                    let after_dot = matches!(
                        tokens.last(),
                        Some(Token {
                            kind: TokenKind::Dot,
                            ..
                        })
                    );
                    if !(after_dot && number.chars().all(|d| d.is_ascii_digit())) {
                        return Err(err(SelectorErrorKind::InvalidNumber(number)));
                    }
                }
                tokens.push(Token {
                    kind: TokenKind::Number,
                    text: number,
                    position,
                });
            }
            c if is_word_start(c) => {
                let mut word = String::new();
                while let Some((_, n)) = chars.next_if(|&(_, n)| is_word_char(n)) {
                    word.push(n);
                }
                tokens.push(Token {
                    kind: TokenKind::Word,
                    text: word,
                    position,
                });
            }
            other => return Err(err(SelectorErrorKind::BadCharacter(other))),
        }
    }
    Ok(tokens)
}

fn is_number_literal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    let int_ok =
        int == "0" || (!int.is_empty() && !int.starts_with('0') && int.chars().all(|d| d.is_ascii_digit()));
    let frac_ok = frac.is_none_or(|f| !f.is_empty() && f.chars().all(|d| d.is_ascii_digit()));
    int_ok && frac_ok
}

/// Go's double-quoted string escapes (what `strconv.Unquote` accepts).
fn unescape_go(raw: &str) -> Result<String, SelectorErrorKind> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            return Err(SelectorErrorKind::InvalidEscape("\\".to_owned()));
        };
        let simple = match e {
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
        if let Some(s) = simple {
            out.push(s);
            continue;
        }
        let (width, radix) = match e {
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='7' => (2, 8),
            _ => return Err(SelectorErrorKind::InvalidEscape(format!("\\{e}"))),
        };
        let mut digits = String::new();
        if radix == 8 {
            digits.push(e);
        }
        for _ in 0..width {
            match chars.next() {
                Some(d) => digits.push(d),
                None => return Err(SelectorErrorKind::InvalidEscape(format!("\\{e}{digits}"))),
            }
        }
        let bad = || SelectorErrorKind::InvalidEscape(format!("\\{e}{digits}"));
        let code = u32::from_str_radix(&digits, radix).map_err(|_| bad())?;
        let decoded = char::from_u32(code).ok_or_else(bad)?;
        out.push(decoded);
    }
    Ok(out)
}

struct Parser<'t> {
    tokens: &'t [Token],
    next: usize,
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn peek_word(&self, offset: usize, word: &str) -> bool {
        matches!(self.tokens.get(self.next + offset), Some(t) if t.kind == TokenKind::Word && t.text == word)
    }

    fn bump(&mut self) -> Option<&Token> {
        let token = self.tokens.get(self.next);
        self.next += 1;
        token
    }

    fn error_here(&self, expected: &'static str) -> SelectorError {
        match self.peek() {
            Some(token) => SelectorError {
                position: token.position,
                kind: SelectorErrorKind::Unexpected {
                    found: token.text.clone(),
                    expected,
                },
            },
            None => SelectorError {
                position: self.end,
                kind: SelectorErrorKind::UnexpectedEnd { expected },
            },
        }
    }

    fn expect_word(&mut self, word: &'static str, expected: &'static str) -> Result<(), SelectorError> {
        if self.peek_word(0, word) {
            self.next += 1;
            Ok(())
        } else {
            Err(self.error_here(expected))
        }
    }

    fn or_expression(&mut self) -> Result<Expr, SelectorError> {
        let mut left = self.and_expression()?;
        while self.peek_word(0, "or") {
            self.next += 1;
            let right = self.and_expression()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expression(&mut self) -> Result<Expr, SelectorError> {
        let mut left = self.not_expression()?;
        while self.peek_word(0, "and") {
            self.next += 1;
            let right = self.not_expression()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not_expression(&mut self) -> Result<Expr, SelectorError> {
        if self.peek_word(0, "not") {
            self.next += 1;
            let inner = self.not_expression()?;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if matches!(self.peek(), Some(t) if t.kind == TokenKind::LParen) {
            let open = self.next;
            self.next += 1;
            let inner = self.or_expression()?;
            if matches!(self.peek(), Some(t) if t.kind == TokenKind::RParen) {
                self.next += 1;
                return Ok(inner);
            }
            if self.peek().is_none() {
                let position = self.tokens.get(open).map_or(0, |t| t.position);
                return Err(SelectorError {
                    position,
                    kind: SelectorErrorKind::UnmatchedParenthesis,
                });
            }
            return Err(self.error_here("\")\", \"and\" or \"or\""));
        }
        self.match_expression().map(Expr::Match)
    }

    fn match_expression(&mut self) -> Result<Match, SelectorError> {
        let start = self.peek().map_or(self.end, |t| t.position);
        let operand = self.operand()?;
        // `v in sel` / `v not in sel`
        let negated_in = self.peek_word(0, "not") && self.peek_word(1, "in");
        if self.peek_word(0, "in") || negated_in {
            self.next += if negated_in { 2 } else { 1 };
            let needle = operand.literal();
            let selector_start = self.peek().map_or(self.end, |t| t.position);
            let Operand::Selector(path) = self.operand()? else {
                return Err(SelectorError {
                    position: selector_start,
                    kind: SelectorErrorKind::Unexpected {
                        found: self
                            .tokens
                            .get(self.next.saturating_sub(1))
                            .map_or_else(String::new, |t| t.text.clone()),
                        expected: "a selector after \"in\"",
                    },
                });
            };
            let field = resolve(&path, selector_start)?;
            let operation = if negated_in {
                Operation::NotContains(needle)
            } else {
                Operation::Contains(needle)
            };
            return check(
                field,
                operation,
                if negated_in { "not in" } else { "in" },
                selector_start,
            );
        }
        let Operand::Selector(path) = operand else {
            return Err(self.error_here("\"in\" or \"not in\" after a value"));
        };
        let field = resolve(&path, start)?;
        let (operation, operator) = match self.peek() {
            Some(Token {
                kind: TokenKind::EqEq,
                ..
            }) => {
                self.next += 1;
                (Operation::Equal(self.value()?), "==")
            }
            Some(Token {
                kind: TokenKind::NotEq,
                ..
            }) => {
                self.next += 1;
                (Operation::NotEqual(self.value()?), "!=")
            }
            Some(t) if t.kind == TokenKind::Word => match t.text.as_str() {
                "contains" => {
                    self.next += 1;
                    (Operation::Contains(self.value()?), "contains")
                }
                "matches" => {
                    self.next += 1;
                    (Operation::Matches(self.pattern()?), "matches")
                }
                "is" => {
                    self.next += 1;
                    if self.peek_word(0, "not") {
                        self.next += 1;
                        self.expect_word("empty", "\"empty\" after \"is not\"")?;
                        (Operation::IsNotEmpty, "is not empty")
                    } else {
                        self.expect_word("empty", "\"empty\" or \"not empty\" after \"is\"")?;
                        (Operation::IsEmpty, "is empty")
                    }
                }
                "not" if self.peek_word(1, "contains") => {
                    self.next += 2;
                    (Operation::NotContains(self.value()?), "not contains")
                }
                "not" if self.peek_word(1, "matches") => {
                    self.next += 2;
                    (Operation::NotMatches(self.pattern()?), "not matches")
                }
                _ => return Err(self.error_here(MATCH_OPERATORS)),
            },
            _ => return Err(self.error_here(MATCH_OPERATORS)),
        };
        check(field, operation, operator, start)
    }

    fn operand(&mut self) -> Result<Operand, SelectorError> {
        let Some(token) = self.bump().cloned() else {
            return Err(self.error_here("a selector or a value"));
        };
        match token.kind {
            TokenKind::Str(s) => Ok(Operand::Literal(s)),
            TokenKind::Number => Ok(Operand::Literal(token.text)),
            TokenKind::Word => {
                let mut path = vec![token.text];
                loop {
                    match self.peek().map(|t| &t.kind) {
                        Some(TokenKind::Dot) => {
                            self.next += 1;
                            match self.bump().cloned() {
                                Some(Token {
                                    kind: TokenKind::Word | TokenKind::Number,
                                    text,
                                    ..
                                }) => path.push(text),
                                _ => {
                                    self.next -= 1;
                                    return Err(self.error_here("a field name after \".\""));
                                }
                            }
                        }
                        Some(TokenKind::LBracket) => {
                            self.next += 1;
                            let Some(Token {
                                kind: TokenKind::Str(key),
                                ..
                            }) = self.bump().cloned()
                            else {
                                self.next -= 1;
                                return Err(self.error_here("a quoted string index"));
                            };
                            if !matches!(self.peek(), Some(t) if t.kind == TokenKind::RBracket) {
                                return Err(self.error_here("\"]\" closing the index"));
                            }
                            self.next += 1;
                            path.push(key);
                        }
                        _ => break,
                    }
                }
                Ok(Operand::Selector(path))
            }
            _ => {
                self.next -= 1;
                Err(self.error_here("a selector or a value"))
            }
        }
    }

    fn value(&mut self) -> Result<String, SelectorError> {
        Ok(self.operand()?.literal())
    }

    fn pattern(&mut self) -> Result<Regex, SelectorError> {
        let position = self.peek().map_or(self.end, |t| t.position);
        let pattern = self.value()?;
        Regex::new(&pattern).map_err(|e| SelectorError {
            position,
            kind: SelectorErrorKind::InvalidRegex {
                pattern,
                reason: e.to_string(),
            },
        })
    }
}

const MATCH_OPERATORS: &str = "\"==\", \"!=\", \"contains\", \"not contains\", \"matches\", \"not matches\", \"is empty\" or \"is not empty\"";

enum Operand {
    Selector(Vec<String>),
    Literal(String),
}

impl Operand {
    /// A bare selector used as a value stands for its own text, as in go-bexpr.
    fn literal(self) -> String {
        match self {
            Operand::Selector(path) => path.join("."),
            Operand::Literal(s) => s,
        }
    }
}

fn resolve(path: &[String], position: usize) -> Result<Field, SelectorError> {
    let field = match path {
        [root] if root == "value" => Some(Field::AllValues),
        [root] if root == "list" => Some(Field::AllLists),
        [root, name] if root == "value" => Some(Field::Value(name.clone())),
        [root, name] if root == "list" => Some(Field::List(name.clone())),
        _ => None,
    };
    field.ok_or_else(|| SelectorError {
        position,
        kind: SelectorErrorKind::UnknownField(path.join(".")),
    })
}

fn check(
    field: Field,
    operation: Operation,
    operator: &'static str,
    position: usize,
) -> Result<Match, SelectorError> {
    let string_only = matches!(
        operation,
        Operation::Equal(_) | Operation::NotEqual(_) | Operation::Matches(_) | Operation::NotMatches(_)
    );
    if string_only && !matches!(field, Field::Value(_)) {
        return Err(SelectorError {
            position,
            kind: SelectorErrorKind::UnsupportedOperator {
                operator,
                selector: field.describe(),
                kind: field.kind(),
            },
        });
    }
    Ok(Match { field, operation })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> SelectableFields {
        let mut f = SelectableFields::default();
        f.values.insert("name".into(), "web".into());
        f.values.insert("team".into(), "payments-eu".into());
        f.values.insert("empty".into(), String::new());
        f.lists
            .insert("groups".into(), vec!["admins".into(), "dev ops".into()]);
        f.lists.insert("none".into(), vec![]);
        f
    }

    fn eval(text: &str) -> bool {
        Selector::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .evaluate(&fields())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn parse_err(text: &str) -> SelectorError {
        match Selector::parse(text) {
            Ok(_) => panic!("{text} parsed"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        for text in ["", "   "] {
            let s = Selector::parse(text).unwrap();
            assert!(s.is_empty());
            assert!(s.matches(&SelectableFields::default()));
        }
    }

    #[test]
    fn equality_operators() {
        assert!(eval(r#"value.name == "web""#));
        assert!(!eval(r#"value.name == "api""#));
        assert!(eval(r#"value.name != "api""#));
        assert!(!eval(r#"value.name != "web""#));
        assert!(eval("value.name==web"), "bare words are literal values");
        assert!(eval("value.name == `web`"));
        assert!(eval(r#"value["name"] == "web""#));
    }

    #[test]
    fn in_and_contains_on_each_kind() {
        assert!(eval(r#""admins" in list.groups"#));
        assert!(eval(r#""dev ops" in list.groups"#));
        assert!(!eval(r#""dev" in list.groups"#), "lists match whole elements");
        assert!(eval(r#""dev" not in list.groups"#));
        assert!(eval(r#"list.groups contains "admins""#));
        assert!(eval(r#"list.groups not contains "users""#));
        assert!(eval(r#""pay" in value.team"#), "strings match substrings");
        assert!(eval(r#"value.team contains "-eu""#));
        assert!(eval(r#"value.team not contains "us""#));
        assert!(eval(r#""name" in value"#), "maps match keys");
        assert!(eval(r#""groups" in list"#));
        assert!(eval(r#""other" not in value"#));
    }

    #[test]
    fn emptiness() {
        assert!(eval("value.empty is empty"));
        assert!(eval("value.name is not empty"));
        assert!(eval("list.none is empty"));
        assert!(eval("list.groups is not empty"));
        assert!(eval("value is not empty"));
    }

    #[test]
    fn regex_matches() {
        assert!(eval(r#"value.team matches "^pay.*-eu$""#));
        assert!(eval(r#"value.team not matches "^web""#));
        assert!(
            eval(r#"value.name matches "e""#),
            "unanchored like Go's MatchString"
        );
        let err = parse_err(r#"value.name matches "(""#);
        assert_eq!(err.position, 19);
        assert!(
            matches!(err.kind, SelectorErrorKind::InvalidRegex { .. }),
            "{err}"
        );
    }

    #[test]
    fn precedence_and_grouping() {
        // and binds tighter than or: true or (false and false)
        assert!(eval(
            r#"value.name == "web" or value.name == "x" and value.team == "y""#
        ));
        // (true or false) and false
        assert!(!eval(
            r#"(value.name == "web" or value.name == "x") and value.team == "y""#
        ));
        // not binds tighter than and
        assert!(eval(r#"not value.name == "x" and value.team == "payments-eu""#));
        assert!(!eval(
            r#"not (value.name == "web" and value.team == "payments-eu")"#
        ));
        assert!(eval(r#"not not value.name == "web""#));
        assert!(eval(r#"((value.name == "web"))"#));
    }

    #[test]
    fn go_string_escapes() {
        let mut f = fields();
        f.values.insert("q".into(), "a\"b\tc\u{e9}".into());
        let s = Selector::parse(r#"value.q == "a\"b\tc\u00e9""#).unwrap();
        assert!(s.matches(&f));
        let s = Selector::parse(r#"value.q == "a\x22b\tc\303""#);
        assert!(s.is_ok(), "octal and hex escapes parse");
        let err = parse_err(r#"value.q == "\q""#);
        assert_eq!(err.kind, SelectorErrorKind::InvalidEscape("\\q".into()));
    }

    #[test]
    fn missing_field_is_no_match() {
        let s = Selector::parse(r#"value.unmapped == "x""#).unwrap();
        assert_eq!(
            s.evaluate(&fields()),
            Err(SelectorEvalError::MissingField("value.unmapped".into()))
        );
        assert!(!s.matches(&fields()));
        let s = Selector::parse(r#"not value.unmapped == "x""#).unwrap();
        assert!(!s.matches(&fields()), "an error is no match even under not");
    }

    #[test]
    fn parse_errors_carry_positions() {
        let e = parse_err(r#"value.name == "web" and"#);
        assert_eq!(e.position, 23);
        assert!(matches!(e.kind, SelectorErrorKind::UnexpectedEnd { .. }));

        let e = parse_err(r#"(value.name == "web""#);
        assert_eq!((e.position, e.kind), (0, SelectorErrorKind::UnmatchedParenthesis));

        let e = parse_err(r#"value.name == "web")"#);
        assert_eq!(
            (e.position, e.kind),
            (19, SelectorErrorKind::UnmatchedParenthesis)
        );

        let e = parse_err(r#"value.name == "web"#);
        assert_eq!((e.position, e.kind), (14, SelectorErrorKind::UnterminatedString));

        let e = parse_err(r#"value.name = "web""#);
        assert_eq!((e.position, e.kind), (11, SelectorErrorKind::BadCharacter('=')));

        let e = parse_err(r#"value.name equals "web""#);
        assert_eq!(e.position, 11);

        let e = parse_err(r#"value.name == 01"#);
        assert_eq!(
            (e.position, e.kind),
            (14, SelectorErrorKind::InvalidNumber("01".into()))
        );

        let e = parse_err(r#"value.name is full"#);
        assert_eq!(e.position, 14);

        let e = parse_err(r#""x" in "y""#);
        assert_eq!(e.position, 7);
    }

    #[test]
    fn selectors_and_operators_are_checked_against_the_field_shape() {
        let e = parse_err(r#"claims.name == "web""#);
        assert_eq!(
            (e.position, e.kind),
            (0, SelectorErrorKind::UnknownField("claims.name".into()))
        );
        let e = parse_err(r#"value.a.b == "web""#);
        assert_eq!(e.kind, SelectorErrorKind::UnknownField("value.a.b".into()));
        let e = parse_err(r#""x" in other"#);
        assert_eq!(
            (e.position, e.kind),
            (7, SelectorErrorKind::UnknownField("other".into()))
        );
        let e = parse_err(r#"list.groups == "admins""#);
        assert!(
            matches!(
                e.kind,
                SelectorErrorKind::UnsupportedOperator {
                    operator: "==",
                    kind: "list",
                    ..
                }
            ),
            "{e}"
        );
        let e = parse_err(r#"value matches "x""#);
        assert!(
            matches!(e.kind, SelectorErrorKind::UnsupportedOperator { kind: "map", .. }),
            "{e}"
        );
    }

    #[test]
    fn error_messages_name_the_problem() {
        let e = parse_err(r#"claims.name == "web""#);
        assert_eq!(
            e.to_string(),
            "selector is invalid at position 0: selector \"claims.name\" is not valid"
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_and_evaluating_arbitrary_text_never_panics(text in "[ -~µ]{0,40}") {
            if let Ok(selector) = Selector::parse(&text) {
                let _ = selector.evaluate(&fields());
            }
        }
    }
}
