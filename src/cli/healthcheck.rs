//! `outbox-relay healthcheck`: GET the local `/healthz` (or `/readyz`) of the relay running with
//! the same configuration; exit 0 on 200, 1 otherwise. For container health checks, so that the
//! image needs no curl: `HEALTHCHECK CMD ["outbox-relay", "healthcheck"]`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::config::Config;

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// Probe `/readyz` (claiming, every dependency answering) instead of `/healthz` (alive).
    #[arg(long)]
    ready: bool,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3)]
    timeout: u64,
}

pub(super) async fn healthcheck(config: &Config, args: &HealthcheckArgs) -> anyhow::Result<()> {
    let Some(listen) = config.http.address() else {
        bail!("http.listen is empty: the HTTP endpoint is off, there is nothing to probe");
    };
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let url = format!("http://{}{path}", probe_address(listen));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("GET {url} answered {status}: {}", body.trim());
    }
    println!("GET {url} answered {status}");
    Ok(())
}

/// Where to reach an endpoint listening on `listen`: an unspecified address (`0.0.0.0`, `::`)
/// is reached on loopback.
fn probe_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_on_every_interface_is_probed_on_loopback() {
        let probe = |s: &str| probe_address(s.parse().unwrap()).to_string();
        assert_eq!(probe("0.0.0.0:9464"), "127.0.0.1:9464");
        assert_eq!(probe("[::]:9464"), "[::1]:9464");
        assert_eq!(probe("10.1.2.3:9464"), "10.1.2.3:9464");
    }
}
