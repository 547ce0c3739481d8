//! A field's policy (owner, on_violation, on_conflict, tie, min, max, allowed, max_length,
//! max_change_pct): the settings as written, then merged over a base and checked to fit
//! together. A setting that did not read is reported once, and the fit is not checked.

use super::*;

/// The policy settings written on a field or a `when`, before they are merged and checked.
#[derive(Default)]
pub(super) struct PolicyParts {
    pub(super) owner: Option<(Owner, Range<usize>)>,
    /// Some policy key was written (maybe misspelt) but gave no setting: its error is
    /// reported, and checks of how the settings fit together would only repeat it.
    pub(super) broken: bool,
    /// Some policy key was written, even if none of them is valid.
    pub(super) any_written: bool,
    pub(super) on_violation: Option<(OnViolation, Range<usize>)>,
    pub(super) on_conflict: Option<(&'static str, Range<usize>)>,
    pub(super) tie: Option<(Side, Range<usize>)>,
    pub(super) min: Option<(Decimal, Range<usize>)>,
    pub(super) max: Option<(Decimal, Range<usize>)>,
    pub(super) allowed: Option<(BTreeSet<String>, Range<usize>)>,
    pub(super) max_length: Option<(u64, Range<usize>)>,
    pub(super) max_change_pct: Option<(Decimal, Range<usize>)>,
}

impl PolicyParts {
    pub(super) fn is_empty(&self) -> bool {
        self.owner.is_none()
            && self.on_violation.is_none()
            && self.on_conflict.is_none()
            && self.tie.is_none()
            && self.min.is_none()
            && self.max.is_none()
            && self.allowed.is_none()
            && self.max_length.is_none()
            && self.max_change_pct.is_none()
    }
}

impl Compiler<'_, '_> {
    pub(super) fn policy_parts(&mut self, t: &Table<'_, '_>) -> PolicyParts {
        let mut parts = PolicyParts {
            any_written: POLICY_KEYS.iter().any(|k| t.attempted(k)),
            ..PolicyParts::default()
        };
        if let Some(s) = t.str(self.p, "owner") {
            let options = [
                ("crm", Owner::Crm),
                ("anaplan", Owner::Anaplan),
                ("shared", Owner::Shared),
            ];
            parts.owner = choice(self.p, &s, "owner", &options).map(|o| (o, s.span));
        }
        if let Some(s) = t.str(self.p, "on_violation") {
            let options = [
                ("reject", OnViolation::Reject),
                ("revert", OnViolation::Revert),
            ];
            parts.on_violation = choice(self.p, &s, "on_violation", &options).map(|o| (o, s.span));
        }
        if let Some(s) = t.str(self.p, "on_conflict") {
            let options = [
                ("crm_wins", "crm_wins"),
                ("anaplan_wins", "anaplan_wins"),
                ("newest_wins", "newest_wins"),
                ("manual", "manual"),
            ];
            parts.on_conflict = choice(self.p, &s, "on_conflict", &options).map(|o| (o, s.span));
        }
        if let Some(s) = t.str(self.p, "tie") {
            parts.tie = choice(self.p, &s, "tie", SIDES).map(|o| (o, s.span));
        }
        for (key, slot) in [
            ("min", &mut parts.min),
            ("max", &mut parts.max),
            ("max_change_pct", &mut parts.max_change_pct),
        ] {
            if let Some(lit) = t.number(self.p, key) {
                match Decimal::parse(&lit.value, ValueKind::MAX_SCALE) {
                    Ok(d) => *slot = Some((d, lit.span)),
                    Err(e) => self.p.push(Problem::new(lit.span, format!("`{key}`: {e}"))),
                }
            }
        }
        if let Some((values, span)) = t.str_array(self.p, "allowed") {
            parts.allowed = Some((values.into_iter().map(|v| v.value).collect(), span));
        }
        parts.max_length = t.uint(self.p, "max_length");
        let given = [
            ("owner", parts.owner.is_some()),
            ("on_violation", parts.on_violation.is_some()),
            ("on_conflict", parts.on_conflict.is_some()),
            ("tie", parts.tie.is_some()),
            ("min", parts.min.is_some()),
            ("max", parts.max.is_some()),
            ("max_change_pct", parts.max_change_pct.is_some()),
            ("allowed", parts.allowed.is_some()),
            ("max_length", parts.max_length.is_some()),
        ];
        parts.broken = given.iter().any(|(key, ok)| !ok && t.attempted(key));
        parts
    }

    /// Merges `parts` over `base` (the field's policy, for a `when`) and checks that the
    /// result is coherent.
    pub(super) fn policy(
        &mut self,
        base: Option<&Policy>,
        parts: &PolicyParts,
        info: &FieldInfo,
        span: &Range<usize>,
    ) -> Option<Policy> {
        if parts.broken {
            return None;
        }
        let owner = match (&parts.owner, base) {
            (Some((o, _)), _) => *o,
            (None, Some(b)) => b.owner,
            (None, None) => {
                self.p.push(
                    Problem::new(span.clone(), "the field has no `owner`")
                        .label("owner is required")
                        .help("owner = \"crm\", \"anaplan\" or \"shared\""),
                );
                return None;
            }
        };
        let mut ok = true;
        let on_violation = match (&parts.on_violation, owner) {
            (Some((_, s)), Owner::Shared) => {
                self.p.push(
                    Problem::new(s.clone(), "on_violation applies only to owned fields; both sides may change a shared field")
                        .help("remove it, or make one side the owner"),
                );
                ok = false;
                OnViolation::Reject
            }
            (Some((v, _)), _) => *v,
            (None, _) => base.map_or(OnViolation::Reject, |b| b.on_violation),
        };
        let inherited_conflict = base.and_then(|b| b.on_conflict);
        let on_conflict = match (owner, &parts.on_conflict) {
            (Owner::Shared, Some((name, _))) => {
                let tie = parts
                    .tie
                    .as_ref()
                    .map(|(t, _)| *t)
                    .or(match inherited_conflict {
                        Some(ConflictPolicy::NewestWins { tie }) => Some(tie),
                        _ => None,
                    });
                match *name {
                    "crm_wins" => Some(ConflictPolicy::CrmWins),
                    "anaplan_wins" => Some(ConflictPolicy::AnaplanWins),
                    "manual" => Some(ConflictPolicy::Manual),
                    _ => match tie {
                        Some(tie) => Some(ConflictPolicy::NewestWins { tie }),
                        None => {
                            self.p.push(
                                Problem::new(parts.on_conflict.as_ref().map_or(span.clone(), |(_, s)| s.clone()),
                                    "newest_wins needs a tie-breaker")
                                    .help("add tie = \"crm\" or tie = \"anaplan\": Anaplan changes are dated by the poll that saw them, so equal times are common"),
                            );
                            ok = false;
                            None
                        }
                    },
                }
            }
            (Owner::Shared, None) => match inherited_conflict {
                // A `when` may change only the tie-breaker of an inherited newest_wins.
                Some(ConflictPolicy::NewestWins { tie }) => Some(ConflictPolicy::NewestWins {
                    tie: parts.tie.as_ref().map_or(tie, |(t, _)| *t),
                }),
                Some(p) => Some(p),
                None => {
                    self.p.push(
                        Problem::new(parts.owner.as_ref().map_or(span.clone(), |(_, s)| s.clone()),
                            "a shared field needs `on_conflict`")
                            .help("on_conflict = \"crm_wins\", \"anaplan_wins\", \"newest_wins\" or \"manual\""),
                    );
                    ok = false;
                    None
                }
            },
            (_, Some((_, s))) => {
                self.p.push(
                    Problem::new(
                        s.clone(),
                        format!(
                            "on_conflict applies only to shared fields; this one is owned by {}",
                            owner.as_str()
                        ),
                    )
                    .help("remove it, or set owner = \"shared\""),
                );
                ok = false;
                None
            }
            (_, None) => None,
        };
        if let Some((_, s)) = &parts.tie
            && !matches!(on_conflict, Some(ConflictPolicy::NewestWins { .. }))
        {
            self.p.push(Problem::new(
                s.clone(),
                "`tie` applies only with on_conflict = \"newest_wins\"",
            ));
            ok = false;
        }

        let mut validation = base.map(|b| b.validation.clone()).unwrap_or_default();
        let number_scale = match info.kind {
            ValueKind::Number { scale } => Some(scale),
            _ => None,
        };
        for (key, part, slot) in [
            ("min", &parts.min, &mut validation.min),
            ("max", &parts.max, &mut validation.max),
        ] {
            let Some((d, s)) = part else { continue };
            let Some(scale) = number_scale else {
                self.p.push(Problem::new(
                    s.clone(),
                    format!("`{key}` applies only to number fields"),
                ));
                ok = false;
                continue;
            };
            match d
                .rescale(scale)
                .filter(|r| r.rescale(ValueKind::MAX_SCALE) == Some(*d))
            {
                Some(r) => *slot = Some(r),
                None => {
                    self.p.push(Problem::new(s.clone(), format!("`{key}` has more digits after the point than the field's scale ({scale})")));
                    ok = false;
                }
            }
        }
        if let Some((d, s)) = &parts.max_change_pct {
            if number_scale.is_none() {
                self.p.push(Problem::new(
                    s.clone(),
                    "`max_change_pct` applies only to number fields",
                ));
                ok = false;
            } else if d.units <= 0 {
                self.p
                    .push(Problem::new(s.clone(), "`max_change_pct` must be above 0"));
                ok = false;
            } else {
                validation.max_change_pct = Some(*d);
            }
        }
        if let (Some(min), Some(max)) = (validation.min, validation.max)
            && min > max
        {
            let at = parts
                .max
                .as_ref()
                .or(parts.min.as_ref())
                .map_or(span.clone(), |(_, s)| s.clone());
            self.p.push(Problem::new(
                at,
                format!(
                    "min {} is above max {}: no value could pass",
                    min.shortest(),
                    max.shortest()
                ),
            ));
            ok = false;
        }
        if let Some((allowed, s)) = &parts.allowed {
            match info.kind {
                ValueKind::Text | ValueKind::Picklist if allowed.is_empty() => {
                    self.p.push(Problem::new(
                        s.clone(),
                        "an empty `allowed` list rejects every value",
                    ));
                    ok = false;
                }
                ValueKind::Text => validation.allowed = Some(allowed.clone()),
                ValueKind::Picklist => match &info.picklist {
                    Some(pick) if allowed.is_subset(&pick.values) => {
                        validation.allowed = Some(allowed.clone())
                    }
                    _ => {
                        self.p.push(
                            Problem::new(
                                s.clone(),
                                "`allowed` names values that are not in the picklist",
                            )
                            .help("allowed values must be among `values`"),
                        );
                        ok = false;
                    }
                },
                _ => {
                    self.p.push(
                        Problem::new(
                            s.clone(),
                            "`allowed` applies only to text and picklist fields",
                        )
                        .help("use min and max for numbers"),
                    );
                    ok = false;
                }
            }
        }
        if let Some((n, s)) = &parts.max_length {
            match (info.kind, u32::try_from(*n)) {
                (ValueKind::Text, Ok(n)) if n > 0 => validation.max_length = Some(n),
                (ValueKind::Text, _) => {
                    self.p.push(Problem::new(
                        s.clone(),
                        "`max_length` must be between 1 and 4294967295 characters",
                    ));
                    ok = false;
                }
                _ => {
                    self.p.push(
                        Problem::new(s.clone(), "`max_length` applies only to text fields")
                            .help("a picklist's values are its limit; numbers have min and max"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(Policy {
            owner,
            on_violation,
            on_conflict,
            validation,
        })
    }
}
