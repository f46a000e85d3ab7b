//! `probe-bench`: the observer's prober against the Debian blackbox exporter, probing
//! the same local HTTP and HTTPS endpoints at the same rate.
//!
//! nginx serves `--endpoints` distinct URLs (`/e<i>`), half over HTTP and half over
//! HTTPS (a CA and certificate made with rcgen for this run), on two ports each. Then,
//! one after the other:
//!
//! 1. **blackbox exporter**: a driver in this process requests
//!    `/probe?module=http_2xx&target=<url>` for every endpoint once per interval, each at
//!    its own offset in the interval (as Prometheus spreads scrapes), at most
//!    `--concurrency` at a time, over keep-alive connections;
//! 2. **prober**: this program started again as a child (`--prober-child`) runs the
//!    observer's `Prober` over the same endpoints with the same interval and
//!    `max_concurrency = --concurrency`, printing its probe counts every second.
//!
//! For each, over the same window after a warm-up: CPU time of the process (user +
//! system from `/proc/<pid>/stat`) divided by the probes completed in the window, and
//! the peak RSS (`VmHWM`). Both verify the certificate against the run's CA. Timings are
//! reported, never asserted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kaas_bench::{cpu_seconds, peak_rss};
use kaas_observer::egress::EgressPolicy;
use kaas_observer::probes::{
    HttpMethod, HttpProbe, ProbeModule, ProbeOrigin, ProbeTarget, Prober, ProberSettings,
    TlsSettings,
};
use kaas_test_support::peers::{binary, run_nginx};
use kaas_test_support::process::{ChildGuard, free_port, wait_for_tcp};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// The name in the server certificate; both probers verify against it.
const SERVER_NAME: &str = "probe.internal";

/// Compares CPU per probe and peak memory of the observer's prober and the blackbox
/// exporter on the same endpoints at the same rate.
#[derive(Debug, Parser)]
#[command(name = "probe-bench", version, about)]
struct Args {
    /// Distinct endpoints.
    #[arg(long, default_value_t = 1000)]
    endpoints: usize,
    /// Which endpoints: `both` (half HTTP, half HTTPS), `http` or `https`.
    #[arg(long, default_value = "both", value_parser = ["both", "http", "https"])]
    scheme: String,
    /// Each endpoint is probed once per interval (seconds).
    #[arg(long, default_value_t = 10)]
    interval_seconds: u64,
    /// Probes in flight at most, for both.
    #[arg(long, default_value_t = 20)]
    concurrency: usize,
    /// Time before measuring starts (seconds).
    #[arg(long, default_value_t = 15)]
    warmup_seconds: u64,
    /// The measured window (seconds).
    #[arg(long, default_value_t = 60)]
    duration_seconds: u64,
    /// Internal: run the prober (started by the benchmark itself).
    #[arg(long, hide = true)]
    prober_child: bool,
    /// Internal: where the child finds the endpoints (written by the parent).
    #[arg(long, hide = true)]
    spec: Option<PathBuf>,
}

/// What the child needs to probe what the exporter probed (written as JSON).
struct Spec {
    urls: Vec<String>,
    ca_pem: String,
    interval_ms: u64,
    concurrency: usize,
}

impl Spec {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "urls": self.urls,
            "caPem": self.ca_pem,
            "intervalMs": self.interval_ms,
            "concurrency": self.concurrency,
        })
    }

    fn from_json(value: &serde_json::Value) -> Option<Self> {
        Some(Self {
            urls: value["urls"]
                .as_array()?
                .iter()
                .map(|u| u.as_str().map(str::to_owned))
                .collect::<Option<_>>()?,
            ca_pem: value["caPem"].as_str()?.to_owned(),
            interval_ms: value["intervalMs"].as_u64()?,
            concurrency: usize::try_from(value["concurrency"].as_u64()?).ok()?,
        })
    }
}

/// A child process killed when dropped, with its stdout for the caller.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.prober_child {
        let spec = args.spec.context("--prober-child needs --spec")?;
        return prober_child(&spec);
    }
    run(&args)
}

/// The child: runs the prober until killed, printing `probes <n> <successes>` each second.
fn prober_child(spec: &Path) -> anyhow::Result<()> {
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(spec)?)?;
    let spec = Spec::from_json(&value).context("a malformed spec")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let prober = Prober::start(ProberSettings {
            interval: Duration::from_millis(spec.interval_ms),
            timeout: Duration::from_secs(5),
            max_concurrency: spec.concurrency,
            // One tenant owns every target here: no share to keep for others.
            max_concurrency_per_tenant: spec.concurrency,
            // The targets listen on loopback.
            egress: EgressPolicy::new(
                vec!["127.0.0.0/8".parse().map_err(anyhow::Error::msg)?],
                Vec::new(),
            ),
            ..ProberSettings::default()
        });
        prober.set_targets(targets(&spec.urls, &spec.ca_pem));
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            ticks.tick().await;
            let stats = prober.stats();
            println!("probes {} {}", stats.probes, stats.successes);
        }
    })
}

fn targets(urls: &[String], ca_pem: &str) -> Vec<ProbeTarget> {
    urls.iter()
        .enumerate()
        .map(|(i, url)| ProbeTarget {
            name: format!("e{i}"),
            tenant: "bench".to_owned(),
            cluster: None,
            origin: ProbeOrigin::Tenant,
            module: ProbeModule::Http(HttpProbe {
                url: url.clone(),
                method: HttpMethod::Get,
                expected_status: Vec::new(),
                tls: url.starts_with("https://").then(|| TlsSettings {
                    ca: Some(ca_pem.to_owned()),
                    insecure_skip_verify: false,
                    server_name: Some(SERVER_NAME.to_owned()),
                }),
            }),
        })
        .collect()
}

/// A CA (PEM), and a chain and key for [`SERVER_NAME`].
fn pki() -> anyhow::Result<(String, String, String)> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "probe-bench CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let server = CertificateParams::new(vec![SERVER_NAME.to_owned()])?.signed_by(&key, &issuer)?;
    Ok((
        ca.pem(),
        format!("{}{}", server.pem(), ca.pem()),
        key.serialize_pem(),
    ))
}

/// nginx answering `200 ok` on `/e<i>` on two HTTP and two HTTPS ports; returns the
/// guard and the endpoint URLs (`scheme`: `both` alternates HTTP and HTTPS).
fn nginx(
    dir: &Path,
    endpoints: usize,
    scheme: &str,
    chain: &str,
    key: &str,
) -> anyhow::Result<(ChildGuard, Vec<String>)> {
    let chain_path = dir.join("chain.pem");
    let key_path = dir.join("server.key");
    std::fs::write(&chain_path, chain)?;
    std::fs::write(&key_path, key)?;
    let http = [free_port(), free_port()];
    let https = [free_port(), free_port()];
    let location = "location ~ ^/e[0-9]+$ { return 200 \"ok\\n\"; }";
    let mut servers = String::new();
    for port in http {
        servers.push_str(&format!(
            "  server {{ listen 127.0.0.1:{port} backlog=4096; {location} }}\n"
        ));
    }
    for port in https {
        servers.push_str(&format!(
            "  server {{ listen 127.0.0.1:{port} ssl backlog=4096; ssl_certificate {}; ssl_certificate_key {}; ssl_session_tickets off; ssl_session_cache off; {location} }}\n",
            chain_path.display(),
            key_path.display()
        ));
    }
    let ports: Vec<u16> = http.iter().chain(&https).copied().collect();
    let guard = run_nginx(dir, &servers, &ports);
    let urls = (0..endpoints)
        .map(|i| {
            let secure = match scheme {
                "http" => false,
                "https" => true,
                _ => i % 2 == 1,
            };
            let (scheme, ports) = if secure {
                ("https", https)
            } else {
                ("http", http)
            };
            format!("{scheme}://127.0.0.1:{}/e{i}", ports[(i / 2) % 2])
        })
        .collect();
    Ok((guard, urls))
}

/// One program's figures over the window.
struct Measurement {
    name: &'static str,
    probes: u64,
    successes: u64,
    cpu_seconds: f64,
    peak_rss_bytes: u64,
}

impl Measurement {
    fn cpu_per_probe_us(&self) -> f64 {
        self.cpu_seconds * 1e6 / (self.probes.max(1) as f64)
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (ca, chain, key) = pki()?;
    let (_nginx, urls) = nginx(dir.path(), args.endpoints, &args.scheme, &chain, &key)?;
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca)?;
    let interval = Duration::from_secs(args.interval_seconds);
    let warmup = Duration::from_secs(args.warmup_seconds);
    let window = Duration::from_secs(args.duration_seconds);
    println!(
        "probe-bench: {} endpoints ({} http, {} https), each every {}s = {:.0} probes/s, {} concurrent; warm-up {}s, window {}s",
        urls.len(),
        urls.iter().filter(|u| u.starts_with("http://")).count(),
        urls.iter().filter(|u| u.starts_with("https://")).count(),
        args.interval_seconds,
        urls.len() as f64 / interval.as_secs_f64(),
        args.concurrency,
        args.warmup_seconds,
        args.duration_seconds
    );

    let exporter = measure_exporter(
        dir.path(),
        &ca_path,
        &urls,
        interval,
        args.concurrency,
        warmup,
        window,
    )?;
    let spec = Spec {
        urls,
        ca_pem: ca,
        interval_ms: u64::try_from(interval.as_millis())?,
        concurrency: args.concurrency,
    };
    let prober = measure_prober(dir.path(), &spec, warmup, window)?;

    println!();
    println!("| prober | probes in window | succeeded | CPU per probe | peak RSS |");
    println!("|---|---|---|---|---|");
    for m in [&exporter, &prober] {
        println!(
            "| {} | {} | {:.1}% | {:.1} µs | {:.1} MiB |",
            m.name,
            m.probes,
            100.0 * m.successes as f64 / (m.probes.max(1) as f64),
            m.cpu_per_probe_us(),
            m.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    println!();
    println!(
        "observer prober / blackbox exporter: CPU per probe {:.2}x, peak RSS {:.2}x (target: CPU <= 0.5x)",
        prober.cpu_per_probe_us() / exporter.cpu_per_probe_us(),
        prober.peak_rss_bytes as f64 / exporter.peak_rss_bytes.max(1) as f64
    );
    Ok(())
}

fn measure_exporter(
    dir: &Path,
    ca_path: &Path,
    urls: &[String],
    interval: Duration,
    concurrency: usize,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Measurement> {
    let config = format!(
        "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n      ip_protocol_fallback: false\n      tls_config: {{ca_file: {}, server_name: {SERVER_NAME}}}\n",
        ca_path.display()
    );
    let config_path = dir.join("blackbox.yml");
    std::fs::write(&config_path, config)?;
    let port = free_port();
    let exporter = ChildGuard::spawn(
        "prometheus-blackbox-exporter",
        Command::new(binary(
            "prometheus-blackbox-exporter",
            "prometheus-blackbox-exporter",
        ))
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null()),
    );
    wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(10));
    let pid = exporter.id();
    let probes = Arc::new(AtomicU64::new(0));
    let successes = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let requests: Vec<String> = urls
        .iter()
        .map(|url| {
            format!(
                "http://127.0.0.1:{port}/probe?module=http_2xx&target={}",
                escape(url)
            )
        })
        .collect();
    let driver = runtime.spawn(drive(
        requests,
        interval,
        concurrency,
        probes.clone(),
        successes.clone(),
    ));
    std::thread::sleep(warmup);
    let (cpu0, probes0, successes0) = (
        cpu_seconds(pid),
        probes.load(Ordering::Relaxed),
        successes.load(Ordering::Relaxed),
    );
    std::thread::sleep(window);
    let (cpu1, probes1, successes1) = (
        cpu_seconds(pid),
        probes.load(Ordering::Relaxed),
        successes.load(Ordering::Relaxed),
    );
    let peak_rss_bytes = peak_rss(pid);
    driver.abort();
    drop(runtime);
    drop(exporter);
    Ok(Measurement {
        name: "blackbox exporter",
        probes: probes1 - probes0,
        successes: successes1 - successes0,
        cpu_seconds: cpu1 - cpu0,
        peak_rss_bytes,
    })
}

/// Requests every URL once per interval at its offset (`i * interval / n`), at most
/// `concurrency` at a time, counting answers and `probe_success 1` among them.
async fn drive(
    requests: Vec<String>,
    interval: Duration,
    concurrency: usize,
    probes: Arc<AtomicU64>,
    successes: Arc<AtomicU64>,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Ok(client) = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(10))
        .build()
    else {
        eprintln!("cannot build the driver's HTTP client");
        return;
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let step = interval / u32::try_from(requests.len().max(1)).unwrap_or(u32::MAX);
    let mut round_start = tokio::time::Instant::now();
    loop {
        for (i, url) in requests.iter().enumerate() {
            let due = round_start + step * u32::try_from(i).unwrap_or(u32::MAX);
            tokio::time::sleep_until(due).await;
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (client, url, probes, successes) = (
                client.clone(),
                url.clone(),
                probes.clone(),
                successes.clone(),
            );
            tokio::spawn(async move {
                let body = match client.get(&url).send().await {
                    Ok(response) => response.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                if body.lines().any(|l| l.starts_with("probe_success ")) {
                    probes.fetch_add(1, Ordering::Relaxed);
                }
                if body.lines().any(|l| l == "probe_success 1") {
                    successes.fetch_add(1, Ordering::Relaxed);
                }
                drop(permit);
            });
        }
        round_start += interval;
    }
}

fn measure_prober(
    dir: &Path,
    spec: &Spec,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Measurement> {
    let spec_path = dir.join("prober-spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec.to_json())?)?;
    let mut child = Child(
        Command::new(std::env::current_exe()?)
            .arg("--prober-child")
            .arg("--spec")
            .arg(&spec_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the prober child")?,
    );
    let pid = child.0.id();
    let latest = Arc::new(Mutex::new((0u64, 0u64)));
    let stdout = child.0.stdout.take().context("the child's stdout")?;
    let reader = {
        let latest = latest.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut fields = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|f| f.parse().ok());
                if let (Some(probes), Some(successes)) = (fields.next(), fields.next()) {
                    *latest.lock().unwrap_or_else(|e| e.into_inner()) = (probes, successes);
                }
            }
        })
    };
    let counts = || *latest.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::sleep(warmup);
    let (cpu0, (probes0, successes0)) = (cpu_seconds(pid), counts());
    std::thread::sleep(window);
    let (cpu1, (probes1, successes1)) = (cpu_seconds(pid), counts());
    let peak_rss_bytes = peak_rss(pid);
    anyhow::ensure!(
        child.0.try_wait()?.is_none(),
        "the prober child exited early"
    );
    drop(child);
    let _ = reader.join();
    Ok(Measurement {
        name: "observer prober",
        probes: probes1 - probes0,
        successes: successes1 - successes0,
        cpu_seconds: cpu1 - cpu0,
        peak_rss_bytes,
    })
}

fn escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
