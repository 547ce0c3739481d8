//! The parser: tokens into a [`Query`] (field list, object, filter, order, limit, offset);
//! names are not checked against the org yet.

use super::lex::{Tok, Token, lex};
use super::{Ctx, SoqlError};

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Str(String),
    /// An unquoted number, date or datetime, as written.
    Bare(String),
}

/// A filter. `AND` and `OR` chains are flat lists rather than nested pairs, so a long chain
/// (`a = 1 AND b = 2 AND …`, thousands of terms in a query near the length limit) does not
/// make a deep tree: the tree is only as deep as its parentheses and `NOT`s, which the parser
/// bounds with [`MAX_NESTING`].
#[derive(Debug, Clone)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
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

/// How deeply parentheses and `NOT`s may nest in a filter.
///
/// Salesforce documents no nesting bound of its own, only the statement's length (100,000
/// characters by default), which would allow tens of thousands of levels: enough to overflow
/// the stack of the recursive parser, binder and matcher here (and the 2 MB stack of a tokio
/// worker long before that). 64 is far beyond any filter a person or the poller writes (the
/// poller nests two levels) and keeps the recursion a few kilobytes deep. A deeper filter is
/// refused as `MALFORMED_QUERY` (HTTP 400), the answer Salesforce gives a query it cannot parse.
pub const MAX_NESTING: usize = 64;

struct Parser<'a> {
    toks: Vec<Token>,
    at: usize,
    /// Parentheses and `NOT`s open around the current position.
    depth: usize,
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
        let first = self.and()?;
        if !self.is_kw("OR") {
            return Ok(first);
        }
        let mut terms = vec![first];
        while self.eat_kw("OR") {
            terms.push(self.and()?);
        }
        Ok(Expr::Or(terms))
    }

    fn and(&mut self) -> Result<Expr, SoqlError> {
        let first = self.unary()?;
        if !self.is_kw("AND") {
            return Ok(first);
        }
        let mut terms = vec![first];
        while self.eat_kw("AND") {
            terms.push(self.unary()?);
        }
        Ok(Expr::And(terms))
    }

    /// One more level of nesting, opened by the token just eaten; refused beyond
    /// [`MAX_NESTING`].
    fn enter(&mut self) -> Result<(), SoqlError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            let pos = self
                .at
                .checked_sub(1)
                .and_then(|i| self.toks.get(i))
                .map_or(0, |t| t.pos);
            return Err(self.ctx.malformed(
                pos,
                &format!("the filter nests parentheses and NOTs more than {MAX_NESTING} deep"),
            ));
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<Expr, SoqlError> {
        if self.eat_kw("NOT") {
            self.enter()?;
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        if self.eat_op("(") {
            self.enter()?;
            let e = self.or()?;
            if !self.eat_op(")") {
                return Err(self.unexpected());
            }
            self.depth -= 1;
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
        depth: 0,
        ctx: &ctx,
    };
    p.query()
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
    fn nesting_is_bounded_and_chains_are_flat() {
        let nested = |n: usize| {
            format!(
                "SELECT Id FROM Account WHERE {}Name = 'x'{}",
                "(".repeat(n),
                ")".repeat(n)
            )
        };
        assert!(parse(&nested(MAX_NESTING)).is_ok());
        let err = parse(&nested(MAX_NESTING + 1)).expect_err("too deep");
        assert_eq!(err.code, "MALFORMED_QUERY");
        assert!(err.message.contains("more than 64 deep"), "{}", err.message);
        let nots = format!(
            "SELECT Id FROM Account WHERE {}Name = 'x'",
            "NOT ".repeat(8000)
        );
        assert_eq!(parse(&nots).expect_err("too deep").code, "MALFORMED_QUERY");
        // A long chain is one flat list, not a deep tree.
        let chain = vec!["Name = 'x'"; 5000].join(" AND ");
        let q = parse(&format!("SELECT Id FROM Account WHERE {chain}")).expect("parses");
        assert!(matches!(q.filter, Some(Expr::And(ref terms)) if terms.len() == 5000));
    }
}
