//! The SOQL subset the sync engine's poller uses: a field list, `FROM` one object, `WHERE` with
//! comparisons (`= != <> < <= > >= LIKE IN NOT IN`), `AND`/`OR`/`NOT` and parentheses, `ORDER BY`
//! one or more fields (`ASC`/`DESC`, `NULLS FIRST|LAST`), `LIMIT` and `OFFSET`.
//!
//! Errors carry Salesforce's message layout (the query line, a caret, `ERROR at Row:R:Column:C`
//! and the reason) and its error codes: `MALFORMED_QUERY`, `INVALID_FIELD`, `INVALID_TYPE`.

use std::cmp::Ordering;

use super::ids;
use super::org::{Org, RecordRef};
use super::schema::{FieldDef, FieldType, Storage};
use super::values::{self, Val};

#[derive(Debug, Clone, PartialEq)]
pub struct SoqlError {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Lit(String),
    Op(&'static str),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Str(String),
    /// An unquoted number, date or datetime, as written.
    Bare(String),
}

#[derive(Debug, Clone)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp {
        field: String,
        pos: usize,
        op: &'static str,
        value: Literal,
        value_pos: usize,
    },
    In {
        field: String,
        pos: usize,
        negated: bool,
        values: Vec<(Literal, usize)>,
    },
}

#[derive(Debug, Clone)]
pub struct OrderKey {
    pub field: String,
    pub pos: usize,
    pub desc: bool,
    pub nulls_last: bool,
}

/// A parsed query, before its names are checked against the org.
#[derive(Debug, Clone)]
pub struct Query {
    pub fields: Vec<(String, usize)>,
    pub object: String,
    pub object_pos: usize,
    pub filter: Option<Expr>,
    pub order: Vec<OrderKey>,
    pub limit: Option<usize>,
    pub offset: usize,
}

struct Ctx<'a> {
    text: &'a str,
}

impl Ctx<'_> {
    fn error(&self, code: &'static str, pos: usize, reason: &str) -> SoqlError {
        // Salesforce echoes the offending line with a caret under the column (1-based).
        let before = self.text.get(..pos).unwrap_or(self.text);
        let row = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before.len() - line_start + 1;
        let line = self.text[line_start..].lines().next().unwrap_or("");
        SoqlError {
            code,
            message: format!(
                "\n{line}\n{}^\nERROR at Row:{row}:Column:{col}\n{reason}",
                " ".repeat(col - 1)
            ),
        }
    }
    fn malformed(&self, pos: usize, reason: &str) -> SoqlError {
        self.error("MALFORMED_QUERY", pos, reason)
    }
}

fn lex(text: &str, ctx: &Ctx<'_>) -> Result<Vec<Token>, SoqlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'\'' {
            i += 1;
            let mut s = String::new();
            loop {
                match text[i..].chars().next() {
                    None => return Err(ctx.malformed(start, "unexpected token: '''")),
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let next = text[i + 1..].chars().next();
                        let Some(n) = next else {
                            return Err(ctx.malformed(i, "Invalid string literal"));
                        };
                        s.push(match n {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                        i += 1 + n.len_utf8();
                    }
                    Some(ch) => {
                        s.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            out.push(Token {
                tok: Tok::Str(s),
                pos: start,
            });
            continue;
        }
        if c.is_ascii_digit() || (c == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            i += 1;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || matches!(bytes[i], b':' | b'.' | b'-' | b'+'))
            {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Lit(text[start..i].to_string()),
                pos: start,
            });
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'.'))
            {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Word(text[start..i].to_string()),
                pos: start,
            });
            continue;
        }
        let two = text.get(i..i + 2).unwrap_or("");
        let op = match two {
            "!=" => Some("!="),
            "<>" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            _ => None,
        };
        if let Some(op) = op {
            out.push(Token {
                tok: Tok::Op(op),
                pos: start,
            });
            i += 2;
            continue;
        }
        let op = match c {
            b'=' => "=",
            b'<' => "<",
            b'>' => ">",
            b'(' => "(",
            b')' => ")",
            b',' => ",",
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(ctx.malformed(start, &format!("unexpected token: '{ch}'")));
            }
        };
        out.push(Token {
            tok: Tok::Op(op),
            pos: start,
        });
        i += 1;
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Token>,
    at: usize,
    ctx: &'a Ctx<'a>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.at)
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Word(w), .. }) if w.eq_ignore_ascii_case(kw))
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        let yes = self.is_kw(kw);
        if yes {
            self.at += 1;
        }
        yes
    }
    fn unexpected(&self) -> SoqlError {
        match self.peek() {
            None => self
                .ctx
                .malformed(self.ctx.text.len(), "unexpected token: '<EOF>'"),
            Some(t) => {
                let shown = match &t.tok {
                    Tok::Word(w) | Tok::Lit(w) => w.clone(),
                    Tok::Str(s) => format!("'{s}'"),
                    Tok::Op(o) => (*o).to_string(),
                };
                self.ctx
                    .malformed(t.pos, &format!("unexpected token: '{shown}'"))
            }
        }
    }
    fn expect_kw(&mut self, kw: &str) -> Result<(), SoqlError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }
    fn eat_op(&mut self, op: &str) -> bool {
        let yes = matches!(self.peek(), Some(Token { tok: Tok::Op(o), .. }) if *o == op);
        if yes {
            self.at += 1;
        }
        yes
    }
    fn ident(&mut self) -> Result<(String, usize), SoqlError> {
        match self.peek() {
            Some(Token {
                tok: Tok::Word(w),
                pos,
            }) if !is_reserved(w) => {
                let out = (w.clone(), *pos);
                self.at += 1;
                Ok(out)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn query(&mut self) -> Result<Query, SoqlError> {
        self.expect_kw("SELECT")?;
        let mut fields = vec![self.ident()?];
        while self.eat_op(",") {
            fields.push(self.ident()?);
        }
        self.expect_kw("FROM")?;
        let (object, object_pos) = self.ident()?;
        let filter = if self.eat_kw("WHERE") {
            Some(self.or()?)
        } else {
            None
        };
        let mut order = Vec::new();
        if self.eat_kw("ORDER") {
            self.expect_kw("BY")?;
            loop {
                let (field, pos) = self.ident()?;
                let desc = if self.eat_kw("DESC") {
                    true
                } else {
                    self.eat_kw("ASC");
                    false
                };
                let mut nulls_last = desc;
                if self.eat_kw("NULLS") {
                    if self.eat_kw("LAST") {
                        nulls_last = true;
                    } else {
                        self.expect_kw("FIRST")?;
                        nulls_last = false;
                    }
                }
                order.push(OrderKey {
                    field,
                    pos,
                    desc,
                    nulls_last,
                });
                if !self.eat_op(",") {
                    break;
                }
            }
        }
        let limit = if self.eat_kw("LIMIT") {
            Some(self.count()?)
        } else {
            None
        };
        let offset = if self.eat_kw("OFFSET") {
            self.count()?
        } else {
            0
        };
        if self.peek().is_some() {
            return Err(self.unexpected());
        }
        Ok(Query {
            fields,
            object,
            object_pos,
            filter,
            order,
            limit,
            offset,
        })
    }

    fn count(&mut self) -> Result<usize, SoqlError> {
        match self.peek() {
            Some(Token {
                tok: Tok::Lit(n), ..
            }) => match n.parse::<usize>() {
                Ok(v) => {
                    self.at += 1;
                    Ok(v)
                }
                Err(_) => Err(self.unexpected()),
            },
            _ => Err(self.unexpected()),
        }
    }

    fn or(&mut self) -> Result<Expr, SoqlError> {
        let mut left = self.and()?;
        while self.eat_kw("OR") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, SoqlError> {
        let mut left = self.unary()?;
        while self.eat_kw("AND") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, SoqlError> {
        if self.eat_kw("NOT") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat_op("(") {
            let e = self.or()?;
            if !self.eat_op(")") {
                return Err(self.unexpected());
            }
            return Ok(e);
        }
        let (field, pos) = self.ident()?;
        let negated = self.eat_kw("NOT");
        if self.eat_kw("IN") {
            if !self.eat_op("(") {
                return Err(self.unexpected());
            }
            let mut values = vec![self.literal()?];
            while self.eat_op(",") {
                values.push(self.literal()?);
            }
            if !self.eat_op(")") {
                return Err(self.unexpected());
            }
            return Ok(Expr::In {
                field,
                pos,
                negated,
                values,
            });
        }
        if negated {
            return Err(self.unexpected());
        }
        let op = if self.eat_kw("LIKE") {
            "LIKE"
        } else {
            match self.peek() {
                Some(Token {
                    tok: Tok::Op(o), ..
                }) if matches!(*o, "=" | "!=" | "<" | "<=" | ">" | ">=") => {
                    let o = *o;
                    self.at += 1;
                    o
                }
                _ => return Err(self.unexpected()),
            }
        };
        let (value, value_pos) = self.literal()?;
        Ok(Expr::Cmp {
            field,
            pos,
            op,
            value,
            value_pos,
        })
    }

    fn literal(&mut self) -> Result<(Literal, usize), SoqlError> {
        let Some(t) = self.peek().cloned() else {
            return Err(self.unexpected());
        };
        let lit = match t.tok {
            Tok::Str(s) => Literal::Str(s),
            Tok::Lit(s) => Literal::Bare(s),
            Tok::Word(w) if w.eq_ignore_ascii_case("null") => Literal::Null,
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
            _ => return Err(self.unexpected()),
        };
        self.at += 1;
        Ok((lit, t.pos))
    }
}

fn is_reserved(w: &str) -> bool {
    const RESERVED: &[&str] = &[
        "select", "from", "where", "and", "or", "not", "in", "order", "by", "asc", "desc", "nulls",
        "limit", "offset", "like", "null", "true", "false",
    ];
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(w))
}

/// Parses a query (names are not checked yet).
pub fn parse(text: &str) -> Result<Query, SoqlError> {
    let ctx = Ctx { text };
    let toks = lex(text, &ctx)?;
    let mut p = Parser {
        toks,
        at: 0,
        ctx: &ctx,
    };
    p.query()
}

/// A query checked against the org: field indexes and typed values.
#[derive(Debug)]
pub struct Bound {
    pub table: usize,
    pub fields: Vec<usize>,
    filter: Option<BExpr>,
    order: Vec<(usize, bool, bool)>,
    limit: Option<usize>,
    offset: usize,
}

#[derive(Debug)]
enum BExpr {
    And(Box<BExpr>, Box<BExpr>),
    Or(Box<BExpr>, Box<BExpr>),
    Not(Box<BExpr>),
    Cmp {
        field: usize,
        op: &'static str,
        value: Val,
    },
    In {
        field: usize,
        negated: bool,
        values: Vec<Val>,
    },
}

/// Parses and binds a query to the org.
pub fn prepare(text: &str, org: &Org) -> Result<Bound, SoqlError> {
    let q = parse(text)?;
    let ctx = Ctx { text };
    let Some(table) = org.table_index(&q.object) else {
        return Err(ctx.error(
            "INVALID_TYPE",
            q.object_pos,
            &format!(
                "sObject type '{}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.",
                q.object
            ),
        ));
    };
    let def = org
        .def(table)
        .map(std::sync::Arc::clone)
        .ok_or_else(|| ctx.malformed(0, "no such object"))?;
    let field = |name: &str, pos: usize| -> Result<usize, SoqlError> {
        def.field_index(name).ok_or_else(|| {
            ctx.error(
                "INVALID_FIELD",
                pos,
                &format!(
                    "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                    def.name
                ),
            )
        })
    };
    let mut fields = Vec::new();
    for (name, pos) in &q.fields {
        let fi = field(name, *pos)?;
        if fields.contains(&fi) {
            return Err(ctx.malformed(*pos, &format!("duplicate field selected: {name}")));
        }
        fields.push(fi);
    }
    fn bind(
        e: &Expr,
        def: &super::schema::ObjectDef,
        field: &dyn Fn(&str, usize) -> Result<usize, SoqlError>,
        ctx: &Ctx<'_>,
    ) -> Result<BExpr, SoqlError> {
        Ok(match e {
            Expr::And(a, b) => BExpr::And(
                Box::new(bind(a, def, field, ctx)?),
                Box::new(bind(b, def, field, ctx)?),
            ),
            Expr::Or(a, b) => BExpr::Or(
                Box::new(bind(a, def, field, ctx)?),
                Box::new(bind(b, def, field, ctx)?),
            ),
            Expr::Not(a) => BExpr::Not(Box::new(bind(a, def, field, ctx)?)),
            Expr::Cmp {
                field: name,
                pos,
                op,
                value,
                value_pos,
            } => {
                let fi = field(name, *pos)?;
                let f = &def.fields[fi];
                if f.storage == Storage::Compound {
                    return Err(ctx.error(
                        "INVALID_FIELD",
                        *pos,
                        &format!("field '{}' can not be filtered in a query call", f.name),
                    ));
                }
                let value = typed(f, value, *value_pos, ctx)?;
                if *op == "LIKE" && !matches!(value, Val::Str(_)) {
                    return Err(ctx.error(
                        "INVALID_FIELD",
                        *pos,
                        &format!("invalid operator on {} field: {}", f.ty.name(), f.name),
                    ));
                }
                BExpr::Cmp {
                    field: fi,
                    op,
                    value,
                }
            }
            Expr::In {
                field: name,
                pos,
                negated,
                values,
            } => {
                let fi = field(name, *pos)?;
                let f = &def.fields[fi];
                let values = values
                    .iter()
                    .map(|(v, p)| typed(f, v, *p, ctx))
                    .collect::<Result<Vec<_>, _>>()?;
                BExpr::In {
                    field: fi,
                    negated: *negated,
                    values,
                }
            }
        })
    }
    let filter = match &q.filter {
        Some(e) => Some(bind(e, &def, &field, &ctx)?),
        None => None,
    };
    let mut order = Vec::new();
    for k in &q.order {
        order.push((field(&k.field, k.pos)?, k.desc, k.nulls_last));
    }
    Ok(Bound {
        table,
        fields,
        filter,
        order,
        limit: q.limit,
        offset: q.offset,
    })
}

fn typed(f: &FieldDef, lit: &Literal, pos: usize, ctx: &Ctx<'_>) -> Result<Val, SoqlError> {
    let wrong = |what: &str| {
        ctx.error(
            "INVALID_FIELD",
            pos,
            &format!(
                "value of filter criterion for field '{}' must be of type {what}",
                f.name
            ),
        )
    };
    Ok(match (lit, &f.ty) {
        (Literal::Null, _) => Val::Null,
        (Literal::Bool(b), FieldType::Boolean) => Val::Bool(*b),
        (_, FieldType::Boolean) => {
            return Err(wrong("boolean and should not be enclosed in quotes"));
        }
        (Literal::Bare(s), t) if t.is_numeric() => match s.parse::<f64>() {
            Ok(n) => Val::Num(n),
            Err(_) => return Err(wrong("double and should not be enclosed in quotes")),
        },
        (_, t) if t.is_numeric() => {
            return Err(wrong("double and should not be enclosed in quotes"));
        }
        (Literal::Bare(s), FieldType::Date) => match values::parse_date(s) {
            Some(d) => Val::Date(d),
            None => return Err(wrong("date and should not be enclosed in quotes")),
        },
        (_, FieldType::Date) => return Err(wrong("date and should not be enclosed in quotes")),
        (Literal::Bare(s), FieldType::DateTime) => match values::parse_datetime(s) {
            Some(ms) => Val::DateTime(ms),
            None => return Err(wrong("dateTime and should not be enclosed in quotes")),
        },
        (_, FieldType::DateTime) => {
            return Err(wrong("dateTime and should not be enclosed in quotes"));
        }
        (Literal::Str(s), FieldType::Id | FieldType::Reference(_)) => {
            // 15- and 18-character forms of one id are the same id.
            match ids::parse_id(s) {
                Some(_) if s.len() == 15 => Val::Str(format!("{s}{}", ids::suffix_of(s)).into()),
                Some(_) => Val::Str(format!("{}{}", &s[..15], ids::suffix_of(&s[..15])).into()),
                None if ids::looks_like_id(s) || s.is_empty() => Val::Str(s.as_str().into()),
                None => {
                    return Err(ctx.error(
                        "INVALID_QUERY_FILTER_OPERATOR",
                        pos,
                        &format!("invalid ID field: {s}"),
                    ));
                }
            }
        }
        (Literal::Str(s), _) => Val::Str(s.as_str().into()),
        (_, _) => return Err(wrong("string")),
    })
}

fn text_cmp(a: &str, b: &str) -> Ordering {
    a.to_lowercase().cmp(&b.to_lowercase())
}

fn cmp_vals(a: &Val, b: &Val) -> Option<Ordering> {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        (Val::Date(x), Val::Date(y)) => Some(x.cmp(y)),
        (Val::DateTime(x), Val::DateTime(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        (Val::Str(x), Val::Str(y)) => Some(text_cmp(x, y)),
        _ => None,
    }
}

fn like(value: &str, pattern: &str) -> bool {
    fn go(v: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some(('%', rest)) => (0..=v.len()).any(|i| go(&v[i..], rest)),
            Some(('_', rest)) => !v.is_empty() && go(&v[1..], rest),
            Some((c, rest)) => v.first().is_some_and(|x| x == c) && go(&v[1..], rest),
        }
    }
    let v: Vec<char> = value.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    go(&v, &p)
}

impl Bound {
    fn matches(&self, org: &Org, r: RecordRef, def: &super::schema::ObjectDef, e: &BExpr) -> bool {
        match e {
            BExpr::And(a, b) => self.matches(org, r, def, a) && self.matches(org, r, def, b),
            BExpr::Or(a, b) => self.matches(org, r, def, a) || self.matches(org, r, def, b),
            BExpr::Not(a) => !self.matches(org, r, def, a),
            BExpr::Cmp { field, op, value } => {
                let v = org.get(r, &def.fields[*field]);
                if value.is_null() || v.is_null() {
                    let both = value.is_null() && v.is_null();
                    return match *op {
                        "=" => both,
                        "!=" => !both,
                        _ => false,
                    };
                }
                if *op == "LIKE" {
                    return match (&v, value) {
                        (Val::Str(a), Val::Str(p)) => like(a, p),
                        _ => false,
                    };
                }
                let Some(ord) = cmp_vals(&v, value) else {
                    return false;
                };
                match *op {
                    "=" => ord == Ordering::Equal,
                    "!=" => ord != Ordering::Equal,
                    "<" => ord == Ordering::Less,
                    "<=" => ord != Ordering::Greater,
                    ">" => ord == Ordering::Greater,
                    ">=" => ord != Ordering::Less,
                    _ => false,
                }
            }
            BExpr::In {
                field,
                negated,
                values,
            } => {
                let v = org.get(r, &def.fields[*field]);
                let found = values.iter().any(|x| {
                    if x.is_null() || v.is_null() {
                        x.is_null() && v.is_null()
                    } else {
                        cmp_vals(&v, x) == Some(Ordering::Equal)
                    }
                });
                found != *negated
            }
        }
    }

    /// The matching records in result order. `all_rows` includes deleted ones (queryAll).
    pub fn run(&self, org: &Org, all_rows: bool) -> Vec<RecordRef> {
        let Some(t) = org.tables.get(self.table) else {
            return Vec::new();
        };
        let def = &t.def;
        let mut rows: Vec<RecordRef> = (0..t.records.len())
            .filter(|&idx| all_rows || !t.records[idx].deleted)
            .map(|idx| RecordRef {
                table: self.table,
                idx,
            })
            .filter(|&r| {
                self.filter
                    .as_ref()
                    .is_none_or(|e| self.matches(org, r, def, e))
            })
            .collect();
        if !self.order.is_empty() {
            let keys: Vec<Vec<Val>> = rows
                .iter()
                .map(|&r| {
                    self.order
                        .iter()
                        .map(|(f, _, _)| org.get(r, &def.fields[*f]))
                        .collect()
                })
                .collect();
            let mut idx: Vec<usize> = (0..rows.len()).collect();
            idx.sort_by(|&a, &b| {
                for (k, (_, desc, nulls_last)) in self.order.iter().enumerate() {
                    let (x, y) = (&keys[a][k], &keys[b][k]);
                    let ord = match (x.is_null(), y.is_null()) {
                        (true, true) => Ordering::Equal,
                        (true, false) => {
                            if *nulls_last {
                                Ordering::Greater
                            } else {
                                Ordering::Less
                            }
                        }
                        (false, true) => {
                            if *nulls_last {
                                Ordering::Less
                            } else {
                                Ordering::Greater
                            }
                        }
                        (false, false) => {
                            let o = cmp_vals(x, y).unwrap_or(Ordering::Equal);
                            if *desc { o.reverse() } else { o }
                        }
                    };
                    if ord != Ordering::Equal {
                        return ord;
                    }
                }
                a.cmp(&b)
            });
            rows = idx.into_iter().map(|i| rows[i]).collect();
        }
        let rows: Vec<RecordRef> = rows.into_iter().skip(self.offset).collect();
        match self.limit {
            Some(n) => rows.into_iter().take(n).collect(),
            None => rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_pollers_query() {
        let q = parse(
            "SELECT Id, Amount FROM Opportunity WHERE SystemModstamp > 2025-01-01T00:00:00Z AND (StageName IN ('A','B') OR Amount >= 10) ORDER BY SystemModstamp ASC, Id DESC NULLS LAST LIMIT 200",
        )
        .expect("parses");
        assert_eq!(q.fields.len(), 2);
        assert_eq!(q.order.len(), 2);
        assert_eq!(q.limit, Some(200));
    }

    #[test]
    fn malformed_queries_point_at_the_token() {
        let err = parse("SELECT Id FRM Account").expect_err("malformed");
        assert_eq!(err.code, "MALFORMED_QUERY");
        assert_eq!(
            err.message,
            "\nSELECT Id FRM Account\n          ^\nERROR at Row:1:Column:11\nunexpected token: 'FRM'"
        );
        assert!(parse("SELECT Id FROM Account WHERE Name = 'x").is_err());
        assert!(parse("SELECT FROM Account").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn like_patterns() {
        assert!(like("Acme Corp", "acme%"));
        assert!(like("abc", "a_c"));
        assert!(!like("abc", "a_"));
    }
}
