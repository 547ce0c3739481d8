//! The columns `plansync exceptions list` can print as a table, and which it prints unless
//! told (`--columns`, `--wide`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::table::{age, object_field, resolution, short_time, value};
use crate::store::{ExceptionFilter, ExceptionRecord};

/// One column of the list table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListColumn {
    Id,
    Kind,
    Status,
    /// `Object.Field` (the object alone when the exception is about no field).
    Field,
    Record,
    Crm,
    Anaplan,
    Base,
    Rule,
    Created,
    /// Time since created, in its largest unit (`3d`).
    Age,
    Resolution,
    /// Who resolved it.
    By,
    Note,
    Message,
}

impl ListColumn {
    /// Every column, in the order `--wide` prints them.
    pub const ALL: [ListColumn; 15] = [
        ListColumn::Id,
        ListColumn::Kind,
        ListColumn::Status,
        ListColumn::Field,
        ListColumn::Record,
        ListColumn::Crm,
        ListColumn::Anaplan,
        ListColumn::Base,
        ListColumn::Rule,
        ListColumn::Created,
        ListColumn::Age,
        ListColumn::Resolution,
        ListColumn::By,
        ListColumn::Note,
        ListColumn::Message,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ListColumn::Id => "id",
            ListColumn::Kind => "kind",
            ListColumn::Status => "status",
            ListColumn::Field => "field",
            ListColumn::Record => "record",
            ListColumn::Crm => "crm",
            ListColumn::Anaplan => "anaplan",
            ListColumn::Base => "base",
            ListColumn::Rule => "rule",
            ListColumn::Created => "created",
            ListColumn::Age => "age",
            ListColumn::Resolution => "resolution",
            ListColumn::By => "by",
            ListColumn::Note => "note",
            ListColumn::Message => "message",
        }
    }

    /// What a reviewer deciding exceptions needs: what, where, both values and the base, how
    /// long it has waited, why. The status only when the filter leaves more than one.
    pub fn defaults(filter: &ExceptionFilter) -> Vec<ListColumn> {
        let mut columns = vec![ListColumn::Id, ListColumn::Kind];
        if filter.status.is_none() {
            columns.push(ListColumn::Status);
        }
        columns.extend([
            ListColumn::Field,
            ListColumn::Record,
            ListColumn::Crm,
            ListColumn::Anaplan,
            ListColumn::Base,
            ListColumn::Age,
            ListColumn::Message,
        ]);
        columns
    }

    /// Short values that are useless cut (an id, an age) stay whole in a narrow table.
    pub(crate) fn keep_whole(self) -> bool {
        matches!(self, ListColumn::Id | ListColumn::Age | ListColumn::Created)
    }

    pub(crate) fn cell(self, e: &ExceptionRecord, now: DateTime<Utc>) -> String {
        let or_dash = |v: Option<&String>| v.cloned().unwrap_or_else(|| "-".into());
        let field_value = |pick: fn(&crate::store::ExceptionField) -> &crate::model::Value| {
            e.field
                .as_ref()
                .map(|f| value(pick(f)))
                .unwrap_or_else(|| "-".into())
        };
        match self {
            ListColumn::Id => e.id.to_string(),
            ListColumn::Kind => e.kind.to_string(),
            ListColumn::Status => e.status.to_string(),
            ListColumn::Field => object_field(e),
            ListColumn::Record => or_dash(e.crm_id.as_ref()),
            ListColumn::Crm => field_value(|f| &f.crm_value),
            ListColumn::Anaplan => field_value(|f| &f.anaplan_value),
            ListColumn::Base => field_value(|f| &f.base_value),
            ListColumn::Rule => or_dash(e.rule_id.as_ref()),
            ListColumn::Created => short_time(e.created_at),
            ListColumn::Age => age(now, e.created_at),
            ListColumn::Resolution => or_dash(resolution(e).as_ref()),
            ListColumn::By => or_dash(e.resolved_by.as_ref()),
            ListColumn::Note => or_dash(e.note.as_ref()),
            ListColumn::Message => e.message.clone(),
        }
    }
}

impl fmt::Display for ListColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ListColumn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        ListColumn::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ListColumn::ALL.iter().map(|c| c.as_str()).collect();
                format!("unknown column `{s}` (one of: {})", names.join(", "))
            })
    }
}

/// Which columns the list table has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ListColumns {
    /// [`ListColumn::defaults`] for the filter.
    #[default]
    ForFilter,
    /// Every column ([`ListColumn::ALL`]).
    All,
    /// These, in this order.
    These(Vec<ListColumn>),
}

impl ListColumns {
    pub fn resolve(&self, filter: &ExceptionFilter) -> Vec<ListColumn> {
        match self {
            ListColumns::ForFilter => ListColumn::defaults(filter),
            ListColumns::All => ListColumn::ALL.to_vec(),
            ListColumns::These(columns) => columns.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_parses_back_from_its_name() {
        for column in ListColumn::ALL {
            assert_eq!(column.as_str().parse::<ListColumn>(), Ok(column));
        }
        let err = "colour".parse::<ListColumn>().unwrap_err();
        assert!(err.contains("unknown column `colour`"), "{err}");
        assert!(err.contains("id, kind, status"), "{err}");
    }

    #[test]
    fn the_status_column_is_there_only_when_the_filter_leaves_several() {
        let all = ListColumn::defaults(&ExceptionFilter::default());
        assert!(all.contains(&ListColumn::Status));
        let open = ListColumn::defaults(&ExceptionFilter {
            status: Some(crate::model::ExceptionStatus::Open),
            ..Default::default()
        });
        assert!(!open.contains(&ListColumn::Status));
    }
}
