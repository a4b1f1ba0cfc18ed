//! `realchat` as people use it: two terminals, one tailing, one sending, against the real
//! services (auth, messaging, profile, a delivery replica and the gateway in process).

#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use test_support::TestApp;
use tokio::{
    io::{AsyncBufReadExt as _, BufReader, Lines},
    process::{Child, ChildStdout},
};

/// Runs `realchat` with its own config directory (one per person).
fn realchat(app: &TestApp, home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_realchat"))
        .args(args)
        .env("REALCHAT_URL", &app.base)
        .env("XDG_CONFIG_HOME", home)
        .env("REALCHAT_PASSWORD", "correct horse battery")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .trim()
        .to_owned()
}

/// Alice and Bob, each registered and logged in with a config directory of their own.
struct Two {
    dir: std::path::PathBuf,
    alice_home: std::path::PathBuf,
    bob_home: std::path::PathBuf,
    alice: String,
    bob: String,
}

fn alice_and_bob(app: &TestApp) -> Two {
    let dir = std::env::temp_dir().join(test_support::unique("realchat-cli-"));
    let (alice_home, bob_home) = (dir.join("alice"), dir.join("bob"));
    let (alice, bob) = (test_support::unique("a_"), test_support::unique("b_"));
    for (home, name) in [(&alice_home, &alice), (&bob_home, &bob)] {
        stdout(&realchat(app, home, &["register", name]));
        assert!(stdout(&realchat(app, home, &["login", name])).contains(name.as_str()));
    }
    Two {
        dir,
        alice_home,
        bob_home,
        alice,
        bob,
    }
}

/// Alice opens a chat with Bob by name, once Bob's profile exists (a moment after registration).
async fn open_chat(app: &TestApp, two: &Two) -> String {
    test_support::eventually(
        "alice to open a chat with bob",
        Duration::from_secs(20),
        || {
            let output = realchat(app, &two.alice_home, &["open", &two.bob]);
            async move {
                output
                    .status
                    .success()
                    .then(|| String::from_utf8(output.stdout).unwrap().trim().to_owned())
            }
        },
    )
    .await
}

/// Services whose access tokens live one second (so sockets are closed for an expired token,
/// and logins renewed, every second), Alice and Bob, and their chat.
async fn chat_on_one_second_tokens() -> (TestApp, Two, String) {
    let app = TestApp::builder()
        .auth(|o| o.access_token_ttl_secs = 1)
        .gateway(|o| o.token_leeway_secs = 0)
        .profile()
        .delivery_replicas(1)
        .spawn()
        .await;
    let two = alice_and_bob(&app);
    let conversation = open_chat(&app, &two).await;
    (app, two, conversation)
}

/// `realchat tail --json` in `home`, and its lines.
fn tail(app: &TestApp, home: &Path) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_realchat"))
        .args(["tail", "--json"])
        .env("REALCHAT_URL", &app.base)
        .env("XDG_CONFIG_HOME", home)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    (tail, lines)
}

/// The next message `tail` printed.
async fn next_printed(lines: &mut Lines<BufReader<ChildStdout>>) -> serde_json::Value {
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("tail printed nothing")
        .unwrap()
        .expect("tail ended");
    serde_json::from_str(&line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_from_two_terminals() {
    let app = TestApp::builder()
        .profile()
        .delivery_replicas(1)
        .spawn()
        .await;
    let two = alice_and_bob(&app);
    let Two {
        dir,
        alice_home,
        bob_home,
        alice,
        ..
    } = &two;
    assert!(stdout(&realchat(&app, alice_home, &["whoami"])).starts_with(alice.as_str()));
    // The session file is the user's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(alice_home.join("realchat/session.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }

    let conversation = open_chat(&app, &two).await;

    // Bob tails in one terminal...
    let (_tail, mut lines) = tail(&app, bob_home);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // ...Alice sends in the other.
    for text in ["hello bob", "second"] {
        assert!(
            stdout(&realchat(&app, alice_home, &["send", &conversation, text]))
                .starts_with("sent #")
        );
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let message = next_printed(&mut lines).await;
        seen.push(message["body"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, ["hello bob", "second"]);

    let history = stdout(&realchat(&app, bob_home, &["history", &conversation]));
    assert_eq!(
        history.lines().collect::<Vec<_>>(),
        [
            format!("#1 {alice}: hello bob"),
            format!("#2 {alice}: second")
        ]
    );
    assert!(stdout(&realchat(&app, bob_home, &["conversations"])).contains(&conversation));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_fails_after_a_refresh_keeps_the_renewed_login() {
    let app = TestApp::builder()
        .auth(|o| o.access_token_ttl_secs = 1)
        .gateway(|o| o.token_leeway_secs = 0)
        .spawn()
        .await;
    let home = std::env::temp_dir().join(test_support::unique("realchat-cli-"));
    let name = test_support::unique("r_");
    stdout(&realchat(&app, &home, &["register", &name]));
    stdout(&realchat(&app, &home, &["login", &name]));
    let session = || std::fs::read_to_string(home.join("realchat/session.json")).unwrap();
    let first = session();
    // The access token expires; `send` refreshes it, then fails on a conversation that does not
    // exist. The refresh spent the saved refresh token, so the new pair must be on disk.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let missing = "00000000-0000-4000-8000-000000000000";
    let failed = realchat(&app, &home, &["send", missing, "hello"]);
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("not_found"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    assert_ne!(session(), first, "the renewed login was saved");
    // And it works: the next command, after another expiry, refreshes with it.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(stdout(&realchat(&app, &home, &["whoami"])).starts_with(name.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_and_other_commands_share_one_login_through_its_renewals() {
    let (app, two, conversation) = chat_on_one_second_tokens().await;
    let (bob, bob_home) = (&two.bob, &two.bob_home);

    // Bob tails in one terminal...
    let (tail, mut lines) = tail(&app, bob_home);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ...and, while it is held still past the token's expiry, runs a command in another, which
    // renews the login and spends the refresh token tail holds.
    let signal = |name: &str| {
        let pid = tail.id().unwrap().to_string();
        assert!(
            Command::new("kill")
                .args([name, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(stdout(&realchat(&app, bob_home, &["whoami"])).starts_with(bob.as_str()));
    // Tail then finds its socket closed for the expired token (1008) and renews to reconnect:
    // it must take the pair the command saved, since presenting its own would end the login.
    signal("-CONT");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stdout(&realchat(
        &app,
        &two.alice_home,
        &["send", &conversation, "still there?"],
    ));
    // (Had its login been revoked, tail would have ended instead.)
    assert_eq!(next_printed(&mut lines).await["body"], "still there?");
    assert!(stdout(&realchat(&app, bob_home, &["whoami"])).starts_with(bob.as_str()));
    let _ = std::fs::remove_dir_all(&two.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tails_on_one_login_renew_it_in_turn_not_both_at_once() {
    let (app, two, conversation) = chat_on_one_second_tokens().await;
    // Two tails start from the same saved pair, so their tokens expire together and the server
    // closes both sockets (1008) at once, every second: each time, both renew. Presenting the same
    // refresh token twice would end the login; the session file's lock makes them take turns.
    let (_first, mut first) = tail(&app, &two.bob_home);
    let (_second, mut second) = tail(&app, &two.bob_home);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    stdout(&realchat(
        &app,
        &two.alice_home,
        &["send", &conversation, "to both"],
    ));
    for lines in [&mut first, &mut second] {
        assert_eq!(next_printed(lines).await["body"], "to both");
    }
    assert!(stdout(&realchat(&app, &two.bob_home, &["whoami"])).starts_with(two.bob.as_str()));
    let _ = std::fs::remove_dir_all(&two.dir);
}
