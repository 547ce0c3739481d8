//! Formulas of calculated line items: arithmetic over the number line items of a module.
//!
//! Just enough of Anaplan's formula language to make a line item calculated (so writes to it
//! fail per cell with `cellIsCalculated`) and to give it a value that follows its inputs:
//! `+ - * /`, unary minus, parentheses, numbers, and line item names (which may contain
//! spaces, so a name runs up to the next operator or parenthesis). Division by zero gives 0,
//! as in Anaplan.
//!
//! Formulas come from seed files, which are outside input: the parser bounds how deeply
//! parentheses and unary minuses nest ([`MAX_NESTING`]), and a run of operators of one
//! precedence (`a + b - c + …`) is one flat [`Expr::Chain`] rather than a deep tree, so parsing,
//! evaluating and dropping a formula never recurse deeper than that bound.

/// How deeply parentheses and unary minuses may nest in a formula.
///
/// The reference documents no formula nesting limit for Anaplan. 64 levels is far beyond any
/// formula written by hand, and keeps the recursive parser and evaluator a few kilobytes deep:
/// a seed with thousands of nested parentheses is refused with a clear error as the seed is
/// built, instead of overflowing the stack.
pub const MAX_NESTING: usize = 64;

/// How many line items a formula may reach through others (`A = B + 1`, `B = C + 1`, …).
/// Evaluating a cell follows the chain recursively, so it is bounded as the nesting is; 256 is
/// far more than a model's calculation chains need.
pub const MAX_REFERENCE_CHAIN: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(f64),
    /// A line item, by its index in the model's line items.
    Ref(usize),
    Neg(Box<Expr>),
    /// The first operand, then each operator with its right operand, applied left to right
    /// (all of one precedence: `+`/`-` or `*`/`/`).
    Chain(Box<Expr>, Vec<(Op, Expr)>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Name(String),
    Op(char),
}

fn tokenize(text: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, toks: &mut Vec<Tok>| -> Result<(), String> {
        let w = word.trim();
        if !w.is_empty() {
            if w.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
                let n: f64 = w.parse().map_err(|_| format!("bad number {w:?}"))?;
                toks.push(Tok::Num(n));
            } else {
                toks.push(Tok::Name(w.to_string()));
            }
        }
        word.clear();
        Ok(())
    };
    for c in text.chars() {
        if matches!(c, '+' | '-' | '*' | '/' | '(' | ')') {
            flush(&mut word, &mut toks)?;
            toks.push(Tok::Op(c));
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut toks)?;
    Ok(toks)
}

/// Parses `text`, resolving names with `resolve` (name → line item index).
pub fn parse(text: &str, resolve: &dyn Fn(&str) -> Option<usize>) -> Result<Expr, String> {
    let toks = tokenize(text)?;
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        depth: 0,
        resolve,
    };
    let e = p.sum()?;
    if p.pos != toks.len() {
        return Err(format!(
            "unexpected {:?} in formula {text:?}",
            toks.get(p.pos)
        ));
    }
    Ok(e)
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    /// Parentheses and unary minuses open around the current token.
    depth: usize,
    resolve: &'a dyn Fn(&str) -> Option<usize>,
}

impl Parser<'_> {
    fn peek_op(&self) -> Option<char> {
        match self.toks.get(self.pos) {
            Some(Tok::Op(c)) => Some(*c),
            _ => None,
        }
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let first = self.product()?;
        let mut rest = Vec::new();
        while let Some(c @ ('+' | '-')) = self.peek_op() {
            self.pos += 1;
            let op = if c == '+' { Op::Add } else { Op::Sub };
            rest.push((op, self.product()?));
        }
        Ok(chain(first, rest))
    }

    fn product(&mut self) -> Result<Expr, String> {
        let first = self.unary()?;
        let mut rest = Vec::new();
        while let Some(c @ ('*' | '/')) = self.peek_op() {
            self.pos += 1;
            let op = if c == '*' { Op::Mul } else { Op::Div };
            rest.push((op, self.unary()?));
        }
        Ok(chain(first, rest))
    }

    /// One more level of nesting; refused beyond [`MAX_NESTING`].
    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(format!(
                "the formula nests parentheses and unary minuses more than {MAX_NESTING} deep"
            ));
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek_op() == Some('-') {
            self.pos += 1;
            self.enter()?;
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Neg(Box::new(e)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, String> {
        let tok = self.toks.get(self.pos).cloned();
        self.pos += 1;
        match tok {
            Some(Tok::Num(n)) => Ok(Expr::Num(n)),
            Some(Tok::Name(name)) => (self.resolve)(&name)
                .map(Expr::Ref)
                .ok_or_else(|| format!("unknown line item {name:?} in formula")),
            Some(Tok::Op('(')) => {
                self.enter()?;
                let e = self.sum()?;
                if self.peek_op() != Some(')') {
                    return Err("missing ')' in formula".to_string());
                }
                self.pos += 1;
                self.depth -= 1;
                Ok(e)
            }
            other => Err(format!("unexpected {other:?} in formula")),
        }
    }
}

fn chain(first: Expr, rest: Vec<(Op, Expr)>) -> Expr {
    if rest.is_empty() {
        first
    } else {
        Expr::Chain(Box::new(first), rest)
    }
}

impl Expr {
    /// Evaluates with `get` giving the value of a referenced line item.
    pub fn eval(&self, get: &dyn Fn(usize) -> f64) -> f64 {
        match self {
            Expr::Num(n) => *n,
            Expr::Ref(i) => get(*i),
            Expr::Neg(e) => -e.eval(get),
            Expr::Chain(first, rest) => rest.iter().fold(first.eval(get), |a, (op, b)| {
                let b = b.eval(get);
                match op {
                    Op::Add => a + b,
                    Op::Sub => a - b,
                    Op::Mul => a * b,
                    Op::Div if b == 0.0 => 0.0,
                    Op::Div => a / b,
                }
            }),
        }
    }

    /// The line items the formula reads.
    pub fn refs(&self, out: &mut Vec<usize>) {
        match self {
            Expr::Num(_) => {}
            Expr::Ref(i) => out.push(*i),
            Expr::Neg(e) => e.refs(out),
            Expr::Chain(first, rest) => {
                first.refs(out);
                for (_, e) in rest {
                    e.refs(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(name: &str) -> Option<usize> {
        match name {
            "Amount" => Some(0),
            "Win Probability" => Some(1),
            _ => None,
        }
    }

    #[test]
    fn parses_names_with_spaces_and_precedence() {
        let e = parse("Amount * Win Probability / 100", &resolve).unwrap();
        let vals = [2000.0, 40.0];
        assert_eq!(e.eval(&|i| vals[i]), 800.0);
        let e = parse("-(Amount + 1) * 2 - 3", &resolve).unwrap();
        assert_eq!(e.eval(&|i| vals[i]), -4005.0);
        let e = parse("Amount / 0", &resolve).unwrap();
        assert_eq!(e.eval(&|i| vals[i]), 0.0);
    }

    #[test]
    fn rejects_unknown_names_and_bad_syntax() {
        assert!(parse("Amount * Nope", &resolve).is_err());
        assert!(parse("(Amount", &resolve).is_err());
        assert!(parse("Amount *", &resolve).is_err());
        assert!(parse("1.2.3", &resolve).is_err());
        assert!(parse("Amount )", &resolve).is_err());
    }

    #[test]
    fn nesting_is_bounded_and_chains_are_flat() {
        let nested = |n: usize| format!("{}Amount{}", "(".repeat(n), ")".repeat(n));
        assert!(parse(&nested(MAX_NESTING), &resolve).is_ok());
        let err = parse(&nested(MAX_NESTING + 1), &resolve).expect_err("too deep");
        assert!(err.contains("more than 64 deep"), "{err}");
        assert!(parse(&format!("{}Amount", "-".repeat(10_000)), &resolve).is_err());
        let long = vec!["Amount"; 20_000].join(" + ");
        let e = parse(&long, &resolve).expect("a long sum parses");
        assert_eq!(e.eval(&|_| 1.0), 20_000.0);
        let e = parse("10 - 2 - 3 / 2 * 4", &resolve).expect("parses");
        assert_eq!(e.eval(&|_| 0.0), 2.0);
    }
}
