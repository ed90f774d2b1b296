//! Consul's `?filter=` expressions: the boolean expression language of HashiCorp's go-bexpr as
//! Consul's list endpoints take it (catalog, health, agent services and checks), parsed once per
//! request and evaluated against each element of the answer as `serde_json::Value`.
//!
//! The language is the one Consul documents: selectors (`Service.Tags`, `NodeMeta["rack key"]`),
//! values (bare words, numbers, `"quoted"` and `` `raw` `` strings), the match operators `==`,
//! `!=`, `is empty`, `is not empty`, `in`, `not in`, `contains`, `not contains`, `matches`,
//! `not matches`, and `and`, `or`, `not` with parentheses (`not` binds tightest, then `and`, then
//! `or`). There are no ordering operators (`<`, `>`): bexpr has none. Later go-bexpr releases
//! added JSON-pointer selectors, `any`/`all` collection expressions and `is nil`; the go-bexpr
//! Consul builds against predates them, so they are syntax errors here as there.
//!
//! This is not go-bexpr's evaluator. go-bexpr walks Consul's Go structs and checks every selector
//! against the struct type when the filter is created; this module walks JSON and has no schema.
//! The differences that follow from that:
//! - A selector naming a field the item does not have, or whose value is `null`, selects an
//!   *absent* value, which go-bexpr gives only to missing map keys: `==`, `in`, `is not empty` and
//!   `matches` are false, their negations true. go-bexpr instead rejects a misspelt struct field
//!   when the filter is created; with no schema we cannot tell a misspelt field from a missing map
//!   key, and "absent" is the answer that never fails a request over an optional field.
//! - An operator the selected value does not support (`Port matches "8"`, `Tags == x`), a value
//!   that cannot be read as the field's type (`Port == abc`), and a selector that continues past a
//!   number or string fail when an item is evaluated ([`Filter::matches`]), not at
//!   [`Filter::parse`]: only the item tells us the field's type.
//! - A JSON object may be a Go struct or map in Consul; both are treated as maps here, so
//!   `"Passing" in Weights` and `Weights is empty` work on what go-bexpr would call a struct.
//! - `is empty` also applies to strings (go-bexpr's later releases allow it too).
//!
//! Field names are case-sensitive, as in go-bexpr: they are Consul's JSON names (`ServiceMeta`,
//! `Node.Meta`). A list in the middle of a selector (`Checks.Status` on a `/v1/health/service`
//! element) is an implicit "any": the match is true if it is true for some element of the list,
//! and false for an empty list, whatever the operator. So `Checks.Status != passing` keeps a
//! result with at least one check that is not passing, and `not Checks.Status == passing` one
//! with no passing check.
//!
//! Every [`FilterError`] is the client's fault: Consul answers them with HTTP 400 and a body of
//! [`CONSUL_ERROR_PREFIX`] followed by the error's text.

#![cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "the catalog, health and agent handlers call this as their answers become JSON values"
    )
)]

use std::collections::BTreeSet;
use std::fmt;

use regex::Regex;
use serde_json::{Map, Number, Value};

/// What Consul puts before a filter error in its HTTP 400 answer (go-bexpr's `CreateFilter`).
pub(crate) const CONSUL_ERROR_PREFIX: &str = "Failed to create boolean expression evaluator: ";

/// Deepest nesting of parentheses a filter may have. The parser and the evaluator recurse once per
/// level, so an unbounded depth would let a request overflow the stack.
const MAX_NESTING: usize = 100;

/// A place in the filter text, in the `line:column (offset)` form go-bexpr's parser reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    /// 1-based line.
    pub(crate) line: usize,
    /// 1-based column, counted in characters.
    pub(crate) column: usize,
    /// 0-based byte offset.
    pub(crate) offset: usize,
}

impl Position {
    fn at(src: &str, offset: usize) -> Position {
        let before = src.get(..offset).unwrap_or(src);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        Position { line, column, offset }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.line, self.column, self.offset)
    }
}

/// Why a filter expression was refused, when parsed or when evaluated against an item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FilterError {
    /// The text is not an expression of the language; `message` says what was wrong or expected
    /// at `position`.
    #[error("{position}: {message}")]
    Syntax {
        /// Where parsing stopped.
        position: Position,
        /// What was wrong there.
        message: String,
    },
    /// The operand of `matches` / `not matches` is not a regular expression.
    #[error("Failed to compile regular expression {pattern:?}: {reason}")]
    Regex {
        /// The operand as written (after unquoting).
        pattern: String,
        /// The regex compiler's complaint.
        reason: String,
    },
    /// The operator does not apply to the kind of value the selector reached.
    #[error("Invalid match operator \"{operator}\" for selector {selector:?}: its value is {kind}")]
    Operator {
        /// The operator, as written in the language (`==`, `not in`, ...).
        operator: &'static str,
        /// The selector, in the language's syntax.
        selector: String,
        /// The JSON kind found (`a number`, `a list`, ...).
        kind: &'static str,
    },
    /// The value cannot be read as the selected field's type.
    #[error("Failed to coerce value {value:?} for selector {selector:?}: it is not {expected}")]
    Coerce {
        /// The value as written (after unquoting).
        value: String,
        /// The selector, in the language's syntax.
        selector: String,
        /// What the field needs (`an integer`, `a boolean`, ...).
        expected: &'static str,
    },
    /// The selector names a field inside a value that has none.
    #[error("Selector {selector:?} is not valid: {parent:?} is {kind}, which has no fields")]
    Selector {
        /// The selector, in the language's syntax.
        selector: String,
        /// The part of the selector that reached the value without fields.
        parent: String,
        /// The JSON kind found there.
        kind: &'static str,
    },
}

/// A parsed filter expression, evaluated against any number of items.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    expr: Expr,
}

#[derive(Debug, Clone)]
enum Expr {
    /// True if any is; evaluated left to right, stopping at the first true.
    Or(Vec<Expr>),
    /// True if all are; evaluated left to right, stopping at the first false.
    And(Vec<Expr>),
    Not(Box<Expr>),
    Match(Box<Matcher>),
}

/// One `selector operator value` comparison.
#[derive(Debug, Clone)]
struct Matcher {
    selector: Vec<String>,
    op: Op,
    /// Absent for `is empty` / `is not empty`.
    value: Option<Operand>,
}

#[derive(Debug, Clone)]
struct Operand {
    /// The value's text: a string literal unquoted, a number or a bare word as written.
    raw: String,
    /// Compiled once at parse time for `matches` / `not matches`.
    regex: Option<Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equal,
    NotEqual,
    /// `in` and `contains`, which differ only in operand order.
    In,
    NotIn,
    IsEmpty,
    IsNotEmpty,
    Matches,
    NotMatches,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Equal => "==",
            Op::NotEqual => "!=",
            Op::In => "in",
            Op::NotIn => "not in",
            Op::IsEmpty => "is empty",
            Op::IsNotEmpty => "is not empty",
            Op::Matches => "matches",
            Op::NotMatches => "not matches",
        }
    }

    /// The answer for an absent value: nothing equals, contains or matches it, and it is empty.
    fn when_absent(self) -> bool {
        matches!(self, Op::NotEqual | Op::NotIn | Op::IsEmpty | Op::NotMatches)
    }

    fn is_negative(self) -> bool {
        matches!(self, Op::NotEqual | Op::NotIn | Op::IsNotEmpty | Op::NotMatches)
    }
}

impl Filter {
    /// Parses `text`. The empty string is not an expression; callers that treat an empty
    /// `?filter=` as no filter, as Consul does, use [`apply`].
    pub(crate) fn parse(text: &str) -> Result<Filter, FilterError> {
        let mut parser = Parser::new(text);
        parser.whitespace();
        if let Some(expr) = parser.or_expr()? {
            parser.whitespace();
            if parser.pos == text.len() {
                return Ok(Filter { expr });
            }
            parser.expected_at(parser.pos, "end of input");
        }
        Err(parser.no_match())
    }

    /// Whether `item` (one element of an answer, as Consul's JSON) passes the filter. Fails when
    /// the expression does not fit the item's shape (see the module documentation); `and` and `or`
    /// stop at the first operand that decides them, so an operand after it is not checked.
    pub(crate) fn matches(&self, item: &Value) -> Result<bool, FilterError> {
        self.expr.eval(item)
    }
}

/// Keeps the items `filter` matches, in order. `None` and `Some("")` keep everything: Consul
/// treats an empty `?filter=` as none.
pub(crate) fn apply(filter: Option<&str>, items: Vec<Value>) -> Result<Vec<Value>, FilterError> {
    let Some(filter) = parse_optional(filter)? else {
        return Ok(items);
    };
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        if filter.matches(&item)? {
            kept.push(item);
        }
    }
    Ok(kept)
}

/// [`apply`] for an answer that is an object keyed by ID (`/v1/agent/services`,
/// `/v1/agent/checks`): the filter sees each value, and the kept values keep their keys.
pub(crate) fn apply_map(
    filter: Option<&str>,
    items: Map<String, Value>,
) -> Result<Map<String, Value>, FilterError> {
    let Some(filter) = parse_optional(filter)? else {
        return Ok(items);
    };
    let mut kept = Map::new();
    for (key, item) in items {
        if filter.matches(&item)? {
            kept.insert(key, item);
        }
    }
    Ok(kept)
}

fn parse_optional(filter: Option<&str>) -> Result<Option<Filter>, FilterError> {
    match filter {
        None | Some("") => Ok(None),
        Some(text) => Filter::parse(text).map(Some),
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing. The grammar is a PEG; this is a recursive-descent parser that backtracks the same way,
// except that `and`/`or` chains and `not` prefixes are read in loops (the PEG's right recursion
// would re-read the left operand on every failure and recurse once per operator). A failure that
// only means "try something else" returns `Ok(None)` with the position restored and remembers,
// for the final message, what was expected at the furthest position reached; the mistakes the
// grammar names (unterminated string, bad number, ...) are hard errors.

type Parsed<T> = Result<Option<T>, FilterError>;

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    nesting: usize,
    /// The furthest offset at which something failed to match, and what was wanted there.
    furthest: usize,
    expected: BTreeSet<&'static str>,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Parser<'a> {
        Parser {
            src,
            pos: 0,
            nesting: 0,
            furthest: 0,
            expected: BTreeSet::new(),
        }
    }

    fn byte_at(&self, at: usize) -> Option<u8> {
        self.src.as_bytes().get(at).copied()
    }

    fn peek(&self) -> Option<u8> {
        self.byte_at(self.pos)
    }

    fn expected_at(&mut self, at: usize, what: &'static str) {
        if at > self.furthest {
            self.furthest = at;
            self.expected.clear();
        }
        if at == self.furthest {
            self.expected.insert(what);
        }
    }

    fn error_at(&self, at: usize, rule: &str, message: impl fmt::Display) -> FilterError {
        FilterError::Syntax {
            position: Position::at(self.src, at),
            message: format!("rule \"{rule}\": {message}"),
        }
    }

    fn no_match(&self) -> FilterError {
        let mut list = String::new();
        let count = self.expected.len();
        for (i, what) in self.expected.iter().enumerate() {
            if i > 0 {
                list.push_str(if i + 1 == count { " or " } else { ", " });
            }
            list.push_str(what);
        }
        FilterError::Syntax {
            position: Position::at(self.src, self.furthest),
            message: format!("no match found, expected: {list}"),
        }
    }

    /// Skips `[ \t\r\n]*`; true if it skipped any (the grammar's mandatory `_`).
    fn whitespace(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// The grammar's mandatory `_`: at least one whitespace character.
    fn required_whitespace(&mut self) -> bool {
        let skipped = self.whitespace();
        if !skipped {
            self.expected_at(self.pos, "whitespace");
        }
        skipped
    }

    /// Consumes `word` if the text continues with it. Keywords are not delimited by the grammar
    /// itself: the whitespace the operators demand around them is what separates them.
    fn literal(&mut self, word: &'static str, label: &'static str) -> bool {
        if self
            .src
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(word))
        {
            self.pos += word.len();
            true
        } else {
            self.expected_at(self.pos, label);
            false
        }
    }

    /// `_ w1 _ w2 ... _` with the trailing `_` when `trailing`; restores the position on failure.
    fn words(&mut self, words: &[(&'static str, &'static str)], trailing: bool) -> bool {
        let start = self.pos;
        for &(word, label) in words {
            if !(self.required_whitespace() && self.literal(word, label)) {
                self.pos = start;
                return false;
            }
        }
        if trailing && !self.required_whitespace() {
            self.pos = start;
            return false;
        }
        true
    }

    fn or_expr(&mut self) -> Parsed<Expr> {
        self.chain("or", "\"or\"", Self::and_expr, Expr::Or)
    }

    fn and_expr(&mut self) -> Parsed<Expr> {
        self.chain("and", "\"and\"", Self::not_expr, Expr::And)
    }

    /// `operand (_ word _ operand)*`: the PEG's `left _ word _ right:Self / left`, read in a loop.
    /// When no operand follows a `word`, the chain ends before the whitespace ahead of it.
    fn chain(
        &mut self,
        word: &'static str,
        label: &'static str,
        operand: fn(&mut Self) -> Parsed<Expr>,
        build: fn(Vec<Expr>) -> Expr,
    ) -> Parsed<Expr> {
        let Some(first) = operand(self)? else {
            return Ok(None);
        };
        let mut operands = vec![first];
        loop {
            let before = self.pos;
            if self.required_whitespace()
                && self.literal(word, label)
                && self.required_whitespace()
                && let Some(next) = operand(self)?
            {
                operands.push(next);
                continue;
            }
            self.pos = before;
            break;
        }
        Ok(Some(if operands.len() == 1 {
            operands.remove(0)
        } else {
            build(operands)
        }))
    }

    /// `not _ NotExpression / ParenthesizedExpression`. `not` is also a valid selector, so when
    /// what follows a run of `not`s does not parse, the last `not` is retried as an operand.
    fn not_expr(&mut self) -> Parsed<Expr> {
        let mut nots = Vec::new();
        loop {
            let start = self.pos;
            if self.literal("not", "\"not\"") && self.required_whitespace() {
                nots.push(start);
            } else {
                self.pos = start;
                break;
            }
        }
        loop {
            if let Some(expr) = self.paren_expr()? {
                // `not not X` is X.
                return Ok(Some(if nots.len() % 2 == 1 {
                    Expr::Not(Box::new(expr))
                } else {
                    expr
                }));
            }
            match nots.pop() {
                Some(start) => self.pos = start,
                None => return Ok(None),
            }
        }
    }

    fn paren_expr(&mut self) -> Parsed<Expr> {
        let start = self.pos;
        if self.peek() != Some(b'(') {
            self.expected_at(start, "\"(\"");
            return self.match_expr();
        }
        self.pos += 1;
        if self.nesting >= MAX_NESTING {
            return Err(self.error_at(
                start,
                "grouping",
                format_args!("Parentheses nest deeper than {MAX_NESTING} levels"),
            ));
        }
        self.nesting += 1;
        self.whitespace();
        let inner = self.or_expr();
        self.nesting -= 1;
        let Some(inner) = inner? else {
            self.pos = start;
            return Ok(None);
        };
        self.whitespace();
        if self.peek() == Some(b')') {
            self.pos += 1;
            return Ok(Some(inner));
        }
        self.expected_at(self.pos, "\")\"");
        Err(self.error_at(self.pos, "grouping", "Unmatched parentheses"))
    }

    /// `Selector op Value / Selector is [not] empty / Value [not] in Selector`.
    fn match_expr(&mut self) -> Parsed<Expr> {
        let start = self.pos;
        if let Some(selector) = self.selector()? {
            let after_selector = self.pos;
            if let Some(op) = self.binary_op()
                && let Some(value) = self.value()?
            {
                return Self::matcher(selector, op, Some(value));
            }
            self.pos = after_selector;
            if let Some(op) = self.empty_op() {
                return Self::matcher(selector, op, None);
            }
            self.pos = start;
        }
        if let Some(value) = self.value()?
            && let Some(op) = self.in_op()
        {
            let at = self.pos;
            if let Some(selector) = self.selector()? {
                return Self::matcher(selector, op, Some(value));
            }
            return Err(self.error_at(at, "match", "Invalid selector"));
        }
        self.pos = start;
        Ok(None)
    }

    /// Builds a match, compiling a `matches` pattern now so that a bad one fails the parse (the
    /// error names the pattern rather than a position, as go-bexpr's does).
    fn matcher(selector: Vec<String>, op: Op, raw: Option<String>) -> Parsed<Expr> {
        let value = match raw {
            None => None,
            Some(raw) => {
                let regex = if matches!(op, Op::Matches | Op::NotMatches) {
                    match Regex::new(&raw) {
                        Ok(regex) => Some(regex),
                        Err(err) => {
                            return Err(FilterError::Regex {
                                pattern: raw,
                                reason: err.to_string(),
                            });
                        }
                    }
                } else {
                    None
                };
                Some(Operand { raw, regex })
            }
        };
        Ok(Some(Expr::Match(Box::new(Matcher { selector, op, value }))))
    }

    fn binary_op(&mut self) -> Option<Op> {
        let start = self.pos;
        for (symbol, op) in [("==", Op::Equal), ("!=", Op::NotEqual)] {
            self.whitespace();
            if self.literal(symbol, if op == Op::Equal { "\"==\"" } else { "\"!=\"" }) {
                self.whitespace();
                return Some(op);
            }
            self.pos = start;
        }
        let spelled: [(&[(&'static str, &'static str)], Op); 4] = [
            (&[("contains", "\"contains\"")], Op::In),
            (&[("not", "\"not\""), ("contains", "\"contains\"")], Op::NotIn),
            (&[("matches", "\"matches\"")], Op::Matches),
            (&[("not", "\"not\""), ("matches", "\"matches\"")], Op::NotMatches),
        ];
        spelled
            .into_iter()
            .find_map(|(words, op)| self.words(words, true).then_some(op))
    }

    fn empty_op(&mut self) -> Option<Op> {
        if self.words(&[("is", "\"is\""), ("empty", "\"empty\"")], false) {
            return Some(Op::IsEmpty);
        }
        self.words(
            &[("is", "\"is\""), ("not", "\"not\""), ("empty", "\"empty\"")],
            false,
        )
        .then_some(Op::IsNotEmpty)
    }

    fn in_op(&mut self) -> Option<Op> {
        if self.words(&[("in", "\"in\"")], true) {
            return Some(Op::In);
        }
        self.words(&[("not", "\"not\""), ("in", "\"in\"")], true)
            .then_some(Op::NotIn)
    }

    fn identifier(&mut self) -> Option<String> {
        let start = self.pos;
        if !self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
            self.expected_at(start, "a selector");
            return None;
        }
        self.pos += 1;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.pos += 1;
        }
        self.src.get(start..self.pos).map(str::to_owned)
    }

    /// `Identifier ("." Identifier / "[" StringLiteral "]")*`.
    fn selector(&mut self) -> Parsed<Vec<String>> {
        let Some(first) = self.identifier() else {
            return Ok(None);
        };
        let mut parts = vec![first];
        loop {
            match self.peek() {
                Some(b'.') => {
                    let dot = self.pos;
                    self.pos += 1;
                    match self.identifier() {
                        Some(part) => parts.push(part),
                        None => {
                            self.pos = dot;
                            break;
                        }
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.whitespace();
                    let Some(key) = self.string_literal()? else {
                        return Err(self.error_at(self.pos, "index", "Invalid index"));
                    };
                    self.whitespace();
                    if self.peek() != Some(b']') {
                        return Err(self.error_at(self.pos, "index", "Unclosed index expression"));
                    }
                    self.pos += 1;
                    parts.push(key);
                }
                _ => break,
            }
        }
        Ok(Some(parts))
    }

    /// `Selector / Number / String`; a selector used as a value is its dotted text, never a lookup.
    fn value(&mut self) -> Parsed<String> {
        if let Some(parts) = self.selector()? {
            return Ok(Some(parts.join(".")));
        }
        if let Some(number) = self.number_literal()? {
            return Ok(Some(number));
        }
        self.string_literal()
    }

    /// `-? (0 / [1-9][0-9]*) (. [0-9]+)?`, which must be followed by whitespace, `)` or the end.
    fn number_literal(&mut self) -> Parsed<String> {
        let start = self.pos;
        let mut at = start;
        if self.byte_at(at) == Some(b'-') {
            at += 1;
        }
        match self.byte_at(at) {
            Some(b'0') => at += 1,
            Some(b'1'..=b'9') => {
                while self.byte_at(at).is_some_and(|b| b.is_ascii_digit()) {
                    at += 1;
                }
            }
            _ => {
                self.expected_at(start, "a number");
                return Ok(None);
            }
        }
        if self.byte_at(at) == Some(b'.') && self.byte_at(at + 1).is_some_and(|b| b.is_ascii_digit()) {
            at += 1;
            while self.byte_at(at).is_some_and(|b| b.is_ascii_digit()) {
                at += 1;
            }
        }
        if !matches!(self.byte_at(at), None | Some(b' ' | b'\t' | b'\r' | b'\n' | b')')) {
            return Err(self.error_at(at, "number", "Invalid number literal"));
        }
        self.pos = at;
        Ok(self.src.get(start..at).map(str::to_owned))
    }

    /// `` `raw` `` (no escapes; carriage returns dropped, as Go's unquoting does) or `"escaped"`
    /// (Go's escapes; the string ends at the first `"`, so a quote cannot be escaped into it).
    fn string_literal(&mut self) -> Parsed<String> {
        let start = self.pos;
        let quote = match self.peek() {
            Some(q @ (b'"' | b'`')) => q,
            _ => {
                self.expected_at(start, "a string");
                return Ok(None);
            }
        };
        let body_start = start + 1;
        let Some(len) = self
            .src
            .get(body_start..)
            .and_then(|rest| rest.bytes().position(|b| b == quote))
        else {
            self.pos = self.src.len();
            return Err(self.error_at(self.src.len(), "string", "Unterminated string literal"));
        };
        let body = self.src.get(body_start..body_start + len).unwrap_or_default();
        let text = if quote == b'`' {
            body.replace('\r', "")
        } else {
            unescape(body).map_err(|why| self.error_at(start, "string", why))?
        };
        self.pos = body_start + len + 1;
        Ok(Some(text))
    }
}

/// Go's escapes inside a double-quoted string: `\a \b \f \n \r \t \v \\ \"`, `\xHH` and `\OOO`
/// (bytes), `\uHHHH` and `\UHHHHHHHH` (characters). A raw newline is refused, as Go refuses it.
fn unescape(body: &str) -> Result<String, String> {
    if body.contains('\n') {
        return Err("Invalid string literal: a newline must be written \\n".to_owned());
    }
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some(kind) = chars.next() else {
            return Err("Invalid string literal: it ends with a lone backslash".to_owned());
        };
        let simple = match kind {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            _ => None,
        };
        if let Some(byte) = simple {
            out.push(byte);
            continue;
        }
        let (digits, radix) = match kind {
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='7' => (2, 8),
            _ => {
                return Err(format!(
                    "Invalid string literal: unknown escape sequence \\{kind}"
                ));
            }
        };
        let mut value = if radix == 8 {
            kind.to_digit(8).unwrap_or(0)
        } else {
            0
        };
        for _ in 0..digits {
            let digit = chars.next().and_then(|d| d.to_digit(radix));
            let Some(digit) = digit else {
                return Err(format!(
                    "Invalid string literal: escape \\{kind} needs {digits} more digits"
                ));
            };
            value = value * radix + digit;
        }
        match kind {
            'x' => out.push(value as u8),
            '0'..='7' => match u8::try_from(value) {
                Ok(byte) => out.push(byte),
                Err(_) => {
                    return Err(format!(
                        "Invalid string literal: octal escape {value:o} exceeds 377"
                    ));
                }
            },
            _ => match char::from_u32(value) {
                Some(c) => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                None => {
                    return Err(format!(
                        "Invalid string literal: \\{kind}{value:x} is not a character"
                    ));
                }
            },
        }
    }
    String::from_utf8(out).map_err(|_| "Invalid string literal: its escapes are not UTF-8".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

impl Expr {
    fn eval(&self, item: &Value) -> Result<bool, FilterError> {
        match self {
            Expr::Or(operands) => {
                for operand in operands {
                    if operand.eval(item)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Expr::And(operands) => {
                for operand in operands {
                    if !operand.eval(item)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Expr::Not(operand) => Ok(!operand.eval(item)?),
            Expr::Match(matcher) => matcher.walk(item, 0),
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A selector (or its first `len` parts) in the language's own syntax, for messages.
fn selector_text(parts: &[String]) -> String {
    let mut text = String::new();
    for (i, part) in parts.iter().enumerate() {
        let plain = part.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if plain {
            if i > 0 {
                text.push('.');
            }
            text.push_str(part);
        } else {
            text.push_str(&format!("[{part:?}]"));
        }
    }
    text
}

impl Matcher {
    fn selector_text(&self) -> String {
        selector_text(&self.selector)
    }

    fn raw(&self) -> &str {
        self.value.as_ref().map_or("", |v| v.raw.as_str())
    }

    /// Follows the selector from `depth` on. Objects are entered by key; a list met before the
    /// selector ends is searched for any element that matches with the rest of the selector.
    fn walk(&self, mut current: &Value, mut depth: usize) -> Result<bool, FilterError> {
        loop {
            let Some(part) = self.selector.get(depth) else {
                return self.compare(current);
            };
            match current {
                Value::Object(fields) => match fields.get(part) {
                    None | Some(Value::Null) => return Ok(self.op.when_absent()),
                    Some(next) => {
                        current = next;
                        depth += 1;
                    }
                },
                Value::Array(elements) => {
                    for element in elements {
                        if self.walk(element, depth)? {
                            return Ok(true);
                        }
                    }
                    return Ok(false);
                }
                Value::Null => return Ok(self.op.when_absent()),
                other => {
                    return Err(FilterError::Selector {
                        selector: self.selector_text(),
                        parent: selector_text(self.selector.get(..depth).unwrap_or_default()),
                        kind: kind_of(other),
                    });
                }
            }
        }
    }

    /// Applies the operator to the selected value.
    fn compare(&self, value: &Value) -> Result<bool, FilterError> {
        if value.is_null() {
            return Ok(self.op.when_absent());
        }
        let positive = match self.op {
            Op::Equal | Op::NotEqual => self.equals(value)?,
            Op::In | Op::NotIn => self.contains(value)?,
            Op::IsEmpty | Op::IsNotEmpty => match value {
                Value::String(s) => s.is_empty(),
                Value::Array(elements) => elements.is_empty(),
                Value::Object(fields) => fields.is_empty(),
                other => return Err(self.unsupported(other)),
            },
            Op::Matches | Op::NotMatches => match (value, self.value.as_ref().and_then(|v| v.regex.as_ref()))
            {
                (Value::String(s), Some(regex)) => regex.is_match(s),
                (other, _) => return Err(self.unsupported(other)),
            },
        };
        Ok(positive != self.op.is_negative())
    }

    fn unsupported(&self, value: &Value) -> FilterError {
        FilterError::Operator {
            operator: self.op.as_str(),
            selector: self.selector_text(),
            kind: kind_of(value),
        }
    }

    fn coerce_error(&self, expected: &'static str) -> FilterError {
        FilterError::Coerce {
            value: self.raw().to_owned(),
            selector: self.selector_text(),
            expected,
        }
    }

    /// `==` on a scalar: the value is read as the field's type, as go-bexpr coerces it.
    fn equals(&self, value: &Value) -> Result<bool, FilterError> {
        let raw = self.raw();
        match value {
            Value::String(s) => Ok(s == raw),
            Value::Bool(b) => crate::strconv::parse_go_bool(raw)
                .map(|v| v == *b)
                .ok_or_else(|| self.coerce_error("a boolean")),
            Value::Number(n) => number_equals(n, raw)
                .ok_or_else(|| self.coerce_error(if n.is_f64() { "a number" } else { "an integer" })),
            other => Err(self.unsupported(other)),
        }
    }

    /// `in` / `contains`: substring of a string, key of an object, element of a list.
    fn contains(&self, value: &Value) -> Result<bool, FilterError> {
        let raw = self.raw();
        match value {
            Value::String(s) => Ok(s.contains(raw)),
            Value::Object(fields) => Ok(fields.contains_key(raw)),
            Value::Array(elements) => {
                for element in elements {
                    // Each element is compared as its own type; a value that cannot be read as
                    // that type equals no such element.
                    let equal = match element {
                        Value::String(s) => s == raw,
                        Value::Bool(b) => crate::strconv::parse_go_bool(raw) == Some(*b),
                        Value::Number(n) => number_equals(n, raw) == Some(true),
                        Value::Null => false,
                        Value::Array(_) | Value::Object(_) => {
                            return Err(FilterError::Operator {
                                operator: self.op.as_str(),
                                selector: self.selector_text(),
                                kind: "a list of lists or objects",
                            });
                        }
                    };
                    if equal {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            other => Err(self.unsupported(other)),
        }
    }
}

/// Whether the JSON number equals `raw` read as its type: an integer field reads `raw` as Go's
/// `strconv.ParseInt(raw, 0, 64)` does (sign, `0x`/`0o`/`0b`/leading-`0` bases, `_` separators),
/// a fractional one as a float. `None` if `raw` is not of that type.
fn number_equals(n: &Number, raw: &str) -> Option<bool> {
    if let Some(int) = n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)) {
        return parse_go_int(raw).map(|v| v == int);
    }
    let float = n.as_f64()?;
    raw.parse::<f64>().ok().map(|v| v == float)
}

fn parse_go_int(raw: &str) -> Option<i128> {
    let (negative, body) = match raw.as_bytes().first() {
        Some(b'-') => (true, raw.get(1..)?),
        Some(b'+') => (false, raw.get(1..)?),
        _ => (false, raw),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(rest) = lower.strip_prefix("0x") {
        (16, rest, true)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (8, rest, true)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (2, rest, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower.get(1..)?, true)
    } else {
        (10, lower.as_str(), false)
    };
    // `_` only between digits, or right after a base prefix.
    let mut after_digit = prefixed;
    let mut value: i128 = 0;
    let mut any_digit = false;
    for c in digits.chars() {
        if c == '_' {
            if !after_digit {
                return None;
            }
            after_digit = false;
            continue;
        }
        let digit = c.to_digit(radix)?;
        value = value
            .checked_mul(i128::from(radix))?
            .checked_add(i128::from(digit))?;
        after_digit = true;
        any_digit = true;
    }
    if !any_digit || !after_digit {
        return None;
    }
    let value = if negative { -value } else { value };
    // An int64 or uint64 field: nothing outside both ranges is a value of either.
    (i128::from(i64::MIN)..=i128::from(u64::MAX))
        .contains(&value)
        .then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(expr: &str, item: &Value) -> bool {
        Filter::parse(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .matches(item)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    fn parse_err(expr: &str) -> String {
        match Filter::parse(expr) {
            Ok(f) => panic!("{expr} parsed: {f:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn eval_err(expr: &str, item: &Value) -> FilterError {
        match Filter::parse(expr).expect("parses").matches(item) {
            Ok(b) => panic!("{expr} evaluated to {b}"),
            Err(e) => e,
        }
    }

    /// An element of `/v1/catalog/service/api`.
    fn catalog_service() -> Value {
        json!({
            "ID": "b4faf93a-5c7d-11e9-840d-8c8590bd0966",
            "Node": "node-2",
            "Address": "198.18.0.2",
            "Datacenter": "dc1",
            "TaggedAddresses": null,
            "NodeMeta": {"arch": "arm", "os": "linux", "rack key": "r1"},
            "ServiceKind": "",
            "ServiceID": "api-internal",
            "ServiceName": "api-internal",
            "ServiceTags": ["test", "tag"],
            "ServiceAddress": "",
            "ServiceWeights": {"Passing": 1, "Warning": 1},
            "ServiceMeta": {"environment": "production", "version": "1.4.2"},
            "ServicePort": 9090,
            "ServiceEnableTagOverride": false,
            "ServiceProxy": {},
            "ServiceConnect": {},
            "CreateIndex": 29,
            "ModifyIndex": 29
        })
    }

    /// An element of `/v1/health/service/web`.
    fn health_service() -> Value {
        json!({
            "Node": {
                "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
                "Node": "foobar",
                "Address": "10.1.10.12",
                "Datacenter": "dc1",
                "TaggedAddresses": {"lan": "10.1.10.12", "wan": "10.1.10.12"},
                "Meta": {"instance_type": "t2.medium", "rack": "r1"}
            },
            "Service": {
                "ID": "redis",
                "Service": "redis",
                "Tags": ["primary"],
                "Address": "10.1.10.12",
                "Meta": {"redis_version": "4.0"},
                "Port": 8000,
                "Weights": {"Passing": 10, "Warning": 1},
                "EnableTagOverride": false
            },
            "Checks": [
                {"Node": "foobar", "CheckID": "service:redis", "Name": "Service 'redis' check",
                 "Status": "passing", "ServiceID": "redis", "ServiceName": "redis",
                 "ServiceTags": ["primary"]},
                {"Node": "foobar", "CheckID": "serfHealth", "Name": "Serf Health Status",
                 "Status": "critical", "ServiceID": "", "ServiceName": "", "ServiceTags": []}
            ]
        })
    }

    /// A value of `/v1/agent/services`.
    fn agent_service(id: &str, tags: &[&str], env: &str, port: u16) -> Value {
        json!({
            "ID": id, "Service": "redis", "Tags": tags,
            "Meta": {"env": env}, "Port": port, "Address": "",
            "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false
        })
    }

    #[test]
    fn equality_on_strings_numbers_and_booleans() {
        let item = catalog_service();
        assert!(eval("ServiceID == \"api-internal\"", &item));
        assert!(
            Filter::parse("ServiceName == api-internal").is_err(),
            "a bare word has no hyphen"
        );
        assert!(eval("ServiceName == \"api-internal\"", &item));
        assert!(eval("ServiceName==`api-internal`", &item));
        assert!(!eval("ServiceName != \"api-internal\"", &item));
        assert!(eval("ServiceKind == \"\"", &item));
        assert!(eval("ServicePort == 9090", &item));
        assert!(eval("ServicePort == \"9090\"", &item));
        assert!(eval("ServicePort == \"0x2382\"", &item), "Go's base prefixes");
        assert!(eval("ServicePort != 80", &item));
        assert!(eval("ServiceEnableTagOverride == false", &item));
        assert!(
            eval("ServiceEnableTagOverride == F", &item),
            "Go's ParseBool spellings"
        );
        assert!(!eval("ServiceEnableTagOverride != false", &item));
        assert!(eval("ServiceWeights.Passing == 1", &item));
        assert!(
            eval("Datacenter == dc1", &item),
            "a bare word value is text, not a lookup"
        );
        assert!(!eval("ServiceMeta.environment == ServiceMeta.production", &item));
        let floats = json!({"Score": 1.5, "Neg": -3});
        assert!(eval("Score == 1.5", &floats));
        assert!(eval("Neg == -3", &floats));
        assert!(!eval("Score == 2", &floats));
    }

    #[test]
    fn values_that_do_not_fit_the_field_are_errors() {
        let item = catalog_service();
        assert!(matches!(
            eval_err("ServicePort == abc", &item),
            FilterError::Coerce {
                expected: "an integer",
                ..
            }
        ));
        assert!(matches!(
            eval_err("ServicePort == 80.5", &item),
            FilterError::Coerce { .. }
        ));
        assert!(matches!(
            eval_err("ServiceEnableTagOverride == yes", &item),
            FilterError::Coerce {
                expected: "a boolean",
                ..
            }
        ));
        assert_eq!(
            eval_err("ServicePort == abc", &item).to_string(),
            "Failed to coerce value \"abc\" for selector \"ServicePort\": it is not an integer"
        );
    }

    #[test]
    fn in_and_contains_on_lists_maps_and_strings() {
        let item = catalog_service();
        assert!(eval("ServiceTags contains test", &item));
        assert!(eval("\"tag\" in ServiceTags", &item));
        assert!(!eval("\"prod\" in ServiceTags", &item));
        assert!(eval("\"prod\" not in ServiceTags", &item));
        assert!(eval("ServiceTags not contains prod", &item));
        assert!(eval("\"os\" in NodeMeta", &item), "map key presence");
        assert!(!eval("linux in NodeMeta", &item), "values are not keys");
        assert!(eval("ServiceName contains internal", &item), "substring");
        assert!(eval("\"api\" in ServiceName", &item));
        assert!(eval("Passing in ServiceWeights", &item));
        let numbers = json!({"Ports": [80, 443], "Flags": [true]});
        assert!(eval("443 in Ports", &numbers));
        assert!(
            !eval("https in Ports", &numbers),
            "an unreadable value equals no element"
        );
        assert!(eval("true in Flags", &numbers));
        assert!(matches!(
            eval_err("80 in ServicePort", &item),
            FilterError::Operator { .. }
        ));
        assert!(matches!(
            eval_err("x in Checks", &health_service()),
            FilterError::Operator {
                kind: "a list of lists or objects",
                ..
            }
        ));
    }

    #[test]
    fn emptiness() {
        let item = catalog_service();
        assert!(eval("ServiceProxy is empty", &item));
        assert!(eval("ServiceMeta is not empty", &item));
        assert!(eval("ServiceTags is not empty", &item));
        assert!(eval("ServiceKind is empty", &item));
        assert!(eval(
            "ServiceAddress is empty and ServiceName is not empty",
            &item
        ));
        assert!(
            eval("TaggedAddresses is empty", &item),
            "null is absent, and absent is empty"
        );
        assert!(eval("NoSuchField is empty", &item));
        assert!(!eval("NoSuchField is not empty", &item));
        assert!(matches!(
            eval_err("ServicePort is empty", &item),
            FilterError::Operator { .. }
        ));
    }

    #[test]
    fn regular_expressions() {
        let item = catalog_service();
        assert!(eval(r#"ServiceMeta.version matches "^1\\.""#, &item));
        assert!(
            Filter::parse(r#"ServiceMeta.version matches "^1\.""#).is_err(),
            "Go has no \\. escape"
        );
        assert!(eval(r"ServiceMeta.version matches `^1\.\d+\.\d+$`", &item));
        assert!(!eval(r"ServiceMeta.version matches `^2\.`", &item));
        assert!(eval(r"ServiceMeta.version not matches `^2\.`", &item));
        assert!(eval("Node matches node", &item));
        assert!(
            !eval("ServiceMeta.missing matches \".*\"", &item),
            "nothing matches an absent value"
        );
        assert!(eval("ServiceMeta.missing not matches \".*\"", &item));
        assert!(matches!(
            eval_err("ServicePort matches \"9\"", &item),
            FilterError::Operator { .. }
        ));
        let err = Filter::parse("Node matches \"(\"").expect_err("bad regex");
        assert!(matches!(&err, FilterError::Regex { pattern, .. } if pattern == "("));
        assert!(
            err.to_string()
                .starts_with("Failed to compile regular expression \"(\": ")
        );
    }

    #[test]
    fn map_indexing_and_absent_keys() {
        let item = catalog_service();
        assert!(eval("NodeMeta[\"os\"] == linux", &item));
        assert!(eval("NodeMeta[ `os` ] == linux", &item));
        assert!(eval("NodeMeta.os == linux", &item));
        assert!(eval("NodeMeta[\"rack key\"] == r1", &item));
        assert!(!eval("NodeMeta[\"nope\"] == r1", &item));
        assert!(eval("NodeMeta[\"nope\"] != r1", &item));
        assert!(!eval("\"a\" in NodeMeta.nope", &item));
        assert!(eval("\"a\" not in NodeMeta.nope", &item));
        assert!(!eval("TaggedAddresses.lan == x", &item), "selecting through null");
        assert!(
            !eval("servicename == `api-internal`", &item),
            "field names are case-sensitive"
        );
        let err = eval_err("ServicePort.Value == 1", &item);
        assert_eq!(
            err.to_string(),
            "Selector \"ServicePort.Value\" is not valid: \"ServicePort\" is a number, which has no fields"
        );
    }

    #[test]
    fn lists_in_the_middle_of_a_selector_are_any() {
        let item = health_service();
        assert!(eval("Checks.Status == passing", &item));
        assert!(eval("Checks.Status == critical", &item));
        assert!(!eval("Checks.Status == warning", &item));
        assert!(
            eval("Checks.Status != passing", &item),
            "some check is not passing"
        );
        assert!(!eval("not Checks.Status == critical", &item));
        assert!(eval("Checks.ServiceTags contains primary", &item));
        assert!(
            eval("Checks.ServiceTags is empty", &item),
            "the serf check has none"
        );
        let none = json!({"Checks": []});
        for expr in [
            "Checks.Status == passing",
            "Checks.Status != passing",
            "Checks.Status is empty",
        ] {
            assert!(
                !eval(expr, &none),
                "{expr}: an empty list has no element to match"
            );
        }
    }

    #[test]
    fn precedence_parentheses_and_not() {
        let item = json!({"a": 1, "b": 0, "c": 0});
        assert!(
            eval("a == 1 or b == 1 and c == 1", &item),
            "and binds tighter than or"
        );
        assert!(!eval("(a == 1 or b == 1) and c == 1", &item));
        assert!(eval("a == 1 and not b == 1 or c == 1", &item));
        assert!(eval("not a == 0", &item));
        assert!(eval("not not a == 1", &item));
        assert!(!eval("not not not a == 1", &item));
        assert!(eval("not (a == 0 or b == 1)", &item));
        assert!(eval("( ( a == 1 ) )", &item));
        assert!(eval("(a == 1) and (b == 0)", &item));
        assert!(eval("a == 1 and b == 0 and c == 0 and not c == 1", &item));
        assert!(eval("\n\ta == 1\r\n", &item));
    }

    #[test]
    fn keywords_are_also_selectors() {
        let item = json!({"not": "x", "and": "", "in": ["a"], "notes": "n", "order": 1});
        assert!(eval("not == x", &item));
        assert!(eval("not not == y", &item));
        assert!(eval("notes == n", &item));
        assert!(eval("and is empty", &item));
        assert!(eval("a in in", &item));
        assert!(eval("order == 1 or order == 2", &item));
    }

    #[test]
    fn string_escapes() {
        let item = json!({"s": "a\"b", "t": "tab\there", "u": "é", "raw": "a\\nb", "nl": "x\ny"});
        assert!(eval(r#"t == "tab\there""#, &item));
        assert!(eval(r#"u == "\u00e9""#, &item));
        assert!(eval(r#"u == "\xc3\xa9""#, &item), "byte escapes forming UTF-8");
        assert!(eval(r#"u == "\303\251""#, &item), "octal byte escapes");
        assert!(eval(r"raw == `a\nb`", &item), "backticks do not expand escapes");
        assert!(eval(r#"nl == "x\ny""#, &item));
        assert!(eval("nl == `x\ny`", &item), "raw strings may hold newlines");
        assert!(
            eval("s contains `\"`", &item),
            "a double quote is written in backticks"
        );
        let err = parse_err(r#"s == "\q""#);
        assert_eq!(
            err,
            "1:6 (5): rule \"string\": Invalid string literal: unknown escape sequence \\q"
        );
        assert!(
            parse_err(r#"s == "a\""#).contains("lone backslash"),
            "the string ends at the quote"
        );
        assert!(parse_err(r#"s == "\xff""#).contains("not UTF-8"));
        assert!(parse_err(r#"s == "\400""#).contains("exceeds 377"));
        assert!(parse_err("s == \"a\nb\"").contains("newline"));
    }

    #[test]
    fn syntax_errors_carry_positions() {
        // The positions and messages go-bexpr's own grammar tests give for these inputs.
        assert_eq!(
            parse_err("foo == \"12x"),
            "1:12 (11): rule \"string\": Unterminated string literal"
        );
        assert_eq!(
            parse_err("foo == `12x"),
            "1:12 (11): rule \"string\": Unterminated string literal"
        );
        assert_eq!(
            parse_err("foo == 3x"),
            "1:9 (8): rule \"number\": Invalid number literal"
        );
        assert_eq!(
            parse_err("foo[3] == abc"),
            "1:5 (4): rule \"index\": Invalid index"
        );
        assert_eq!(
            parse_err("x in foo[\"abc\""),
            "1:15 (14): rule \"index\": Unclosed index expression"
        );
        assert_eq!(
            parse_err("foo[\"abc\" == 3"),
            "1:11 (10): rule \"index\": Unclosed index expression"
        );
        assert_eq!(parse_err("x in 32"), "1:6 (5): rule \"match\": Invalid selector");
        assert_eq!(
            parse_err("(foo == 4"),
            "1:10 (9): rule \"grouping\": Unmatched parentheses"
        );
        assert_eq!(
            parse_err("x in foo and "),
            "1:14 (13): no match found, expected: \"(\", \"not\", a number, a selector or a string"
        );
        assert_eq!(
            parse_err("x in foo or not "),
            "1:17 (16): no match found, expected: \"!=\", \"(\", \"==\", \"contains\", \"in\", \"is\", \
             \"matches\", \"not\", a number, a selector or a string"
        );
        assert_eq!(
            parse_err("a == 1 b"),
            "1:8 (7): no match found, expected: \"and\", \"or\" or end of input"
        );
        assert_eq!(
            parse_err("a ==\n  1x"),
            "2:4 (8): rule \"number\": Invalid number literal"
        );
        assert!(parse_err("").starts_with("1:1 (0): no match found"));
        assert!(parse_err("   ").starts_with("1:4 (3): no match found"));
        assert!(parse_err("a").contains("\"==\""));
        assert!(parse_err("a == 01").contains("Invalid number literal"));
        assert!(parse_err("a == 1.").contains("Invalid number literal"));
        assert!(
            parse_err("a is").starts_with("1:5 (4)"),
            "after `is`, `empty` or `not`"
        );
        assert!(
            parse_err("not(a == 1)").starts_with("1:4 (3)"),
            "not needs whitespace after it"
        );
        assert!(parse_err("(a == 1)and(b == 1)").starts_with("1:9 (8)"));
        assert!(parse_err("a < 3").starts_with("1:3 (2)"), "no ordering operators");
        assert!(parse_err("a contains\"x\"").starts_with("1:11 (10): no match found, expected: whitespace"));
        assert!(
            parse_err("\"/a/b\" == 1").starts_with("1:8 (7)"),
            "no JSON-pointer selectors"
        );
        assert!(parse_err("a is nil").starts_with("1:6 (5)"), "no is nil");
        let deep = format!(
            "{}a == 1{}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert!(parse_err(&deep).contains("nest deeper"));
        let ok = format!("{}a == 1{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert!(eval(&ok, &json!({"a": 1})));
    }

    #[test]
    fn long_chains_parse_without_deep_recursion() {
        let chain = vec!["a == 1"; 20_000].join(" and ");
        assert!(eval(&chain, &json!({"a": 1})));
        let nots = format!("{}a == 1", "not ".repeat(20_001));
        assert!(!eval(&nots, &json!({"a": 1})));
    }

    #[test]
    fn go_integer_syntax() {
        assert_eq!(parse_go_int("42"), Some(42));
        assert_eq!(parse_go_int("-42"), Some(-42));
        assert_eq!(parse_go_int("+7"), Some(7));
        assert_eq!(parse_go_int("0x1F"), Some(31));
        assert_eq!(parse_go_int("0o17"), Some(15));
        assert_eq!(parse_go_int("017"), Some(15));
        assert_eq!(parse_go_int("0b101"), Some(5));
        assert_eq!(parse_go_int("1_000"), Some(1000));
        assert_eq!(parse_go_int("0x_1f"), Some(31));
        assert_eq!(parse_go_int("0"), Some(0));
        assert_eq!(parse_go_int("18446744073709551615"), Some(i128::from(u64::MAX)));
        for bad in [
            "",
            "-",
            "0x",
            "08",
            "1__0",
            "_1",
            "1_",
            "1.0",
            "abc",
            "18446744073709551616",
        ] {
            assert_eq!(parse_go_int(bad), None, "{bad}");
        }
    }

    #[test]
    fn consul_examples() {
        // The docs' agent example: Meta.env == "qa" over /v1/agent/services.
        let mut services = Map::new();
        services.insert(
            "redis1".into(),
            agent_service("redis1", &["primary", "production"], "production", 1234),
        );
        services.insert(
            "redis2".into(),
            agent_service("redis2", &["secondary", "production"], "production", 1235),
        );
        services.insert(
            "redis3".into(),
            agent_service("redis3", &["primary", "qa"], "qa", 1234),
        );
        let kept = apply_map(Some("Meta.env == \"qa\""), services.clone()).expect("filter");
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["redis3"]);
        let kept =
            apply_map(Some("Tags contains primary and Port == 1234"), services.clone()).expect("filter");
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["redis1", "redis3"]);
        assert_eq!(apply_map(None, services.clone()).expect("no filter").len(), 3);
        assert_eq!(apply_map(Some(""), services).expect("empty filter").len(), 3);

        // The docs' catalog example: NodeMeta.os == "linux".
        let mut other = catalog_service();
        other["NodeMeta"]["os"] = json!("freebsd");
        other["ServiceTags"] = json!([]);
        let items = vec![catalog_service(), other];
        assert_eq!(
            apply(Some("NodeMeta.os == \"linux\""), items.clone())
                .expect("filter")
                .len(),
            1
        );
        assert_eq!(
            apply(Some("ServiceTags is empty"), items.clone()).expect("filter")[0]["NodeMeta"]["os"],
            "freebsd"
        );
        assert_eq!(apply(None, items.clone()).expect("no filter"), items);

        // Health: a service tagged primary on rack r1 with some failing check.
        let health = health_service();
        let expr = "Service.Tags contains \"primary\" and Node.Meta[\"rack\"] == \"r1\" and Checks.Status != passing";
        assert!(eval(expr, &health));
        assert!(eval(
            "Service.Port == 8000 and Service.Weights.Passing == 10",
            &health
        ));
        assert!(eval("Node.TaggedAddresses.wan == \"10.1.10.12\"", &health));
        assert!(eval("Service.Meta.redis_version matches `^4\\.`", &health));
        assert!(!eval("Service.EnableTagOverride == true", &health));

        // /v1/health/node example: ServiceName != "".
        let checks = health["Checks"].as_array().cloned().unwrap_or_default();
        let kept = apply(Some("ServiceName != \"\""), checks).expect("filter");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0]["CheckID"], "service:redis");
    }

    #[test]
    fn errors_in_apply_are_the_clients() {
        let err = apply(Some("Port =="), vec![json!({})]).expect_err("bad filter");
        assert!(
            format!("{CONSUL_ERROR_PREFIX}{err}")
                .starts_with("Failed to create boolean expression evaluator: 1:8 (7): ")
        );
        assert!(apply(Some("Port == x"), vec![json!({"Port": 1})]).is_err());
        assert!(
            apply(Some("Port == x"), vec![])
                .expect("nothing to evaluate")
                .is_empty()
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                (-3i64..3).prop_map(Value::from),
                prop::sample::select(vec!["", "a", "b", "ab"]).prop_map(Value::from),
            ]
        }

        fn item() -> impl Strategy<Value = Value> {
            leaf().prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), inner, 0..3)
                        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
                ]
            })
        }

        fn expression() -> impl Strategy<Value = String> {
            let selector = prop::sample::select(vec!["a", "b", "a.b", "a.c", "b[\"a\"]", "c.a.b"]);
            let value = prop::sample::select(vec!["a", "\"\"", "1", "-1", "true", "`ab`"]);
            let matcher = (selector, value, 0..8usize).prop_map(|(s, v, op)| match op {
                0 => format!("{s} == {v}"),
                1 => format!("{s} != {v}"),
                2 => format!("{v} in {s}"),
                3 => format!("{s} not contains {v}"),
                4 => format!("{s} is empty"),
                5 => format!("{s} is not empty"),
                6 => format!("{s} matches \"^a\""),
                _ => format!("{s} not matches b"),
            });
            matcher.prop_recursive(3, 12, 3, |inner| {
                prop_oneof![
                    (inner.clone(), inner.clone()).prop_map(|(l, r)| format!("{l} and {r}")),
                    (inner.clone(), inner.clone()).prop_map(|(l, r)| format!("{l} or {r}")),
                    inner.clone().prop_map(|e| format!("not {e}")),
                    inner.prop_map(|e| format!("({e})")),
                ]
            })
        }

        proptest! {
            #[test]
            fn not_negates(expr in expression(), item in item()) {
                let plain = Filter::parse(&expr).expect("generated expressions parse");
                let negated = Filter::parse(&format!("not ({expr})")).expect("parses");
                match (plain.matches(&item), negated.matches(&item)) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a, !b),
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
                }
            }

            #[test]
            fn parsing_never_panics(text in "[a-z()\"`\\[\\] .=!\\\\0-9-]{0,40}") {
                let _ = Filter::parse(&text);
            }
        }
    }
}
