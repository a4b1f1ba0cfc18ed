//! Detached processes: spawning, pid files, liveness, stopping and log files.
//!
//! Components must outlive the `cargo xtask` invocation that started them, so
//! they run in their own process group with stdin closed and output appended
//! to `logs/<name>.log`; `run/<name>.pid` is the only link back to them.
//! Liveness comes from `/proc`, which makes this module Linux-specific.

use std::{
    ffi::OsString,
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};

use crate::config::Settings;

/// How long a process gets to shut down after SIGTERM before it is killed.
const GRACE_PERIOD: Duration = Duration::from_secs(15);
/// How often liveness is re-checked while waiting for a process to exit.
const POLL: Duration = Duration::from_millis(100);

/// A program to run, with the arguments, environment and working directory it needs.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    program: PathBuf,
    args: Vec<OsString>,
    /// Added to (or overriding) the environment xtask itself runs with.
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

impl Launch {
    /// A launch of `program` in `cwd` with no arguments and no extra environment.
    pub(crate) fn new(program: impl Into<PathBuf>, cwd: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: cwd.into(),
        }
    }

    /// Appends arguments.
    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets one environment variable.
    pub(crate) fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets environment variables.
    pub(crate) fn envs(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(vars);
        self
    }

    /// The command line, for log headers.
    fn display(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|part| match part.to_string_lossy() {
                // Make empty arguments (redis `--save ""`) visible.
                text if text.is_empty() => "\"\"".to_owned(),
                text => text.into_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null());
        command
    }
}

/// Starts `launch` detached from xtask, records its pid file and returns the pid.
pub(crate) fn spawn_detached(settings: &Settings, name: &str, launch: &Launch) -> Result<u32> {
    fs::create_dir_all(settings.run_dir())?;
    let log = open_log(settings, name, &format!("starting: {}", launch.display()))?;
    let child = launch
        .command()
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: Ctrl-C in this terminal must not reach it, and it
        // keeps running after xtask exits.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", launch.program.display()))?;
    let pid = child.id();
    let pid_file = settings.pid_file(name);
    fs::write(&pid_file, format!("{pid}\n"))
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    Ok(pid)
}

/// Runs a one-off task (e.g. `auth migrate`) to completion with its output
/// appended to `name`'s log, killing it if it takes longer than `timeout`.
pub(crate) fn run_logged(
    settings: &Settings,
    name: &str,
    launch: &Launch,
    timeout: Duration,
) -> Result<ExitStatus> {
    let log = open_log(settings, name, &format!("running: {}", launch.display()))?;
    let mut child = launch
        .command()
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot run {}", launch.program.display()))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            bail!(
                "`{}` did not finish within {}s",
                launch.display(),
                timeout.as_secs()
            );
        }
        thread::sleep(POLL);
    }
}

/// Opens `logs/<name>.log` for appending and writes a timestamped header line,
/// so runs of the same component are easy to tell apart.
fn open_log(settings: &Settings, name: &str, header: &str) -> Result<File> {
    let path = settings.log_file(name);
    fs::create_dir_all(settings.logs_dir())?;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(
        log,
        "---- {} xtask {header}",
        utc_timestamp(SystemTime::now())
    )?;
    Ok(log)
}

/// The pid recorded for `name`, if that process is alive and still runs `process_name`.
pub(crate) fn running_pid(settings: &Settings, name: &str, process_name: &str) -> Option<u32> {
    let text = fs::read_to_string(settings.pid_file(name)).ok()?;
    let pid = text.trim().parse().ok()?;
    is_alive(pid, process_name).then_some(pid)
}

/// Forgets `name`'s pid file (its process is gone).
pub(crate) fn clear_pid(settings: &Settings, name: &str) -> Result<()> {
    match fs::remove_file(settings.pid_file(name)) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err.into()),
        _ => Ok(()),
    }
}

/// Names with a pid file in `run/`, whatever their state.
pub(crate) fn recorded_names(settings: &Settings) -> Vec<String> {
    let Ok(entries) = fs::read_dir(settings.run_dir()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| {
            let file_name = entry.ok()?.file_name().into_string().ok()?;
            file_name.strip_suffix(".pid").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// Whether `pid` exists, is not a zombie, and runs `process_name`.
///
/// Checking the name guards against pid reuse: after a reboot, a stale pid file
/// may point at an unrelated process that must not be reported, or signalled.
pub(crate) fn is_alive(pid: u32, process_name: &str) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) else {
        return false;
    };
    // `pid (comm) S …`: the state follows the last `)`, since comm may contain one.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, None | Some('Z' | 'X')) {
        return false;
    }
    // The kernel keeps the first 15 bytes of the executable's name.
    let expected = &process_name.as_bytes()[..process_name.len().min(15)];
    fs::read(proc_dir.join("comm"))
        .is_ok_and(|comm| comm.strip_suffix(b"\n").unwrap_or(&comm) == expected)
}

/// The executable a process runs; ends in ` (deleted)` once the file was replaced.
pub(crate) fn executable(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// The first executable file called `name` in a `PATH` directory.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Pids of other processes whose command line (argv) satisfies `matches`.
pub(crate) fn find_processes(matches: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let argv: Vec<String> = cmdline
                    .split(|&byte| byte == 0)
                    .filter(|arg| !arg.is_empty())
                    .map(|arg| String::from_utf8_lossy(arg).into_owned())
                    .collect();
                matches(&argv)
            })
        })
        .collect()
}

/// How a process ended when asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// It exited after SIGTERM.
    Gracefully(Duration),
    /// It was sent SIGKILL, either on request or after ignoring SIGTERM.
    Killed,
}

/// Stops `pid`: SIGTERM and up to [`GRACE_PERIOD`] to exit, then SIGKILL.
/// With `kill`, sends SIGKILL at once (a crash, for fault-tolerance tests).
pub(crate) fn stop(pid: u32, process_name: &str, kill: bool) -> Result<Stopped> {
    if !kill {
        let started = Instant::now();
        signal(pid, "TERM")?;
        // A paused process (`xtask pause`) handles the SIGTERM only once it runs again.
        let _ = signal(pid, "CONT");
        if wait_for_exit(pid, process_name, GRACE_PERIOD) {
            return Ok(Stopped::Gracefully(started.elapsed()));
        }
        crate::ui::warning!(
            "pid {pid} ignored SIGTERM for {}s; sending SIGKILL",
            GRACE_PERIOD.as_secs()
        );
    }
    signal(pid, "KILL")?;
    if wait_for_exit(pid, process_name, Duration::from_secs(5)) {
        Ok(Stopped::Killed)
    } else {
        bail!("pid {pid} is still alive after SIGKILL")
    }
}

/// Freezes `pid` (SIGSTOP) or lets it go on (SIGCONT): a process that hangs without refusing
/// connections, which its clients cannot tell from a slow one.
pub(crate) fn freeze(pid: u32, frozen: bool) -> Result<()> {
    signal(pid, if frozen { "STOP" } else { "CONT" })
}

/// Sends a signal with the `kill` utility, which keeps this crate free of `unsafe`.
fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .context("cannot run `kill`")?;
    // Failure usually means the process exited in the meantime, which is what we want.
    if !status.success() && is_alive_any(pid) {
        bail!("`kill -s {signal} {pid}` failed");
    }
    Ok(())
}

/// Like [`is_alive`] without the name check, for a process we just signalled.
fn is_alive_any(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        )
    })
}

fn wait_for_exit(pid: u32, process_name: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_alive(pid, process_name) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
    true
}

/// The last `lines` lines of a file, and the file's length (where following continues).
pub(crate) fn tail(path: &Path, lines: usize) -> io::Result<(Vec<u8>, u64)> {
    const CHUNK: u64 = 64 * 1024;
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if lines == 0 {
        return Ok((Vec::new(), len));
    }

    // Read backwards chunk by chunk until enough line breaks are in memory:
    // logs grow without bound, the tail is what matters.
    let mut start = len;
    let mut buf = Vec::new();
    let cut = loop {
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let mut breaks = body.iter().enumerate().rev().filter(|(_, b)| **b == b'\n');
        if let Some((at, _)) = breaks.nth(lines - 1) {
            break at + 1;
        }
        if start == 0 {
            break 0;
        }
        let from = start.saturating_sub(CHUNK);
        let mut chunk = vec![0; usize::try_from(start - from).unwrap_or(0)];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
    };
    buf.drain(..cut);
    Ok((buf, len))
}

/// Prints the last `lines` lines of `path` and, with `follow`, keeps printing
/// what is appended until interrupted (like `tail -f`, surviving truncation).
pub(crate) fn print_log(path: &Path, lines: usize, follow: bool) -> Result<()> {
    let (text, mut position) =
        tail(path, lines).with_context(|| format!("cannot read {}", path.display()))?;
    let mut stdout = io::stdout().lock();
    stdout.write_all(&text)?;
    stdout.flush()?;
    if !follow {
        return Ok(());
    }
    loop {
        thread::sleep(Duration::from_millis(250));
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < position {
            // The file was truncated or replaced: start over from its beginning.
            position = 0;
        }
        if len > position {
            file.seek(SeekFrom::Start(position))?;
            position += io::copy(&mut file.take(len - position), &mut stdout)?;
            stdout.flush()?;
        }
    }
}

/// Prints the last `lines` lines of a component's log, indented, after a failure.
pub(crate) fn print_log_excerpt(settings: &Settings, name: &str, lines: usize) {
    let path = settings.log_file(name);
    match tail(&path, lines) {
        Ok((text, _)) => {
            crate::ui::step!("last {lines} lines of {}:", settings.display_path(&path));
            for line in String::from_utf8_lossy(&text).lines() {
                crate::ui::detail!("| {line}");
            }
        }
        Err(err) => crate::ui::warning!("cannot read {}: {err}", path.display()),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, without pulling in a date crate.
fn utc_timestamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), valid for all dates after 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_iso8601() {
        let at = |secs| utc_timestamp(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_764_192_645), "2025-11-26T21:30:45Z");
    }

    #[test]
    fn tail_returns_the_last_lines() -> Result<()> {
        let path = std::env::temp_dir().join(format!("xtask-tail-{}.log", std::process::id()));
        let text: String = (1..=100_000).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, &text)?;

        let (last, len) = tail(&path, 3)?;
        assert_eq!(last, b"line 99998\nline 99999\nline 100000\n");
        assert_eq!(len, text.len() as u64);
        assert_eq!(tail(&path, 0)?.0, b"");
        assert_eq!(tail(&path, 200_000)?.0.len(), text.len());

        fs::write(&path, "no newline at end")?;
        assert_eq!(tail(&path, 5)?.0, b"no newline at end");
        fs::remove_file(&path)?;
        Ok(())
    }

    #[test]
    fn own_process_is_alive_and_named() -> Result<()> {
        let pid = std::process::id();
        let comm = fs::read_to_string(format!("/proc/{pid}/comm"))?;
        assert!(is_alive(pid, comm.trim_end()));
        assert!(!is_alive(pid, "surely-not-this"));
        Ok(())
    }
}
