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
        (
            "max_length.toml",
            "`max_length` applies only to text fields",
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

/// The words of a rule file a typo can land in: runs of three or more letters (keys, section
/// names, values, words inside strings), outside comments, as byte ranges.
fn typo_targets(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let mut in_string = false;
        let mut start = None;
        for (i, c) in line.char_indices() {
            if c.is_ascii_alphabetic() || c == '_' {
                start.get_or_insert(i);
                continue;
            }
            if let Some(s) = start.take()
                && i - s >= 3
            {
                out.push(offset + s..offset + i);
            }
            match c {
                '"' => in_string = !in_string,
                '#' if !in_string => break,
                _ => {}
            }
        }
        offset += line.len();
    }
    out
}

/// Three one-character typos of `word`: a letter dropped, two swapped, one replaced.
fn typos(word: &str) -> Vec<String> {
    let b = word.as_bytes();
    let mid = b.len() / 2;
    let mut dropped = b.to_vec();
    dropped.remove(mid);
    let mut swapped = b.to_vec();
    swapped.swap(mid - 1, mid);
    let mut replaced = b.to_vec();
    let last = replaced.len() - 1;
    replaced[last] = if replaced[last] == b'x' { b'q' } else { b'x' };
    [dropped, swapped, replaced]
        .into_iter()
        .filter(|t| t != b)
        .map(|t| String::from_utf8(t).expect("ASCII"))
        .collect()
}

/// One typo in a shipped rule file gives at most one error: its root, never a cascade of
/// "missing" keys or of the `[[test]]` cases that name what the typo broke. Every word of
/// every shipped file, with three typos each.
#[test]
fn one_typo_gives_at_most_one_error() {
    let mut cascades = Vec::new();
    let mut tried = 0;
    for file in ["opportunity.toml", "territory.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("rules")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            plansync::rules::compile::compile_file(&path, &text).is_ok(),
            "{file} compiles as shipped"
        );
        for range in typo_targets(&text) {
            let word = &text[range.clone()];
            for typo in typos(word) {
                tried += 1;
                let changed = format!("{}{typo}{}", &text[..range.start], &text[range.end..]);
                if let Err(e) = plansync::rules::compile::compile_file(&path, &changed)
                    && e.problems.len() > 1
                {
                    let line = text[..range.start].lines().count();
                    cascades.push(format!(
                        "{file}:{line}: `{word}` → `{typo}`: {:?}",
                        e.one_line_each()
                    ));
                }
            }
        }
    }
    assert!(tried > 500, "{tried} typos tried");
    assert!(
        cascades.is_empty(),
        "{} of {tried} typos gave more than one error:\n{}",
        cascades.len(),
        cascades.join("\n")
    );
}

/// The two typos a new user met: a bad `owner` value was also reported as a missing owner,
/// and a misspelt CRM field name as one error per test case naming the field. Each is now one
/// error, with the cases said to be not run, or the other uses counted.
#[test]
fn a_typo_is_one_error_that_says_what_it_held_back() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/opportunity.toml"),
    )
    .unwrap();

    let bad_owner = shipped.replacen("owner = \"crm\"", "owner = \"crmm\"", 1);
    let path = write(dir.path(), "opportunity.toml", &bad_owner);
    let out = plansync(&["rules", "check", path.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("`crmm` is not a valid `owner`"), "{stderr}");
    assert!(stderr.contains("did you mean `crm`?"), "{stderr}");
    assert!(!stderr.contains("has no `owner`"), "{stderr}");
    assert!(
        stderr.contains(
            "has 1 error; its 13 [[test]] cases were not run, as the file did not compile"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("\n1 error in rule files"), "{stderr}");

    let bad_field = shipped.replacen("crm = \"Amount\"", "crm = \"Amuont\"", 1);
    let path = write(dir.path(), "opportunity.toml", &bad_field);
    let out = plansync(&["rules", "test", path.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stderr.matches("`Amount` is not a mapped field").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("`Amount` is named here and in 3 more places"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `Amuont`?"), "{stderr}");
    assert!(stderr.contains("`Amuont` is mapped here"), "{stderr}");
}
