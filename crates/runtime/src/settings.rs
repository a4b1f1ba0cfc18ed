//! The settings a binary reads, as data: `<binary> settings` prints them as JSON.
//!
//! Packaging (the NixOS module, docker-compose, the Terraform task definitions) and the README's
//! configuration table are checked against this list, so it is made from the same `clap`
//! definitions that parse the environment: a setting added to a service's options appears here
//! without anyone writing it down twice.

use std::io::Write as _;

use clap::CommandFactory;
use serde::Serialize;

/// One environment variable a binary reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// The variable, e.g. `REALCHAT_MESSAGING_GRPC_ADDR`.
    pub name: String,
    /// Its default as the binary would parse it, or `None` when it has none.
    pub default: Option<String>,
    /// Whether its value must never be shown (database URLs with passwords, keys).
    pub secret: bool,
    /// One line of meaning.
    pub help: String,
}

/// Every setting a binary reads.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The binary's name.
    pub binary: String,
    /// Its settings, ordered by name.
    pub settings: Vec<Setting>,
}

/// The settings behind every `env` attribute of `command` and its subcommands' shared options.
pub fn of(command: &clap::Command) -> Settings {
    let mut settings: Vec<Setting> = command
        .get_arguments()
        .filter_map(|arg| {
            let name = arg.get_env()?.to_string_lossy().into_owned();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let help = arg
                .get_help()
                .map(|h| first_sentence(&h.to_string()))
                .unwrap_or_default();
            Some(Setting {
                name,
                default: (!defaults.is_empty()).then(|| defaults.join(",")),
                secret: arg.is_hide_env_values_set(),
                help,
            })
        })
        .collect();
    settings.sort_by(|a, b| a.name.cmp(&b.name));
    settings.dedup_by(|a, b| a.name == b.name);
    Settings {
        binary: command.get_name().to_owned(),
        settings,
    }
}

/// When the first argument is `settings`, prints the settings of `C` as JSON and exits; call
/// first thing in `main`, before the environment is parsed (a wrong value elsewhere must not
/// hide the list).
pub fn print_if_asked<C: CommandFactory>() {
    print_if_asked_for(&C::command());
}

/// [`print_if_asked`] for a command built at run time.
pub fn print_if_asked_for(command: &clap::Command) {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "settings")
    {
        let settings = of(command);
        let printed = serde_json::to_string_pretty(&settings)
            .map_err(std::io::Error::from)
            .and_then(|json| writeln!(std::io::stdout(), "{json}"));
        match printed {
            // A reader that stopped early (`| head`) is not an error of ours.
            Ok(()) => std::process::exit(0),
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
            Err(error) => {
                eprintln!("cannot print the settings: {error}");
                std::process::exit(1);
            }
        }
    }
}

/// The help text up to its first line break: the one line a table can hold. (clap has
/// already dropped the summary's closing period.)
fn first_sentence(help: &str) -> String {
    help.lines().next().unwrap_or_default().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    #[command(name = "example")]
    struct Example {
        /// Where to listen.
        #[arg(long, env = "REALCHAT_EXAMPLE_ADDR", default_value = "127.0.0.1:1")]
        addr: String,
        /// The database.
        ///
        /// More words that are not the summary.
        #[arg(long, env = "REALCHAT_EXAMPLE_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Not a setting: no variable.
        #[arg(long)]
        verbose: bool,
    }

    #[test]
    fn settings_list_every_variable_with_default_secrecy_and_one_line() {
        let settings = of(&Example::command());
        assert_eq!(settings.binary, "example");
        assert_eq!(
            settings.settings,
            vec![
                Setting {
                    name: "REALCHAT_EXAMPLE_ADDR".into(),
                    default: Some("127.0.0.1:1".into()),
                    secret: false,
                    help: "Where to listen".into(),
                },
                Setting {
                    name: "REALCHAT_EXAMPLE_DATABASE_URL".into(),
                    default: None,
                    secret: true,
                    help: "The database".into(),
                },
            ]
        );
    }
}
