//! Subscription filters: a small boolean language over a message's headers.
//!
//! ```text
//! expr       := or
//! or         := and ("||" and)*
//! and        := unary ("&&" unary)*
//! unary      := "!" unary | primary
//! primary    := "(" expr ")" | "exists(" name ")" | name op literal | name
//! op         := "==" | "!=" | "<" | "<=" | ">" | ">=" | "~"      (~ : contains)
//! literal    := number | "double-quoted" | 'single-quoted' | bare-word
//! name       := [A-Za-z_][A-Za-z0-9_.-]*
//! ```
//!
//! A bare `name` means `exists(name)`. A comparison is numeric when both the header value
//! and the literal parse as numbers, textual otherwise; a comparison with a missing header is
//! false (so `!(region == "eu")` matches messages without a region, and `region != "eu"` does
//! not). Examples: `priority >= 3 && region == eu`, `!exists(test) || kind ~ "alert"`.
//!
//! Expressions come from users: every error says where and what, and the size (1,024
//! bytes) and nesting (32 levels) are bounded so a filter cannot exhaust the agent.

use std::collections::BTreeMap;
use std::fmt;

/// Longest accepted expression, in bytes.
pub const MAX_LEN: usize = 1024;
/// Deepest accepted nesting of parentheses and negations.
pub const MAX_DEPTH: usize = 32;

/// A parsed filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    expr: Expr,
    source: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Exists(String),
    Cmp(String, Op, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
}

/// A filter that does not parse: where and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("filter error at byte {at}: {what}")]
pub struct FilterError {
    /// Byte offset in the expression.
    pub at: usize,
    /// What was wrong.
    pub what: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Name(String),
    Lit(String),
    Op(Op),
    And,
    Or,
    Not,
    Open,
    Close,
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, FilterError> {
    let err = |at: usize, what: &str| FilterError { at, what: what.to_string() };
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push((start, Tok::Open));
                i += 1;
            }
            b')' => {
                out.push((start, Tok::Close));
                i += 1;
            }
            b'&' | b'|' => {
                if b.get(i + 1) != Some(&c) {
                    return Err(err(i, if c == b'&' { "expected `&&`" } else { "expected `||`" }));
                }
                out.push((start, if c == b'&' { Tok::And } else { Tok::Or }));
                i += 2;
            }
            b'!' if b.get(i + 1) == Some(&b'=') => {
                out.push((start, Tok::Op(Op::Ne)));
                i += 2;
            }
            b'!' => {
                out.push((start, Tok::Not));
                i += 1;
            }
            b'=' => {
                if b.get(i + 1) != Some(&b'=') {
                    return Err(err(i, "expected `==`"));
                }
                out.push((start, Tok::Op(Op::Eq)));
                i += 2;
            }
            b'<' | b'>' => {
                let eq = b.get(i + 1) == Some(&b'=');
                let op = match (c, eq) {
                    (b'<', false) => Op::Lt,
                    (b'<', true) => Op::Le,
                    (_, false) => Op::Gt,
                    (_, true) => Op::Ge,
                };
                out.push((start, Tok::Op(op)));
                i += 1 + usize::from(eq);
            }
            b'~' => {
                out.push((start, Tok::Op(Op::Contains)));
                i += 1;
            }
            b'"' | b'\'' => {
                let close = src[i + 1..].find(c as char).ok_or_else(|| err(i, "unterminated string"))?;
                out.push((start, Tok::Lit(src[i + 1..i + 1 + close].to_string())));
                i += close + 2;
            }
            _ => {
                let word_end = src[i..]
                    .find(|ch: char| ch.is_whitespace() || "()&|!=<>~\"'".contains(ch))
                    .map_or(src.len(), |k| i + k);
                if word_end == i {
                    return Err(err(i, "unexpected character"));
                }
                out.push((start, Tok::Name(src[i..word_end].to_string())));
                i = word_end;
            }
        }
    }
    Ok(out)
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
}

impl Parser {
    fn err(&self, what: impl Into<String>) -> FilterError {
        let at = self.toks.get(self.pos).map_or(self.end, |t| t.0);
        FilterError { at, what: what.into() }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.1)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.1.clone());
        self.pos += 1;
        t
    }

    fn or(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut parts = vec![self.and(depth)?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            parts.push(self.and(depth)?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Expr::Or(parts) })
    }

    fn and(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut parts = vec![self.unary(depth)?];
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            parts.push(self.unary(depth)?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Expr::And(parts) })
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, FilterError> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        match self.peek() {
            Some(Tok::Not) => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Tok::Open) => {
                self.pos += 1;
                let e = self.or(depth + 1)?;
                if self.next() != Some(Tok::Close) {
                    self.pos -= 1;
                    return Err(self.err("expected `)`"));
                }
                Ok(e)
            }
            Some(Tok::Name(_)) => self.comparison(),
            Some(_) => Err(self.err("expected a header name, `!` or `(`")),
            None => Err(self.err("unexpected end of filter")),
        }
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let Some(Tok::Name(name)) = self.next() else { unreachable!("peeked a name") };
        if name == "exists" && self.peek() == Some(&Tok::Open) {
            self.pos += 1;
            let Some(Tok::Name(arg)) = self.next() else {
                self.pos -= 1;
                return Err(self.err("expected a header name inside exists(...)"));
            };
            if !valid_name(&arg) {
                self.pos -= 1;
                return Err(self.err(format!("`{arg}` is not a header name")));
            }
            if self.next() != Some(Tok::Close) {
                self.pos -= 1;
                return Err(self.err("expected `)` after exists(name"));
            }
            return Ok(Expr::Exists(arg));
        }
        if !valid_name(&name) {
            self.pos -= 1;
            return Err(self.err(format!("`{name}` is not a header name")));
        }
        let Some(Tok::Op(op)) = self.peek().cloned() else { return Ok(Expr::Exists(name)) };
        self.pos += 1;
        match self.next() {
            Some(Tok::Lit(v) | Tok::Name(v)) => Ok(Expr::Cmp(name, op, v)),
            _ => {
                self.pos -= 1;
                Err(self.err("expected a value after the comparison"))
            }
        }
    }
}

impl Filter {
    /// Parse an expression.
    pub fn parse(src: &str) -> Result<Filter, FilterError> {
        if src.len() > MAX_LEN {
            return Err(FilterError { at: MAX_LEN, what: format!("longer than {MAX_LEN} bytes") });
        }
        let toks = lex(src)?;
        let mut p = Parser { toks, pos: 0, end: src.len() };
        let expr = p.or(0)?;
        if p.pos < p.toks.len() {
            return Err(p.err("unexpected token after the end of the expression"));
        }
        Ok(Filter { expr, source: src.to_string() })
    }

    /// True when a message with these headers passes.
    pub fn matches(&self, headers: &BTreeMap<String, String>) -> bool {
        eval(&self.expr, headers)
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn eval(e: &Expr, h: &BTreeMap<String, String>) -> bool {
    match e {
        Expr::Or(parts) => parts.iter().any(|p| eval(p, h)),
        Expr::And(parts) => parts.iter().all(|p| eval(p, h)),
        Expr::Not(inner) => !eval(inner, h),
        Expr::Exists(name) => h.contains_key(name),
        Expr::Cmp(name, op, lit) => {
            let Some(value) = h.get(name) else { return false };
            if *op == Op::Contains {
                return value.contains(lit.as_str());
            }
            let ord = match (value.trim().parse::<f64>(), lit.parse::<f64>()) {
                (Ok(a), Ok(b)) => a.partial_cmp(&b),
                _ => Some(value.as_str().cmp(lit.as_str())),
            };
            let Some(ord) = ord else { return false };
            use std::cmp::Ordering::*;
            match op {
                Op::Eq => ord == Equal,
                Op::Ne => ord != Equal,
                Op::Lt => ord == Less,
                Op::Le => ord != Greater,
                Op::Gt => ord == Greater,
                Op::Ge => ord != Less,
                Op::Contains => unreachable!("handled above"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn evaluates_the_documented_examples() {
        let f = Filter::parse("priority >= 3 && region == eu").unwrap();
        assert!(f.matches(&h(&[("priority", "5"), ("region", "eu")])));
        assert!(!f.matches(&h(&[("priority", "10"), ("region", "us")])));
        assert!(!f.matches(&h(&[("priority", "2"), ("region", "eu")])));
        // Numeric, not textual: "10" > "3".
        assert!(Filter::parse("priority > 3").unwrap().matches(&h(&[("priority", "10")])));
        let g = Filter::parse("!exists(test) || kind ~ \"alert\"").unwrap();
        assert!(g.matches(&h(&[])));
        assert!(g.matches(&h(&[("test", "1"), ("kind", "red alert")])));
        assert!(!g.matches(&h(&[("test", "1"), ("kind", "info")])));
    }

    #[test]
    fn missing_headers_make_comparisons_false() {
        assert!(!Filter::parse("region != eu").unwrap().matches(&h(&[])));
        assert!(Filter::parse("!(region == eu)").unwrap().matches(&h(&[])));
        assert!(Filter::parse("region").unwrap().matches(&h(&[("region", "")])));
    }

    #[test]
    fn precedence_and_parentheses() {
        let f = Filter::parse("a || b && c").unwrap();
        assert!(f.matches(&h(&[("a", "1")])));
        assert!(!f.matches(&h(&[("b", "1")])));
        let g = Filter::parse("(a || b) && c").unwrap();
        assert!(!g.matches(&h(&[("a", "1")])));
        assert!(g.matches(&h(&[("b", "1"), ("c", "1")])));
        assert!(Filter::parse("'x y' == 'x y'").is_err(), "a quoted string is not a header name");
    }

    #[test]
    fn errors_say_where() {
        let cases = [
            ("", 0, "end"),
            ("a &", 2, "&&"),
            ("a == ", 5, "value"),
            ("(a", 2, ")"),
            ("a b", 2, "after the end"),
            ("x = 1", 2, "=="),
            ("name == \"open", 8, "unterminated"),
            ("exists(1x)", 7, "header name"),
            ("a && || b", 5, "header name"),
        ];
        for (src, at, says) in cases {
            let e = Filter::parse(src).unwrap_err();
            assert_eq!(e.at, at, "{src}: {e}");
            assert!(e.what.contains(says), "{src}: {e}");
        }
    }

    #[test]
    fn size_and_depth_are_bounded() {
        assert!(Filter::parse(&"a".repeat(MAX_LEN + 1)).is_err());
        let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        assert!(Filter::parse(&deep).unwrap_err().what.contains("nested"));
        let nots = format!("{}a", "!".repeat(40));
        assert!(Filter::parse(&nots).is_err());
        assert!(Filter::parse(&format!("{}a{}", "(".repeat(10), ")".repeat(10))).is_ok());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_input_parses_or_errors_without_panicking(src in ".{0,200}") {
            if let Ok(f) = Filter::parse(&src) {
                let _ = f.matches(&BTreeMap::new());
            }
        }

        #[test]
        fn operator_soup_never_panics(src in "[a-c()!&|=<>~'\" 0-9]{0,80}") {
            let _ = Filter::parse(&src);
        }
    }
}
