//! The preflight (`plansync check`): everything a run depends on, tried before the run starts,
//! so a wrong password, an unknown module or a read-only field is one line saying what to fix
//! instead of a run that decides on what it could not read.
//!
//! It logs in to both systems, resolves every name the rule files and the configuration give
//! (`anaplan.rs`), describes every mapped CRM object and subscribes each CDC channel once
//! (`crm.rs`). It only reads: nothing is written to either system or to the store, and the
//! CDC subscription starts at the tip and is disconnected at once.
//!
//! Each check is independent where it can be: a missing line item does not hide a missing CRM
//! field. A check whose prerequisite failed (no login, no model) is reported as not run, with
//! the reason, rather than left out, so the report always says what was not verified.

mod anaplan;
mod crm;

use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::rules::{RuleSet, cases};

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    /// The check ran and found something to fix.
    Fail,
    /// The check could not be made (the system did not answer, or what it depends on failed).
    CouldNotRun,
}

/// One check: what was checked, how it ended, what was found, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// A stable dotted name, e.g. `anaplan.opportunity.module`, `crm.Opportunity.Amount`.
    pub name: String,
    pub outcome: Outcome,
    /// What was found: the resolved id on a pass, the problem otherwise.
    pub detail: String,
    /// One line saying what to do; only when the check did not pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            outcome: Outcome::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::with_fix(Outcome::Fail, name.into(), detail.into(), fix.into())
    }

    pub fn not_run(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::with_fix(Outcome::CouldNotRun, name.into(), detail.into(), fix.into())
    }

    fn with_fix(outcome: Outcome, name: String, detail: String, fix: String) -> Check {
        Check {
            name,
            outcome,
            detail,
            fix: Some(fix),
        }
    }
}

/// Every check of one preflight, in the order they were made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// The report as a whole: `Fail` if any check failed (something is known to be wrong,
    /// whatever else could not be verified), else `CouldNotRun` if any check could not be
    /// made, else `Pass`.
    pub fn outcome(&self) -> Outcome {
        let has = |o: Outcome| self.checks.iter().any(|c| c.outcome == o);
        if has(Outcome::Fail) {
            Outcome::Fail
        } else if has(Outcome::CouldNotRun) {
            Outcome::CouldNotRun
        } else {
            Outcome::Pass
        }
    }

    /// How many checks ended `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == outcome).count()
    }

    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    fn push(&mut self, check: Check) {
        self.checks.push(check);
    }
}

/// How long the preflight waits. A preflight should answer in seconds: a system that does not
/// answer within these is reported as not reachable, not retried for the engine's minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// One HTTP request.
    pub request_timeout: Duration,
    /// All attempts of one Anaplan call together (its retry budget).
    pub retry_budget: Duration,
    /// The CDC handshake, connect and subscriptions together.
    pub streaming_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout: Duration::from_secs(30),
            retry_budget: Duration::from_secs(10),
            streaming_timeout: Duration::from_secs(20),
        }
    }
}

/// Runs every check against the systems `config` names, for the pairings of `rules`, with the
/// default [`Limits`].
pub async fn check(config: &Config, rules: &RuleSet) -> Report {
    check_with(config, rules, Limits::default()).await
}

/// As [`check`], with other limits.
pub async fn check_with(config: &Config, rules: &RuleSet, limits: Limits) -> Report {
    let mut report = Report::default();
    rule_cases(rules, &mut report);
    // The two systems are independent: check them at the same time.
    let (anaplan, crm) = tokio::join!(
        anaplan::check(config, rules, limits),
        crm::check(config, rules, limits)
    );
    report.checks.extend(anaplan.checks);
    report.checks.extend(crm.checks);
    report
}

/// The rule files' own `[[test]]` cases: `plansync run` refuses rules whose cases fail, so the
/// preflight says so too.
fn rule_cases(rules: &RuleSet, report: &mut Report) {
    for pairing in &rules.pairings {
        let name = format!("rules.{}.tests", pairing.name);
        let outcomes = cases::run(pairing);
        let failing: Vec<&str> = outcomes
            .iter()
            .filter(|o| !o.passed())
            .map(|o| o.name.as_str())
            .collect();
        report.push(if failing.is_empty() {
            Check::pass(name, format!("{} test cases pass", outcomes.len()))
        } else {
            Check::fail(
                name,
                format!("failing test cases: {}", quoted(&failing)),
                format!(
                    "run `plansync rules test {}` and fix the rules or the cases",
                    pairing.path.display()
                ),
            )
        });
    }
}

/// `a`, `b` as "`a`, `b`".
fn quoted<S: AsRef<str>>(names: &[S]) -> String {
    names
        .iter()
        .map(|n| format!("`{}`", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_outweighs_what_could_not_run() {
        let mut r = Report::default();
        assert_eq!(r.outcome(), Outcome::Pass);
        r.push(Check::pass("a", "ok"));
        assert_eq!(r.outcome(), Outcome::Pass);
        r.push(Check::not_run("b", "no answer", "check the network"));
        assert_eq!(r.outcome(), Outcome::CouldNotRun);
        r.push(Check::fail("c", "unknown", "fix it"));
        assert_eq!(r.outcome(), Outcome::Fail);
        assert_eq!(r.count(Outcome::Pass), 1);
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["checks"][1]["outcome"], "could_not_run");
        assert!(json["checks"][0].get("fix").is_none());
    }
}
