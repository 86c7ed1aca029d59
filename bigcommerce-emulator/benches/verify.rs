//! Throughput of the storefront GraphQL verify endpoint and `/v2/time`, driven by concurrent
//! loopback clients for a bounded time.
//!
//! Run: `cargo bench -p bigcommerce-emulator --bench verify`
//! (`BENCH_SECS` sets seconds per endpoint, default 3; `BENCH_CLIENTS` the concurrency,
//! default 32.) Prints a table and writes `target/bench/bigcommerce-emulator-verify.json`.
//! Without `--bench` (as under `cargo test --all-targets`) it runs a 0.2 s smoke pass and
//! writes nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bigcommerce_emulator::{demo, start, EmulatorConfig, Seed};
use serde_json::json;

struct Figures {
    name: &'static str,
    requests: usize,
    errors: usize,
    seconds: f64,
    p50_us: u64,
    p99_us: u64,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn drive(
    name: &'static str,
    clients: usize,
    duration: Duration,
    make: Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>,
) -> Figures {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let http = http.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut errors = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                match make(&http).send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                        latencies.push(t.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Figures {
        name,
        requests: all.len(),
        errors,
        seconds,
        p50_us: pick(0.50),
        p99_us: pick(0.99),
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            manifest.parent().unwrap_or(&manifest).join("target")
        })
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs: f64 = if full { env_or("BENCH_SECS", 3.0) } else { 0.2 };
    let clients: usize = env_or("BENCH_CLIENTS", 32);
    let duration = Duration::from_secs_f64(secs);

    let emulator = start(EmulatorConfig::new(Seed::demo())).await.unwrap();
    let admin = emulator.admin();
    admin
        .set_rate_limit(demo::STORE_HASH, u32::MAX, Duration::from_secs(30))
        .await
        .unwrap();
    let base = emulator.base_url();
    let http = reqwest::Client::new();
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let minted: serde_json::Value = http
        .post(format!("{base}/stores/abc123/v3/storefront/api-token"))
        .header("X-Auth-Token", demo::ACCESS_TOKEN)
        .json(&json!({"channel_id": 1, "expires_at": expires}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["data"]["token"].as_str().unwrap().to_string();

    let graphql_url = format!("{base}/store-abc123/graphql");
    let query = json!({"query": "{ site { settings { storeName } } }"}).to_string();
    let verify = drive(
        "storefront_graphql (verify)",
        clients,
        duration,
        Arc::new(move |c: &reqwest::Client| {
            c.post(&graphql_url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(query.clone())
        }),
    )
    .await;
    let time_url = format!("{base}/stores/abc123/v2/time");
    let time = drive(
        "v2_time",
        clients,
        duration,
        Arc::new(move |c: &reqwest::Client| {
            c.get(&time_url).header("X-Auth-Token", demo::ACCESS_TOKEN)
        }),
    )
    .await;
    emulator.shutdown().await;

    let rows = [&verify, &time];
    println!();
    println!("bigcommerce-emulator, {clients} concurrent loopback clients, {secs} s per endpoint");
    println!(
        "{:<30} {:>10} {:>8} {:>8} {:>12} {:>10} {:>10}",
        "endpoint", "requests", "errors", "seconds", "req/s", "p50 ms", "p99 ms"
    );
    for f in rows {
        println!(
            "{:<30} {:>10} {:>8} {:>8.2} {:>12.0} {:>10.3} {:>10.3}",
            f.name,
            f.requests,
            f.errors,
            f.seconds,
            f.per_second(),
            f.p50_us as f64 / 1000.0,
            f.p99_us as f64 / 1000.0
        );
    }
    let figures = json!({
        "clients": clients,
        "seconds_per_endpoint": secs,
        "endpoints": rows.iter().map(|f| json!({
            "endpoint": f.name,
            "requests": f.requests,
            "errors": f.errors,
            "seconds": f.seconds,
            "requests_per_second": f.per_second(),
            "p50_ms": f.p50_us as f64 / 1000.0,
            "p99_ms": f.p99_us as f64 / 1000.0,
        })).collect::<Vec<_>>(),
    });
    if !full {
        return;
    }
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("bigcommerce-emulator-verify.json");
    std::fs::write(&out, serde_json::to_string_pretty(&figures).unwrap()).unwrap();
    println!("figures written to {}", out.display());
    if full {
        let verdict = if verify.per_second() >= 5000.0 {
            "meets"
        } else {
            "BELOW"
        };
        println!(
            "verify: {:.0} req/s, {verdict} the 5000 req/s target",
            verify.per_second()
        );
    }
}
