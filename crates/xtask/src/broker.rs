//! The Kafka-protocol broker: Tansu, installed with `cargo install` and run
//! on SQLite storage, plus the topics RealChat needs.

use std::{
    collections::BTreeMap,
    fs::{self, OpenOptions},
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    config::{self, Settings},
    process::{self, Launch},
    ui::{self, detail, step},
};

/// The Tansu release the topology is pinned to.
pub(crate) const TANSU_VERSION: &str = "0.6.0";

/// A Kafka topic and its partition count.
#[derive(Debug, Clone)]
pub(crate) struct Topic {
    pub(crate) name: String,
    pub(crate) partitions: u32,
}

/// Every topic RealChat uses, from the services' own table (`realchat_events::Topic`): each
/// source topic, then its dead-letter twin with as many partitions, so a record keeps its
/// partition. Partition counts bound consumer parallelism.
pub(crate) fn topics() -> Vec<Topic> {
    let names = realchat_events::Topics::with_prefix("");
    realchat_events::Topic::ALL
        .into_iter()
        .flat_map(|topic| {
            let partitions = u32::try_from(topic.default_partitions()).unwrap_or(1);
            [
                Topic {
                    name: names.name(topic),
                    partitions,
                },
                Topic {
                    name: names.dlq(topic),
                    partitions,
                },
            ]
        })
        .collect()
}

/// SQLite database of the broker, relative to its working directory (the data dir).
const STORAGE_URL: &str = "sqlite://kafka/tansu.db";

/// Returns a Tansu [`TANSU_VERSION`] binary, installing it first if there is none.
pub(crate) fn ensure_installed(settings: &Settings) -> Result<PathBuf> {
    if let Some(path) = find_installed() {
        return Ok(path);
    }
    // Two `up`s in two terminals must not compile Tansu twice.
    wait_for_other_installs();
    if let Some(path) = find_installed() {
        return Ok(path);
    }
    if let Some((path, version)) = installed().next() {
        ui::warning!(
            "{} is version {}, the topology needs {TANSU_VERSION}",
            path.display(),
            version.as_deref().unwrap_or("unknown")
        );
    }
    install(settings)?;
    find_installed().with_context(|| {
        format!(
            "`cargo install` succeeded but no tansu {TANSU_VERSION} was found in {} or on PATH",
            cargo_bin_dir().display()
        )
    })
}

/// Where `cargo install` puts binaries: `$CARGO_HOME/bin`, by default `~/.cargo/bin`.
fn cargo_bin_dir() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"));
    cargo_home.join("bin")
}

/// The first `tansu` of the right version.
fn find_installed() -> Option<PathBuf> {
    installed()
        .find(|(_, version)| version.as_deref() == Some(TANSU_VERSION))
        .map(|(path, _)| path)
}

/// Every `tansu` executable with its version, lazily: cargo's bin dir first
/// (where `cargo install` puts it, even if that is not on `PATH`), then `PATH`.
fn installed() -> impl Iterator<Item = (PathBuf, Option<String>)> {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    std::iter::once(cargo_bin_dir())
        .chain(path_dirs)
        .map(|dir| dir.join("tansu"))
        .filter(|candidate| candidate.is_file())
        .map(|candidate| {
            let version = version(&candidate);
            (candidate, version)
        })
}

/// The version `tansu --version` reports (`tansu 0.6.0`).
fn version(tansu: &Path) -> Option<String> {
    let output = Command::new(tansu)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.split_whitespace().last().map(str::to_owned)
}

/// Waits for `cargo install tansu` processes started elsewhere to finish.
fn wait_for_other_installs() {
    let installs = process::find_processes(|argv| {
        let is_cargo = argv
            .first()
            .is_some_and(|arg0| Path::new(arg0).file_name().is_some_and(|f| f == "cargo"));
        is_cargo && argv.iter().any(|a| a == "install") && argv.iter().any(|a| a == "tansu")
    });
    if installs.is_empty() {
        return;
    }
    step!(
        "Another `cargo install tansu` is running (pid {}); waiting for it to finish",
        installs
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let started = Instant::now();
    let mut last_report = Instant::now();
    while installs.iter().any(|&pid| process::is_alive(pid, "cargo")) {
        if last_report.elapsed() >= Duration::from_secs(60) {
            detail!("still waiting ({})", ui::duration(started.elapsed()));
            last_report = Instant::now();
        }
        thread::sleep(Duration::from_secs(2));
    }
    detail!("it finished after {}", ui::duration(started.elapsed()));
}

/// Compiles and installs Tansu, printing a progress line every ten crates and
/// keeping cargo's full output in `logs/tansu-install.log`.
fn install(settings: &Settings) -> Result<()> {
    let log_path = settings.log_file("tansu-install");
    step!(
        "Installing Tansu {TANSU_VERSION} with `cargo install` (once; it takes about 20 minutes on a 2-core machine)"
    );
    detail!("full output: {}", settings.display_path(&log_path));

    fs::create_dir_all(settings.logs_dir())?;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut child = Command::new(config::cargo())
        .args(["install", "tansu", "--locked", "--version", TANSU_VERSION])
        .args(["--features", "libsql"])
        // Outside the workspace, so its `.cargo/config.toml` does not apply to Tansu's build.
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `cargo install`")?;

    let started = Instant::now();
    let mut compiled = 0;
    if let Some(stderr) = child.stderr.take() {
        // Cargo reports one `Compiling <crate>` line per crate on stderr.
        for line in BufReader::new(stderr).split(b'\n') {
            let line = line?;
            log.write_all(&line)?;
            log.write_all(b"\n")?;
            if line.trim_ascii_start().starts_with(b"Compiling ") {
                compiled += 1;
                if compiled % 10 == 0 {
                    detail!(
                        "{compiled} crates compiled ({})",
                        ui::duration(started.elapsed())
                    );
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        process::print_log_excerpt(settings, "tansu-install", 30);
        bail!("`cargo install tansu` failed ({status})");
    }
    detail!(
        "installed in {} ({compiled} crates)",
        ui::duration(started.elapsed())
    );
    Ok(())
}

/// Adds the index Tansu 0.6's SQLite schema lacks: its `header` table has none, so the broker
/// scans every header ever stored for each record it fetches, and fetching slows down in
/// proportion to everything the broker holds (measured: direct messages at 300/s went from 7.8 s
/// to 73 ms end to end once this index existed). Needs the `sqlite3` command; without it the
/// broker works, only slower as it fills up.
///
/// The index is looked for first, read-only: even a `CREATE INDEX IF NOT EXISTS` that finds it
/// takes the write lock for a moment, and the broker fails whatever it is writing then ("database
/// is locked"), which left consumer groups that were rejoining it stuck.
pub(crate) fn index_headers(database: &Path) {
    let sqlite = |sql: &str| {
        Command::new("sqlite3")
            .arg(database)
            .arg(".timeout 5000")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
    };
    if let Ok(found) = sqlite(&format!(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = '{HEADER_INDEX}'"
    )) && found.status.success()
        && String::from_utf8_lossy(&found.stdout).trim() == "1"
    {
        return;
    }
    let added = sqlite(&format!(
        "CREATE INDEX IF NOT EXISTS {HEADER_INDEX} ON header (topition, offset_id)"
    ));
    match added {
        Ok(output) if output.status.success() => {}
        Ok(output) => ui::warning!(
            "could not index the broker's headers ({}); fetching slows as it fills up",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(_) => ui::warning!(
            "`sqlite3` is not installed, so the broker's headers cannot be indexed and fetching \
             slows as it fills up (install the sqlite3 package)"
        ),
    }
}

/// The index [`index_headers`] adds.
const HEADER_INDEX: &str = "realchat_header_by_record";

/// The broker's SQLite database.
pub(crate) fn database(settings: &Settings) -> PathBuf {
    settings.data_dir.join("kafka").join("tansu.db")
}

/// How to run the broker.
///
/// Its working directory is the data dir because the SQLite path in the
/// storage URL is relative to it, and because Tansu loads a `.env` file from
/// its working directory, which must not pick up a project's.
pub(crate) fn launch(settings: &Settings, tansu: &Path) -> Result<Launch> {
    fs::create_dir_all(settings.data_dir.join("kafka"))?;
    let url = format!("tcp://{}", settings.kafka_addr());
    Ok(Launch::new(tansu, &settings.data_dir)
        .args(["broker", "--listener-url", &url])
        .args(["--advertised-listener-url", &url])
        .args(["--storage-engine", STORAGE_URL])
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1"))
}

/// Creates the topics of [`topics`] that do not exist yet.
///
/// Existing topics are listed first rather than re-created, because every
/// rejected create is logged by the broker as an error, which would litter its log.
pub(crate) fn ensure_topics(settings: &Settings, tansu: &Path) -> Result<()> {
    let topics = topics();
    step!("kafka: ensuring {} topics", topics.len());
    let cli = TopicCli {
        tansu,
        broker: format!("tcp://{}", settings.kafka_addr()),
        cwd: &settings.data_dir,
    };
    let existing = cli.list()?;
    for topic in &topics {
        let outcome = match existing.get(&topic.name) {
            Some(&partitions) if partitions == topic.partitions as usize => "exists",
            Some(&partitions) => {
                // Not fixed automatically: `tansu topic delete` (0.6.0, SQLite)
                // deletes every topic, not just the named one.
                ui::warning!(
                    "topic {} has {partitions} partitions, the topology expects {}; to recreate \
                     all topics, `cargo xtask stop kafka`, delete {}, and `cargo xtask start kafka`",
                    topic.name,
                    topic.partitions,
                    settings.display_path(&settings.data_dir.join("kafka"))
                );
                "exists"
            }
            None => cli.create(topic)?,
        };
        detail!(
            "{:<26} {:>2} partitions  {outcome}",
            topic.name,
            topic.partitions
        );
    }
    Ok(())
}

/// Tansu's `topic` subcommand, pointed at the local broker.
struct TopicCli<'a> {
    tansu: &'a Path,
    broker: String,
    cwd: &'a Path,
}

impl TopicCli<'_> {
    /// Existing topics and their partition counts, retrying briefly: the
    /// broker accepts connections a moment before it serves requests.
    fn list(&self) -> Result<BTreeMap<String, usize>> {
        const ATTEMPTS: u32 = 5;
        let mut attempt = 1;
        loop {
            let (ok, stdout, stderr) = self.run(&["list"])?;
            if ok {
                return Ok(parse_topic_list(&stdout));
            }
            if attempt == ATTEMPTS {
                bail!("`tansu topic list` failed:\n{}", stderr.trim_end());
            }
            attempt += 1;
            thread::sleep(Duration::from_secs(1));
        }
    }

    /// Creates a topic; one created concurrently by someone else counts as success.
    fn create(&self, topic: &Topic) -> Result<&'static str> {
        let partitions = topic.partitions.to_string();
        let (ok, stdout, stderr) =
            self.run(&["create", &topic.name, "--partitions", &partitions])?;
        if ok {
            return Ok("created");
        }
        // Kafka's TOPIC_ALREADY_EXISTS, which Tansu logs as "Topic with this name already exists."
        let output = format!("{stdout}{stderr}");
        if output.contains("already exists") {
            return Ok("exists");
        }
        bail!(
            "`tansu topic create {}` failed:\n{}",
            topic.name,
            output.trim_end()
        )
    }

    /// Runs `tansu topic <args> --broker <url>`; returns success, stdout and stderr.
    fn run(&self, args: &[&str]) -> Result<(bool, String, String)> {
        let output = Command::new(self.tansu)
            .arg("topic")
            .args(args)
            .args(["--broker", &self.broker])
            // Tansu reports Kafka error codes through its log, at error level.
            .env("RUST_LOG", "error")
            .env("NO_COLOR", "1")
            // Tansu reads a `.env` from its working directory; keep it in the data dir.
            .current_dir(self.cwd)
            .stdin(Stdio::null())
            .output()
            .context("cannot run `tansu topic`")?;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }
}

/// Topic names and partition counts from the output of `tansu topic list`:
/// the topics of a Kafka Metadata response as JSON,
/// `[{"error_code":0,"name":"t","topic_id":[…],"is_internal":false,"partitions":[{"error_code":0,"partition_index":0,…},…]},…]`.
///
/// No JSON parser needed: Kafka topic names are limited to `[a-zA-Z0-9._-]`,
/// so a name never contains a quote, and partitions have no `name` key, so a
/// topic's partitions are the `partition_index` keys before the next `name`.
fn parse_topic_list(json: &str) -> BTreeMap<String, usize> {
    json.split(r#""name":""#)
        .skip(1)
        .filter_map(|chunk| {
            let (name, rest) = chunk.split_once('"')?;
            Some((
                name.to_owned(),
                rest.matches(r#""partition_index""#).count(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_list_output_is_parsed() {
        let json = concat!(
            r#"[{"error_code":0,"name":"realchat.users.v1","topic_id":[1,2],"is_internal":false,"#,
            r#""partitions":[{"error_code":0,"partition_index":0,"leader_id":111},"#,
            r#"{"error_code":0,"partition_index":1,"leader_id":111}]},"#,
            r#"{"error_code":0,"name":"empty","topic_id":[3],"is_internal":false,"partitions":[]}]"#,
        );
        let topics = parse_topic_list(json);
        assert_eq!(topics.get("realchat.users.v1"), Some(&2));
        assert_eq!(topics.get("empty"), Some(&0));
        assert_eq!(topics.len(), 2);
        assert!(parse_topic_list("[]").is_empty());
    }

    #[test]
    fn every_topic_has_a_dead_letter_twin_with_as_many_partitions() {
        let topics = topics();
        assert!(topics.iter().any(|t| t.name == "realchat.messages.v1"));
        for topic in &topics {
            assert!(topic.partitions > 0, "{}", topic.name);
            if let Some(source) = topic.name.strip_suffix(".dlq") {
                let source = topics.iter().find(|t| t.name == source);
                assert_eq!(source.map(|t| t.partitions), Some(topic.partitions));
            } else {
                let dlq = format!("{}.dlq", topic.name);
                assert!(
                    topics.iter().any(|t| t.name == dlq),
                    "{} has no DLQ",
                    topic.name
                );
            }
        }
    }
}
