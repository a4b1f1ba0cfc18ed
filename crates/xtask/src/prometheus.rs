//! `cargo xtask up --with-prometheus`: a Prometheus on 127.0.0.1:9090 that scrapes every instance
//! of the topology just started, with the repository's alert rules, so the dashboards of
//! `dashboards/grafana` have data to show. It comes from Debian's `prometheus` package, unpacked
//! into the tools cache by `dashboards/check.sh` on first use; `cargo xtask down` stops it.

use std::{fmt::Write as _, path::PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::{
    config::Settings,
    process::{self, Launch},
    topology::Component,
    ui::{detail, step},
};

/// The name of its pid and log files.
pub(crate) const NAME: &str = "prometheus";
/// Where it listens.
pub(crate) const ADDR: &str = "127.0.0.1:9090";

/// Starts Prometheus for `services` (restarting it if it runs, so it scrapes what runs now).
pub(crate) fn start(settings: &Settings, services: &[Component]) -> Result<()> {
    stop(settings)?;
    let binary = match find() {
        Some(binary) => binary,
        None => {
            step!("Unpacking Prometheus (dashboards/check.sh, first use)");
            let status = std::process::Command::new("bash")
                .arg(settings.root.join("dashboards/check.sh"))
                .current_dir(&settings.root)
                .env_remove("REALCHAT_METRICS_URLS")
                .status()
                .context("cannot run dashboards/check.sh")?;
            if !status.success() {
                bail!("dashboards/check.sh failed ({status}), so there is no Prometheus");
            }
            find().context("dashboards/check.sh left no prometheus binary")?
        }
    };
    let dir = settings.data_dir.join(NAME);
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, config_for(settings, services))
        .with_context(|| format!("writing {}", config.display()))?;
    let launch = Launch::new(binary, &dir).args([
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address={ADDR}"),
        "--log.level=warn".to_owned(),
    ]);
    let pid = process::spawn_detached(settings, NAME, &launch)?;
    let started = std::time::Instant::now();
    while crate::probe::connect(ADDR).is_err() {
        if !process::is_alive(pid, NAME) {
            process::print_log_excerpt(settings, NAME, 20);
            bail!("prometheus exited during startup");
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            bail!("prometheus (pid {pid}) did not listen on {ADDR} within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    step!("prometheus: started (pid {pid}) on http://{ADDR}");
    detail!(
        "scraping {} instances, rules from dashboards/prometheus/rules",
        services.len()
    );
    Ok(())
}

/// Stops it if it runs.
pub(crate) fn stop(settings: &Settings) -> Result<bool> {
    let Some(pid) = process::running_pid(settings, NAME, NAME) else {
        process::clear_pid(settings, NAME)?;
        return Ok(false);
    };
    process::stop(pid, NAME, false)?;
    process::clear_pid(settings, NAME)?;
    step!("prometheus: stopped (pid {pid})");
    Ok(true)
}

/// The binary unpacked by `dashboards/check.sh`, or one on the PATH.
fn find() -> Option<PathBuf> {
    let tools = std::env::var_os("REALCHAT_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/realchat/tools"))
        })?;
    std::fs::read_dir(&tools)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("prometheus-")
        })
        .map(|entry| entry.path().join("bin/prometheus"))
        .find(|path| path.is_file())
        .or_else(|| process::which("prometheus"))
}

/// The repository's scrape configuration (dashboards/prometheus/prometheus.yml) for the
/// instances that run: a job per service, each instance labelled with its component name.
fn config_for(settings: &Settings, services: &[Component]) -> String {
    let rules = settings.root.join("dashboards/prometheus/rules");
    let mut config = format!(
        "# Written by `cargo xtask up --with-prometheus` for the instances it started.\n\
         global:\n  scrape_interval: 10s\n  scrape_timeout: 5s\n  evaluation_interval: 10s\n\n\
         rule_files:\n  - {}/*.yml\n\nscrape_configs:\n",
        rules.display()
    );
    let mut jobs: Vec<&str> = services
        .iter()
        .filter_map(Component::service)
        .map(|spec| spec.name)
        .collect();
    jobs.dedup();
    for job in jobs {
        let _ = writeln!(config, "  - job_name: {job}\n    static_configs:");
        for component in services
            .iter()
            .filter(|c| c.service().is_some_and(|s| s.name == job))
        {
            if let Some(admin) = component.admin_address(settings) {
                let _ = writeln!(
                    config,
                    "      - targets: [\"{admin}\"]\n        labels: {{ instance: {component} }}"
                );
            }
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instance_is_a_target_of_its_service_s_job() -> Result<()> {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            env: crate::config::EnvArgs,
        }
        let settings = Settings::resolve(Cli::try_parse_from(["xtask"])?.env)?;
        let services: Vec<Component> = ["gateway", "delivery-1", "delivery-2", "messaging-1"]
            .into_iter()
            .filter_map(Component::parse)
            .collect();
        let config = config_for(&settings, &services);
        assert!(config.contains("job_name: delivery"), "{config}");
        assert_eq!(config.matches("job_name: delivery").count(), 1, "{config}");
        assert!(
            config.contains("labels: { instance: delivery-2 }"),
            "{config}"
        );
        assert!(config.contains("\"127.0.0.1:9180\""), "{config}");
        assert!(
            config.contains("dashboards/prometheus/rules/*.yml"),
            "{config}"
        );
        Ok(())
    }
}
