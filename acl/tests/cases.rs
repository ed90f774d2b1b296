//! Runs every row of `tests/data/cases.txt` and reports all failing rows at once.

use tribune_acl::{Access, Authorizer, Decision, DefaultPolicy, PolicyRules, Resource};

const TABLE: &str = include_str!("data/cases.txt");
const MIN_CASES: usize = 150;

#[derive(Default)]
struct Group {
    title: String,
    policies: Vec<String>,
    management: bool,
}

enum Check {
    Access(Access),
    WritePrefix,
}

fn parse_name(token: &str) -> Result<String, String> {
    if token == "-" {
        Ok(String::new())
    } else if token.starts_with('"') {
        serde_json::from_str(token).map_err(|e| format!("bad quoted name {token}: {e}"))
    } else {
        Ok(token.to_owned())
    }
}

/// Splits a row into its five fields; the name may be a JSON string containing spaces.
fn split_row(line: &str) -> Option<[String; 5]> {
    let mut rest = line.trim();
    let mut fields: Vec<String> = Vec::new();
    while !rest.is_empty() {
        let (field, tail) = if rest.starts_with('"') {
            let end = rest.get(1..)?.find('"')? + 2;
            rest.split_at(end)
        } else {
            rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len()))
        };
        fields.push(field.to_owned());
        rest = tail.trim_start();
    }
    fields.try_into().ok()
}

fn run_row(group: &Group, line: &str) -> Result<(), String> {
    let [default, resource, access, name, expected] =
        split_row(line).ok_or_else(|| "expected 5 fields".to_owned())?;
    let default_policy = DefaultPolicy::from_name(&default).ok_or(format!("bad default {default}"))?;
    let resource = Resource::from_name(&resource).ok_or(format!("bad resource {resource}"))?;
    let check = match access.as_str() {
        "write_prefix" => Check::WritePrefix,
        other => Check::Access(Access::from_name(other).ok_or(format!("bad access {other}"))?),
    };
    let name = parse_name(&name)?;
    let expected = match expected.as_str() {
        "allow" => Decision::Allow,
        "deny" => Decision::Deny,
        other => return Err(format!("bad expected {other}")),
    };
    let authorizer = if group.management {
        Authorizer::management()
    } else {
        let parsed = group
            .policies
            .iter()
            .map(|text| PolicyRules::parse(text).map_err(|e| format!("policy {text:?} does not parse: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Authorizer::new(&parsed, default_policy)
    };
    let got = match check {
        Check::WritePrefix if resource == Resource::Key => authorizer.key_write_prefix(&name),
        Check::WritePrefix => return Err("write_prefix is for key only".to_owned()),
        Check::Access(access) => authorizer.allowed(resource, &name, access),
    };
    if got == expected {
        Ok(())
    } else {
        Err(format!("expected {expected:?}, got {got:?}"))
    }
}

#[test]
fn decision_table() {
    let mut group = Group::default();
    let mut cases = 0usize;
    let mut failures = Vec::new();
    for (index, raw) in TABLE.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(title) = line.strip_prefix("==") {
            group = Group {
                title: title.trim().to_owned(),
                ..Group::default()
            };
        } else if let Some(text) = line.strip_prefix("policy:") {
            group.policies.push(text.trim().to_owned());
        } else if let Some(text) = raw.trim_start().strip_prefix('|') {
            match group.policies.last_mut() {
                Some(policy) => {
                    policy.push('\n');
                    policy.push_str(text);
                }
                None => failures.push(format!("line {line_no}: continuation without a policy")),
            }
        } else if line == "management" {
            group.management = true;
        } else {
            cases += 1;
            if let Err(why) = run_row(&group, line) {
                failures.push(format!("line {line_no} [{}] `{line}`: {why}", group.title));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        cases >= MIN_CASES,
        "only {cases} cases in the table, want at least {MIN_CASES}"
    );
    eprintln!("{cases} ACL cases passed");
}

/// The table is only as good as its harness: a row with the wrong expectation must be reported.
#[test]
fn harness_reports_a_wrong_row() {
    let group = Group {
        policies: vec!["key \"a\" { policy = \"read\" }".to_owned()],
        ..Group::default()
    };
    assert!(run_row(&group, "deny key read a allow").is_ok());
    assert!(run_row(&group, "deny key read a deny").is_err());
    assert!(run_row(&group, "deny key bogus a deny").is_err());
}
