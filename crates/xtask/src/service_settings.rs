//! `cargo xtask settings DIR`: each service's settings as JSON, one file per binary.
//!
//! The packaging checks (NixOS module, docker-compose, Terraform) compare what they configure
//! against these files, which the binaries print themselves (`<binary> settings`).

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{config::Settings, ui::step};

/// The service binaries, whose settings packaging must match.
pub(crate) const SERVICES: [&str; 5] = ["auth", "messaging", "profile", "delivery", "gateway"];

/// Builds the service binaries (debug) and writes `<dir>/<binary>.json` for each.
pub(crate) fn write(settings: &Settings, dir: &Path) -> Result<()> {
    step!(
        "Service settings: cargo build --bins, then `<binary> settings` into {}",
        settings.display_path(dir)
    );
    let mut build = Command::new(crate::config::cargo());
    build
        .args(["build", "--quiet", "--bins"])
        .current_dir(&settings.root);
    for service in SERVICES {
        build.args(["-p", &format!("realchat-{service}")]);
    }
    let status = build.status().context("cannot run cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for service in SERVICES {
        let binary = settings.binary(service, false);
        let output = Command::new(&binary)
            .arg("settings")
            .env_clear()
            .output()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        if !output.status.success() {
            bail!(
                "`{service} settings` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if !output.stdout.trim_ascii().starts_with(b"{") {
            bail!("`{service} settings` did not print a JSON object");
        }
        let path = dir.join(format!("{service}.json"));
        std::fs::write(&path, &output.stdout)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
