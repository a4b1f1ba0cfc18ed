//! Options every RealChat binary shares, and the [`Secret`] wrapper.
//!
//! Each service defines its own `clap` options struct and flattens [`CommonOptions`] into it, so
//! `--help` lists every variable with its default, and a wrong value stops the process before it
//! binds anything, naming the variable.

use std::{fmt, path::Path, str::FromStr, time::Duration};

use anyhow::Context as _;

/// Logging and lifecycle options shared by every service.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonOptions {
    /// Log filter, in `tracing` `EnvFilter` syntax (e.g. `info,realchat_auth=debug`).
    #[arg(long = "log", env = "REALCHAT_LOG", default_value = "info")]
    pub log_filter: String,

    /// Log format: `human` for people, `json` for log shippers.
    #[arg(long, env = "REALCHAT_LOG_FORMAT", default_value = "human", value_enum)]
    pub log_format: LogFormat,

    /// Seconds to drain in-flight work after SIGTERM before the process gives up and exits.
    #[arg(long, env = "REALCHAT_SHUTDOWN_GRACE_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub shutdown_grace_secs: u64,

    /// OTLP/gRPC endpoint that traces are exported to (e.g. `http://127.0.0.1:4317`); unset, none are.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl CommonOptions {
    /// The drain budget after the first shutdown signal.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines with colours on a terminal.
    Human,
    /// One JSON object per line.
    Json,
}

/// A value that must never reach a log line or a `Debug` print (database URLs with passwords,
/// keys). Read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The wrapped value, for the one place that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<T: FromStr> FromStr for Secret<T> {
    type Err = T::Err;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Secret)
    }
}

/// A secret given in its variable or, as container platforms mount secrets, in a file named by
/// `<variable>_FILE`, which wins when both are set. The file's content is the value, without its
/// trailing line break. Errors name the variable and the file, never the value.
pub fn secret_or_file(
    name: &str,
    value: Option<&Secret<String>>,
    file: Option<&Path>,
) -> anyhow::Result<Option<Secret<String>>> {
    let Some(file) = file else {
        return Ok(value.cloned());
    };
    let content = std::fs::read_to_string(file)
        .with_context(|| format!("{name}_FILE: cannot read {}", file.display()))?;
    let content = content.trim_end_matches(['\n', '\r']);
    if content.is_empty() {
        anyhow::bail!("{name}_FILE: {} is empty", file.display());
    }
    Ok(Some(Secret::new(content.to_owned())))
}

/// The options `O` declares, each at the default its attribute gives (or unset), whatever the
/// environment holds: what tests and embedders start from, so that a default is written once,
/// where the option is declared.
///
/// # Panics
/// When `O` declares an option that is required: a bug in the declaration.
pub fn defaults<O: clap::Args + clap::FromArgMatches>() -> O {
    let mut command = O::augment_args(clap::Command::new("defaults"));
    let ids: Vec<clap::Id> = command
        .get_arguments()
        .map(|a| a.get_id().clone())
        .collect();
    for id in ids {
        command = command.mut_arg(id, |arg| arg.env(None::<&'static str>));
    }
    command
        .try_get_matches_from(["defaults"])
        .and_then(|matches| O::from_arg_matches(&matches))
        .unwrap_or_else(|error| panic!("the options' defaults do not parse: {error}"))
}

/// Parses a duration given in whole seconds, for `clap` value parsers.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("expected whole seconds: {e}"))
}

/// Parses a duration given in milliseconds, for `clap` value parsers.
pub fn parse_millis(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("expected whole milliseconds: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_never_prints_the_value() {
        let secret = Secret::new("postgres://user:hunter2@db/auth".to_string());
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert!(secret.expose().contains("hunter2"));
    }

    #[test]
    fn a_secret_file_wins_and_loses_its_line_break_and_errors_keep_the_value_out()
    -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("realchat-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("password");
        std::fs::write(&file, "s3cret\n")?;
        let given = Secret::new("from-the-variable".to_owned());

        let from_file = secret_or_file("REALCHAT_X", Some(&given), Some(&file))?;
        assert_eq!(
            from_file.as_ref().map(|s| s.expose().as_str()),
            Some("s3cret")
        );
        let from_variable = secret_or_file("REALCHAT_X", Some(&given), None)?;
        assert_eq!(from_variable, Some(given));
        assert_eq!(secret_or_file("REALCHAT_X", None, None)?, None);

        std::fs::write(&file, "\n")?;
        let empty = secret_or_file("REALCHAT_X", None, Some(&file));
        assert!(
            empty.is_err_and(|e| format!("{e:#}").contains("REALCHAT_X_FILE")),
            "an empty file is refused, naming the variable"
        );
        let missing = secret_or_file("REALCHAT_X", None, Some(&dir.join("absent")));
        assert!(missing.is_err_and(|e| format!("{e:#}").contains("absent")));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn durations_parse_and_reject_garbage() {
        assert_eq!(parse_secs("15"), Ok(Duration::from_secs(15)));
        assert!(parse_secs("15s").is_err());
        assert_eq!(parse_millis("250"), Ok(Duration::from_millis(250)));
    }
}
