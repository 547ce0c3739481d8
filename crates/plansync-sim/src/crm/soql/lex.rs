//! The lexer: words, quoted strings, bare literals (numbers, dates, datetimes) and operators,
//! each with its byte position for error carets.

use super::{Ctx, SoqlError};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Word(String),
    Str(String),
    Lit(String),
    Op(&'static str),
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) pos: usize,
}

pub(super) fn lex(text: &str, ctx: &Ctx<'_>) -> Result<Vec<Token>, SoqlError> {
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
