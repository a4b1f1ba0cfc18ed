//! README's configuration table, checked against what the binaries print (`<binary> settings`):
//! every variable a service reads has a row, every row is read by someone, the "used by" column
//! names exactly the binaries that read it, and the default shown is the binary's.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, Result, bail};

use crate::service_settings::SERVICES;

/// One variable as the binaries read it: which of them, and with what default.
#[derive(Debug, Default, PartialEq, Eq)]
struct Read {
    binaries: Vec<String>,
    default: Option<String>,
}

/// Checks README.md's table against `<dir>/<binary>.json`; the error lists every difference.
pub(crate) fn check(readme: &Path, settings_dir: &Path) -> Result<()> {
    let mut read: BTreeMap<String, Read> = BTreeMap::new();
    for service in SERVICES {
        let path = settings_dir.join(format!("{service}.json"));
        let json = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for (name, default) in settings_of(&json) {
            let entry = read.entry(name).or_default();
            entry.binaries.push(service.to_owned());
            entry.default = default;
        }
    }
    let text =
        std::fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
    let problems = compare(&read, &table_rows(&text));
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "README.md's configuration table differs from what the binaries read:\n  {}",
            problems.join("\n  ")
        )
    }
}

/// `(name, default)` of every setting in one binary's `settings` JSON. The JSON is the binary's
/// own, pretty-printed by serde: one `"key": value` per line, which is all this reads.
fn settings_of(json: &str) -> Vec<(String, Option<String>)> {
    let mut settings = Vec::new();
    let mut name: Option<String> = None;
    for line in json.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("\"name\": ") {
            name = Some(unquote(value));
        } else if let Some(value) = line.strip_prefix("\"default\": ")
            && let Some(name) = name.take()
        {
            let value = value.trim_end_matches(',');
            let default = (value != "null").then(|| unquote(value));
            settings.push((name, default));
        }
    }
    settings
}

fn unquote(value: &str) -> String {
    value
        .trim_end_matches(',')
        .trim_matches('"')
        .replace("\\\"", "\"")
        .replace("\\\\", "\\")
}

/// A row of the table: the variable, its default column, and the binaries in "used by".
#[derive(Debug)]
struct Row {
    name: String,
    default: String,
    used_by: Vec<String>,
}

/// The rows of the table headed `| variable | default | used by |`.
fn table_rows(readme: &str) -> Vec<Row> {
    readme
        .lines()
        .skip_while(|line| !line.starts_with("| variable | default | used by |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            let [name, default, used_by] = cells[..] else {
                return None;
            };
            let binaries = used_by.split(':').next().unwrap_or_default();
            let used_by = if binaries == "all" {
                SERVICES.iter().map(|s| (*s).to_owned()).collect()
            } else {
                binaries.split(", ").map(str::to_owned).collect()
            };
            Some(Row {
                name: name.trim_matches('`').to_owned(),
                default: default.to_owned(),
                used_by,
            })
        })
        .collect()
}

fn compare(read: &BTreeMap<String, Read>, rows: &[Row]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, read) in read {
        let Some(row) = rows.iter().find(|row| row.name == *name) else {
            problems.push(format!(
                "{name} is read by {} but has no row",
                read.binaries.join(", ")
            ));
            continue;
        };
        let mut shown = row.used_by.clone();
        shown.sort();
        let mut binaries = read.binaries.clone();
        binaries.sort();
        if shown != binaries {
            problems.push(format!(
                "{name}: \"used by\" says {}, but {} read it",
                row.used_by.join(", "),
                read.binaries.join(", ")
            ));
        }
        // The default column starts with the value in backticks, or says "empty" or "unset".
        let expected = match read.default.as_deref() {
            None => "unset".to_owned(),
            Some("") => "empty".to_owned(),
            Some(value) => format!("`{value}`"),
        };
        if !row.default.starts_with(&expected) {
            problems.push(format!(
                "{name}: the default shown is {}, the binary's is {expected}",
                row.default
            ));
        }
    }
    for row in rows {
        if !read.contains_key(&row.name) {
            problems.push(format!("{} has a row but no binary reads it", row.name));
        }
    }
    problems
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const JSON: &str = r#"{
  "binary": "gateway",
  "settings": [
    {
      "name": "REALCHAT_GATEWAY_ADDR",
      "default": "127.0.0.1:8080",
      "secret": false,
      "help": "Where to listen"
    },
    {
      "name": "REALCHAT_GATEWAY_TLS_CERT",
      "default": null,
      "secret": false,
      "help": "A PEM file"
    }
  ]
}"#;

    fn read(binaries: &[&str], default: Option<&str>) -> Read {
        Read {
            binaries: binaries.iter().map(|b| (*b).to_owned()).collect(),
            default: default.map(str::to_owned),
        }
    }

    #[test]
    fn settings_are_read_from_the_binaries_json() {
        assert_eq!(
            settings_of(JSON),
            [
                (
                    "REALCHAT_GATEWAY_ADDR".to_owned(),
                    Some("127.0.0.1:8080".to_owned())
                ),
                ("REALCHAT_GATEWAY_TLS_CERT".to_owned(), None),
            ]
        );
    }

    #[test]
    fn a_table_that_matches_passes_and_every_kind_of_drift_is_named() {
        let readme = "text\n\n| variable | default | used by |\n|---|---|---|\n\
            | `REALCHAT_LOG` | `info` | all: log filter |\n\
            | `REALCHAT_GATEWAY_ADDR` | `127.0.0.1:8080` | gateway: the public API |\n\
            | `REALCHAT_GATEWAY_TLS_CERT` | unset | gateway |\n\nafter\n";
        let rows = table_rows(readme);
        let mut read_by = BTreeMap::new();
        read_by.insert(
            "REALCHAT_LOG".to_owned(),
            read(
                &["auth", "messaging", "profile", "delivery", "gateway"],
                Some("info"),
            ),
        );
        read_by.insert(
            "REALCHAT_GATEWAY_ADDR".to_owned(),
            read(&["gateway"], Some("127.0.0.1:8080")),
        );
        read_by.insert(
            "REALCHAT_GATEWAY_TLS_CERT".to_owned(),
            read(&["gateway"], None),
        );
        assert_eq!(compare(&read_by, &rows), Vec::<String>::new());

        read_by.insert("REALCHAT_NEW".to_owned(), read(&["auth"], Some("1")));
        read_by
            .get_mut("REALCHAT_GATEWAY_ADDR")
            .unwrap()
            .binaries
            .push("delivery".into());
        read_by
            .get_mut("REALCHAT_GATEWAY_TLS_CERT")
            .unwrap()
            .default = Some("x.pem".into());
        read_by.remove("REALCHAT_LOG");
        let problems = compare(&read_by, &rows);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].contains("REALCHAT_GATEWAY_ADDR: \"used by\" says gateway"));
        assert!(problems[1].contains("REALCHAT_GATEWAY_TLS_CERT: the default shown is unset"));
        assert!(problems[2].contains("REALCHAT_NEW is read by auth but has no row"));
        assert!(problems[3].contains("REALCHAT_LOG has a row but no binary reads it"));
    }
}
