//! Binding a parsed query to the org: the object and field names resolved to indexes, and
//! each filter value typed by its field (Salesforce's errors when they do not fit).

use super::parse::{Expr, Literal, parse};
use super::{Ctx, SoqlError};
use crate::crm::ids;
use crate::crm::org::Org;
use crate::crm::schema::{FieldDef, FieldType, ObjectDef, Storage};
use crate::crm::values::{self, Val};

#[derive(Debug)]
pub struct Bound {
    pub table: usize,
    pub fields: Vec<usize>,
    pub(super) filter: Option<BExpr>,
    pub(super) order: Vec<(usize, bool, bool)>,
    pub(super) limit: Option<usize>,
    pub(super) offset: usize,
}

#[derive(Debug)]
pub(super) enum BExpr {
    And(Vec<BExpr>),
    Or(Vec<BExpr>),
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
        def: &ObjectDef,
        field: &dyn Fn(&str, usize) -> Result<usize, SoqlError>,
        ctx: &Ctx<'_>,
    ) -> Result<BExpr, SoqlError> {
        Ok(match e {
            Expr::And(terms) => BExpr::And(
                terms
                    .iter()
                    .map(|t| bind(t, def, field, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Or(terms) => BExpr::Or(
                terms
                    .iter()
                    .map(|t| bind(t, def, field, ctx))
                    .collect::<Result<_, _>>()?,
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
