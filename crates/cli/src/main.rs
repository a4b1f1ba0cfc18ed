//! `realchat`: chat from a terminal.
//!
//! ```sh
//! realchat register alice && realchat login alice      # asks nothing: the password is an argument or REALCHAT_PASSWORD
//! realchat open bob                                     # prints the conversation id
//! realchat send <conversation> "hello bob"
//! realchat tail                                          # live, every conversation, resumes after reconnects
//! ```
//!
//! The login (tokens and server URL) is kept in `$XDG_CONFIG_HOME/realchat/session.json`
//! (`~/.config/realchat/session.json`), readable only by the user. `--json` prints one JSON value
//! per result (one per line for `tail`) for scripts.

use std::{collections::HashMap, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use realchat_client::{Client, Event, Message, Socket, TokenStore, Tokens};
use serde::{Deserialize, Serialize};

/// Chat on a RealChat server from the terminal.
#[derive(Debug, Parser)]
#[command(name = "realchat", version, about)]
struct Cli {
    /// The server's public URL.
    #[arg(long, env = "REALCHAT_URL", global = true)]
    url: Option<String>,
    /// PEM certificates to trust besides the system's (a private CA, a self-signed server).
    #[arg(long, env = "REALCHAT_CA_CERT", global = true)]
    ca_cert: Option<std::path::PathBuf>,
    /// Print JSON for scripts instead of lines for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an account.
    Register {
        username: String,
        #[arg(long, env = "REALCHAT_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Log in and keep the session in the config directory.
    Login {
        username: String,
        #[arg(long, env = "REALCHAT_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Log out and forget the session.
    Logout,
    /// Who is logged in.
    Whoami,
    /// Find people by username prefix.
    Users {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Your conversations, most recent first.
    Conversations,
    /// The direct conversation with someone (by username or user id); prints its id.
    Open { user: String },
    /// Send a message.
    Send { conversation: String, text: String },
    /// The newest messages of a conversation, oldest first.
    History {
        conversation: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Live messages (of one conversation, or all), resuming after reconnects.
    Tail { conversation: Option<String> },
}

/// What is kept between runs.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    url: String,
    username: String,
    tokens: Tokens,
}

const DEFAULT_URL: &str = "http://127.0.0.1:8080";

fn session_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".config"),
    };
    Ok(base.join("realchat").join("session.json"))
}

fn load() -> anyhow::Result<Saved> {
    let path = session_path()?;
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "not logged in (no {}): run `realchat login`",
            path.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is damaged: log in again", path.display()))
}

/// Writes the session: to a new file readable only by the user from the start, then renamed
/// over the old one, so another `realchat` reading it never sees half a file.
fn save(saved: &Saved) -> anyhow::Result<()> {
    use std::io::Write as _;

    let path = session_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = path.with_extension(format!("json.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(&partial)
        .with_context(|| format!("writing {}", partial.display()))?;
    file.write_all(&serde_json::to_vec_pretty(saved)?)?;
    file.sync_all()?;
    std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A client of `base`, trusting `ca_cert` too when given.
fn client(base: &str, ca_cert: Option<&std::path::Path>) -> anyhow::Result<Client> {
    Ok(match ca_cert {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Client::with_root_certificates(base, &pem)?
        }
        None => Client::new(base),
    })
}

/// The session file as the client's token store. Every `realchat` running on it (a `tail` in one
/// terminal, `send`s in another) saves a renewed pair at once, whatever the command does next,
/// and takes the pair another one renewed instead of presenting its own spent refresh token,
/// which would end the login.
struct SessionFile {
    url: String,
    username: String,
}

impl TokenStore for SessionFile {
    fn load(&self) -> Option<Tokens> {
        load()
            .ok()
            .filter(|saved| saved.username == self.username)
            .map(|saved| saved.tokens)
    }

    fn save(&self, tokens: &Tokens) {
        let saved = Saved {
            url: self.url.clone(),
            username: self.username.clone(),
            tokens: tokens.clone(),
        };
        if let Err(error) = save(&saved) {
            eprintln!("warning: the renewed login could not be saved: {error:#}");
        }
    }

    /// An exclusive lock on `session.json.lock` beside the session, held while a renewal reads,
    /// refreshes and saves. Without a lock file (an unwritable directory) nothing is excluded.
    fn exclusive(&self) -> Box<dyn Send> {
        let lock = session_path().ok().and_then(|path| {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path.with_extension("json.lock"))
                .ok()?;
            file.lock().ok()?;
            Some(file)
        });
        Box::new(lock)
    }
}

/// A client on the saved session.
fn logged_in(url: Option<&str>, ca_cert: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let saved = load()?;
    let client = client(url.unwrap_or(&saved.url), ca_cert)?;
    client.set_tokens(saved.tokens.clone());
    let Saved { url, username, .. } = saved;
    client.keep_tokens_in(SessionFile { url, username });
    Ok(client)
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// `#3 alice: hello` (with the conversation when tailing several).
fn line(message: &Message, names: &HashMap<String, String>, with_conversation: bool) -> String {
    let sender = names
        .get(&message.sender_id)
        .cloned()
        .unwrap_or_else(|| message.sender_id.chars().take(8).collect());
    let prefix = if with_conversation {
        let id = &message.conversation_id;
        let tail: String = id
            .chars()
            .skip(id.chars().count().saturating_sub(6))
            .collect();
        format!("[{tail}] ")
    } else {
        String::new()
    };
    format!("{prefix}#{} {sender}: {}", message.seq, message.body)
}

async fn name_of(client: &Client, names: &mut HashMap<String, String>, user_id: &str) {
    if names.contains_key(user_id) {
        return;
    }
    if let Ok(profile) = client.profile(user_id).await {
        names.insert(user_id.to_owned(), profile.username);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let url = cli.url.as_deref();
    let ca_cert = cli.ca_cert.as_deref();
    match cli.command {
        Command::Register { username, password } => {
            let client = client(url.unwrap_or(DEFAULT_URL), ca_cert)?;
            let user = client.register(&username, &password).await?;
            if cli.json {
                print_json(
                    &serde_json::json!({"user_id": user.user_id, "username": user.username}),
                )?;
            } else {
                println!("registered {} ({})", user.username, user.user_id);
            }
        }
        Command::Login { username, password } => {
            let base = url.unwrap_or(DEFAULT_URL);
            let client = client(base, ca_cert)?;
            let tokens = client.login(&username, &password).await?;
            save(&Saved {
                url: base.to_owned(),
                username: username.clone(),
                tokens: tokens.clone(),
            })?;
            if cli.json {
                print_json(&serde_json::json!({"user_id": tokens.user_id, "username": username}))?;
            } else {
                println!("logged in as {username}");
            }
        }
        Command::Logout => {
            if let Ok(client) = logged_in(url, ca_cert) {
                let _ = client.logout().await;
            }
            let _ = std::fs::remove_file(session_path()?);
            if !cli.json {
                println!("logged out");
            }
        }
        Command::Whoami => {
            let client = logged_in(url, ca_cert)?;
            let me = client.me().await?;
            if cli.json {
                print_json(
                    &serde_json::json!({"user_id": me.user_id, "username": me.username, "url": client.base()}),
                )?;
            } else {
                println!("{} ({}) on {}", me.username, me.user_id, client.base());
            }
        }
        Command::Users { prefix, limit } => {
            let client = logged_in(url, ca_cert)?;
            let users = client.search_users(&prefix, limit).await?;
            for user in &users {
                if cli.json {
                    print_json(
                        &serde_json::json!({"user_id": user.user_id, "username": user.username, "display_name": user.display_name}),
                    )?;
                } else {
                    println!(
                        "{:<32} {:<24} {}",
                        user.username, user.display_name, user.user_id
                    );
                }
            }
        }
        Command::Conversations => {
            let client = logged_in(url, ca_cert)?;
            for summary in client.conversations().await? {
                let c = &summary.conversation;
                if cli.json {
                    print_json(
                        &serde_json::json!({"id": c.id, "kind": c.kind, "title": c.title,
                        "member_ids": c.member_ids, "last_seq": c.last_seq, "unread_count": summary.unread_count}),
                    )?;
                } else {
                    let title = c.title.clone().unwrap_or_else(|| c.kind.clone());
                    println!(
                        "{}  {:<24} {} messages, {} unread",
                        c.id, title, c.last_seq, summary.unread_count
                    );
                }
            }
        }
        Command::Open { user } => {
            let client = logged_in(url, ca_cert)?;
            let user_id = if user.parse::<uuid_like::Id>().is_ok() {
                user.clone()
            } else {
                let found = client.search_users(&user, 100).await?;
                match found
                    .into_iter()
                    .find(|p| p.username == user.to_lowercase())
                {
                    Some(profile) => profile.user_id,
                    None => bail!("no user named {user}"),
                }
            };
            let conversation = client.open_direct(&user_id).await?;
            if cli.json {
                print_json(
                    &serde_json::json!({"id": conversation.id, "member_ids": conversation.member_ids}),
                )?;
            } else {
                println!("{}", conversation.id);
            }
        }
        Command::Send { conversation, text } => {
            let client = logged_in(url, ca_cert)?;
            let message = client.send(&conversation, &text).await?;
            if cli.json {
                print_json(&message)?;
            } else {
                println!("sent #{}", message.seq);
            }
        }
        Command::History {
            conversation,
            limit,
        } => {
            let client = logged_in(url, ca_cert)?;
            let mut messages = client.latest(&conversation, limit).await?;
            messages.reverse();
            let mut names = HashMap::new();
            for message in &messages {
                if cli.json {
                    print_json(message)?;
                } else {
                    name_of(&client, &mut names, &message.sender_id).await;
                    println!("{}", line(message, &names, false));
                }
            }
        }
        Command::Tail { conversation } => {
            let client = logged_in(url, ca_cert)?;
            let mut socket = Socket::connect(&client).await?;
            // Live from now: each conversation resumes from its newest message, so what is sent
            // while the socket reconnects still comes. (One created later is tracked from its
            // first message.)
            match &conversation {
                Some(conversation) => {
                    let newest = client.latest(conversation, 1).await?;
                    socket.track(conversation, newest.first().map_or(0, |m| m.seq))?;
                }
                None => {
                    for summary in client.conversations().await? {
                        let c = &summary.conversation;
                        socket.track(&c.id, c.last_seq)?;
                    }
                }
            }
            let mut names = HashMap::new();
            while let Some(event) = socket.next().await {
                match event {
                    Event::Message(message) => {
                        if conversation
                            .as_ref()
                            .is_some_and(|c| *c != message.conversation_id)
                        {
                            continue;
                        }
                        if cli.json {
                            print_json(&message)?;
                        } else {
                            name_of(&client, &mut names, &message.sender_id).await;
                            println!("{}", line(&message, &names, conversation.is_none()));
                        }
                    }
                    Event::Gap {
                        conversation_id,
                        expected,
                        got,
                    } => {
                        eprintln!("gap in {conversation_id}: expected #{expected}, got #{got}");
                    }
                    Event::Error { code, message } => eprintln!("refused: {code}: {message}"),
                    Event::Disconnected { code } if !cli.json => {
                        eprintln!(
                            "(disconnected{}; reconnecting)",
                            code.map(|c| format!(", {c}")).unwrap_or_default()
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Tells a user id from a username without pulling in a UUID parser.
mod uuid_like {
    /// A string shaped like a canonical UUID.
    pub(crate) struct Id;

    impl std::str::FromStr for Id {
        type Err = ();

        fn from_str(s: &str) -> Result<Self, ()> {
            let shaped = s.len() == 36
                && s.char_indices().all(|(i, c)| {
                    if [8, 13, 18, 23].contains(&i) {
                        c == '-'
                    } else {
                        c.is_ascii_hexdigit()
                    }
                });
            if shaped { Ok(Id) } else { Err(()) }
        }
    }
}
