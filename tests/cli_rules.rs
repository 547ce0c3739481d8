//! `plansync rules check|test|explain` driven through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn plansync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plansync"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run plansync")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

const HEADER: &str = r#"
[pairing]
crm = "Opportunity"
anaplan = { workspace = "8a81b09d5e8c6f27015e8d4f1a2b3c4d", model = "75A40874E6B64FA3AE0743278996850F", list = "Opportunities", module = "OPP01" }
"#;

#[test]
fn the_example_rules_check_and_their_cases_pass() {
    let out = plansync(&["rules", "check", "rules"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("ok   rules/opportunity.toml"), "{stdout}");
    assert!(stdout.contains("ok   rules/territory.toml"), "{stdout}");

    let out = plansync(&["rules", "test"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn check_reports_every_error_with_its_location_and_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        r#"{HEADER}
[window.qe]
last_business_days = 5
of = "fiscal_quarter"

[[field]]
crm = "Amount"
anaplan = "Amount"
type = "number"
scale = 2
ownr = "crm"
owner = "crm"
on_conflict = "manual"

[[field]]
crm = "Amount"
anaplan = "Amount Two"
type = "numbr"
owner = "shared"

[[field]]
crm = "Forecast"
anaplan = "Forecast"
type = "number"
scale = 2
owner = "shared"
on_conflict = "manual"
  [[field.when]]
  window = "quarter_end"
  on_conflict = "crm_wins"
  [[field.when]]
  record = {{ Amount = [] }}
  owner = "crm"
  [[field.when]]
  owner = "crm"
  [[field.when]]
  window = "qe"
  owner = "anaplan"
  [[field.when]]
  window = "qe"
  record = {{ Forecast = ["1"] }}
  owner = "crm"
"#
    );
    let path = write(dir.path(), "opp.toml", &body);
    let out = plansync(&["rules", "check", path.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    let line_of = |needle: &str| body.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let expectations = [
        (
            format!("opp.toml:{}:1", line_of("ownr")),
            "unknown key `ownr`",
            "did you mean `owner`?",
        ),
        (
            format!("opp.toml:{}:15", line_of("on_conflict = \"manual\"")),
            "on_conflict applies only to shared fields",
            "set owner = \"shared\"",
        ),
        (
            format!("opp.toml:{}:7", line_of("anaplan = \"Amount Two\"") - 1),
            "CRM field `Amount` is mapped twice",
            "first mapped here",
        ),
        (
            format!("opp.toml:{}:8", line_of("numbr")),
            "`numbr` is not a valid `type`",
            "did you mean `number`?",
        ),
        (
            format!("opp.toml:{}:", line_of("window = \"quarter_end\"")),
            "window `quarter_end` is not defined",
            "did you mean",
        ),
        (
            format!("opp.toml:{}:", line_of("Amount = []")),
            "an empty set never matches",
            "",
        ),
        (
            String::new(),
            "this `when` has no condition, so it always matches",
            "move its settings onto the field",
        ),
        (
            String::new(),
            "this `when` can never match",
            "put the narrower one first",
        ),
    ];
    for (location, message, hint) in &expectations {
        assert!(
            stderr.contains(message),
            "missing {message:?} in:\n{stderr}"
        );
        assert!(
            stderr.contains(location.as_str()),
            "missing {location:?} in:\n{stderr}"
        );
        assert!(stderr.contains(hint), "missing {hint:?} in:\n{stderr}");
    }
    // The offending text is underlined.
    assert!(stderr.contains("──┬─"), "{stderr}");
    assert!(stderr.contains("errors in rule files"), "{stderr}");
}

#[test]
fn check_reports_toml_syntax_errors_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "broken.toml",
        &format!("{HEADER}\n[[field]]\ncrm = \"Amount\nowner = crm\n"),
    );
    let out = plansync(&["rules", "check", path.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("broken.toml:8:"), "{stderr}");
}

#[test]
fn check_explains_a_missing_path_and_duplicate_pairings() {
    let out = plansync(&["rules", "check", "no/such/rules.toml"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("cannot read rule file no/such/rules.toml"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let opp = std::fs::read_to_string("rules/opportunity.toml").unwrap();
    write(dir.path(), "a.toml", &opp);
    write(dir.path(), "b.toml", &opp);
    let out = plansync(&["rules", "check", dir.path().to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("both pair the CRM object Opportunity"),
        "{stderr}"
    );

    let empty = tempfile::tempdir().unwrap();
    let out = plansync(&["rules", "check", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("no rule files"));
}

#[test]
fn a_failing_case_fails_rules_test() {
    let dir = tempfile::tempdir().unwrap();
    let opp = std::fs::read_to_string("rules/opportunity.toml").unwrap();
    let broken = format!(
        "{opp}\n[[test]]\nname = \"wrong on purpose\"\nfield = \"Amount\"\nat = 2026-12-10T15:00:00Z\nfrom = \"anaplan\"\nbase = 1\nvalue = 2\nexpect = {{ action = \"write\", to = \"crm\" }}\n"
    );
    let path = write(dir.path(), "opportunity.toml", &broken);
    let out = plansync(&["rules", "test", path.to_str().unwrap()]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(
        stdout.contains("action: expected `write`, got `revert`"),
        "{stdout}"
    );
    assert!(stdout.contains("1 failed"), "{stdout}");
}

#[test]
fn explain_names_the_deciding_rule_and_why() {
    let base = [
        "rules",
        "explain",
        "--object",
        "Opportunity",
        "--field",
        "Forecast_Override__c",
        "--record",
        "StageName=Negotiation",
    ];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let out = plansync(&args);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        stdout
    };
    let mid = run(&["--at", "2026-12-10T15:00:00Z"]);
    assert!(
        mid.contains("decided by: Opportunity.Forecast_Override__c\n"),
        "{mid}"
    );
    assert!(mid.contains("on_conflict = manual"), "{mid}");

    let quarter_end = run(&["--at", "2027-01-27T15:00:00Z"]);
    assert!(
        quarter_end.contains("decided by: Opportunity.Forecast_Override__c.when.quarter_end"),
        "{quarter_end}"
    );
    assert!(
        quarter_end.contains("inside window `quarter_end`, 2027-01-25 to 2027-01-31"),
        "{quarter_end}"
    );

    let approved = run(&["--at", "2027-01-27T15:00:00Z", "--flag", "Approved=true"]);
    assert!(
        approved.contains("decided by: Opportunity.Forecast_Override__c.when.approved"),
        "{approved}"
    );
    assert!(
        approved.contains("would match, but an earlier `when` already did"),
        "{approved}"
    );

    // The blank rule of a number, and what a new item's Anaplan-owned field starts as.
    let quota = plansync(&[
        "rules",
        "explain",
        "--object",
        "Territory__c",
        "--field",
        "Annual_Quota__c",
        "--at",
        "2026-12-10T15:00:00Z",
    ]);
    let (stdout, stderr) = text(&quota);
    assert!(quota.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("new_item = hold"), "{stdout}");
    assert!(
        stdout.contains("blank = zero: a CRM null and Anaplan's blank are one value"),
        "{stdout}"
    );

    let out = plansync(&[
        "rules",
        "explain",
        "--object",
        "Opportunity",
        "--field",
        "Amont",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("no synced field `Amont`"));
}

/// Contradictions found in review: each file must be refused with the named problem.
#[test]
fn check_refuses_each_contradiction() {
    let cases = [
        (
            "allowed.toml",
            "an empty `allowed` list rejects every value",
        ),
        ("dupid.toml", "two `when`s of Opportunity.Amount are named"),
        ("dupname.toml", "is mapped twice"),
        ("hex.toml", "must be written in decimal"),
        ("weekend.toml", "does not fit in the month"),
        ("new_item.toml", "`seed` is not a valid `new_item`"),
        (
            "blank_text.toml",
            "`blank` applies only to number and boolean fields",
        ),
    ];
    for (file, message) in cases {
        let path = format!("tests/data/bad_rules/{file}");
        let out = plansync(&["rules", "check", &path]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert!(stderr.contains(message), "{file}: {stderr}");
    }
}

/// A `when` may change just the tie-breaker of an inherited `newest_wins`.
#[test]
fn a_tie_set_in_a_when_is_applied() {
    let out = plansync(&["rules", "test", "tests/data/tie_in_when.toml"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
}

/// A limit read from a rule file is kept at the largest scale; people see it as written.
#[test]
fn percentages_and_limits_print_as_written() {
    let out = plansync(&[
        "rules",
        "explain",
        "--object",
        "Opportunity",
        "--field",
        "Amount",
        "--at",
        "2027-01-27T15:00:00Z",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("  owner = crm; non-owner changes are reverted; min 0; max change 50%\n"),
        "{stdout}"
    );

    // The decision's own message, shown beside a failing case.
    let dir = tempfile::tempdir().unwrap();
    let opp = std::fs::read_to_string("rules/opportunity.toml").unwrap();
    let wrong = format!(
        "{opp}\n[[test]]\nname = \"wrong on purpose\"\nfield = \"Amount\"\nat = 2027-01-27T15:00:00Z\nfrom = \"crm\"\nbase = 1000\nvalue = 2000\nexpect = {{ action = \"write\" }}\n"
    );
    let path = write(dir.path(), "opportunity.toml", &wrong);
    let out = plansync(&["rules", "test", path.to_str().unwrap()]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(
            "(exception message: Opportunity.Amount: `2000.00` changes `1000.00` by more than 50%)"
        ),
        "{stdout}"
    );
}
