//! The Redis connection the gateway and delivery share: a plain `redis://` URL for a local Redis,
//! or `rediss://` (TLS) with an AUTH token or ACL user for a managed one (ElastiCache with
//! in-transit encryption), the URL optionally from a file, the CA optionally from a file.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::config::{Secret, secret_or_file};

/// Where Redis is and how to reach it.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisOptions {
    /// Redis URL: `redis://host:port`, or `rediss://[user]:token@host:port` for TLS and AUTH.
    #[arg(
        long = "redis-url",
        env = "REALCHAT_REDIS_URL",
        default_value = "redis://127.0.0.1:6390",
        hide_env_values = true
    )]
    pub url: Secret<String>,

    /// File holding the Redis URL (wins over REALCHAT_REDIS_URL), as container platforms mount
    /// secrets.
    #[arg(long = "redis-url-file", env = "REALCHAT_REDIS_URL_FILE")]
    pub url_file: Option<PathBuf>,

    /// PEM file of the CA certificates a `rediss://` server's certificate must chain to; unset,
    /// the Mozilla roots built in.
    #[arg(long = "redis-ca-file", env = "REALCHAT_REDIS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl RedisOptions {
    /// Options for the Redis at `url`, nothing read from files.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url.into()),
            url_file: None,
            ca_file: None,
        }
    }

    /// A client for this Redis; it connects when first used. Fails on a URL that does not parse,
    /// an unreadable file, or a CA file given for a `redis://` URL; errors never show the URL.
    pub fn client(&self) -> anyhow::Result<redis::Client> {
        let url = secret_or_file(
            "REALCHAT_REDIS_URL",
            Some(&self.url),
            self.url_file.as_deref(),
        )?
        .unwrap_or_else(|| self.url.clone());
        let info = redis::IntoConnectionInfo::into_connection_info(url.expose().as_str()).map_err(
            |error| anyhow::anyhow!("REALCHAT_REDIS_URL does not parse ({:?})", error.kind()),
        )?;
        let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        match &self.ca_file {
            None => Ok(redis::Client::open(info)?),
            Some(file) if tls => {
                let root_cert = std::fs::read(file).with_context(|| {
                    format!("REALCHAT_REDIS_CA_FILE: cannot read {}", file.display())
                })?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                redis::Client::build_with_tls(info, certificates)
                    .with_context(|| format!("REALCHAT_REDIS_CA_FILE: {}", file.display()))
            }
            Some(_) => anyhow::bail!(
                "REALCHAT_REDIS_CA_FILE is set but REALCHAT_REDIS_URL is not a rediss:// (TLS) URL"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_tls_urls_make_clients_and_errors_hide_the_token() {
        assert!(RedisOptions::new("redis://127.0.0.1:6390").client().is_ok());
        assert!(
            RedisOptions::new("rediss://:t0ken@cache.internal:6379")
                .client()
                .is_ok()
        );

        let not_redis = RedisOptions::new("http://:t0ken@cache.internal").client();
        assert!(not_redis.is_err_and(|e| !format!("{e:#}").contains("t0ken")));

        let mut plain_with_ca = RedisOptions::new("redis://:t0ken@127.0.0.1:6390");
        plain_with_ca.ca_file = Some("/nonexistent/ca.pem".into());
        let refused = plain_with_ca.client();
        assert!(refused.is_err_and(|e| {
            let text = format!("{e:#}");
            text.contains("not a rediss://") && !text.contains("t0ken")
        }));
    }
}
