//! Terminal output conventions.
//!
//! Every command prints plain lines: `==> ` for a step, four spaces for a detail
//! belonging to the step above, and `warning: ` on stderr for something the
//! user should know about but that does not stop the command.

use std::{
    fmt,
    io::{self, Write as _},
    time::Duration,
};

/// Prints a top-level progress step: `==> message`.
macro_rules! step {
    ($($arg:tt)*) => { $crate::ui::line("==> ", format_args!($($arg)*)) };
}

/// Prints a detail line under the current step.
macro_rules! detail {
    ($($arg:tt)*) => { $crate::ui::line("    ", format_args!($($arg)*)) };
}

/// Prints a non-fatal warning to stderr.
macro_rules! warning {
    ($($arg:tt)*) => { eprintln!("warning: {}", format_args!($($arg)*)) };
}

/// Writes one line of progress output to stdout.
///
/// Progress is best-effort: if stdout is gone (`cargo xtask up | head`), the
/// operation must carry on rather than panic halfway through starting things.
pub(crate) fn line(prefix: &str, message: fmt::Arguments<'_>) {
    let _ = writeln!(io::stdout().lock(), "{prefix}{message}");
}

/// Writes an empty line, to set a summary apart from the progress above it.
pub(crate) fn blank_line() {
    line("", format_args!(""));
}

pub(crate) use {detail, step, warning};

/// Formats a duration the way a human reads a progress line: `850ms`, `4.2s`, `6m12s`.
pub(crate) fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if d.as_millis() >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_millis(4_200)), "4.2s");
        assert_eq!(duration(Duration::from_secs(372)), "6m12s");
    }
}
