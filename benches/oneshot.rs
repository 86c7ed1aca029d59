//! One rotation per process, as a cron job would run it: `secret-rotator rotate NAME --wait`
//! against the same steps scripted in bash with the `bao` CLI, curl and jq
//! (`benches/oneshot/rotate-by-hand.sh`: read the metadata and the tokens, mint, verify, write
//! with check-and-set, revoke, poll until rejected), on one dev OpenBao and the in-repo
//! BigCommerce emulator (grace 0, revocation delay 0).
//!
//! Run: `cargo bench --bench oneshot`. Each of `ONESHOT_RUNS` rounds (default 40) runs every
//! variant once, in turn, each on a credential of its own (so the machine's load weighs on all of
//! them alike): this build's binary, the script, and the binaries `ONESHOT_BINS` names
//! (`label=path,...`: other builds, an older commit's say, that read the same config; 02287c0's
//! state record outgrows OpenBao's limit of strings after about 40 rotations, so keep
//! `ONESHOT_RUNS` under 35 with it). After one rotation each that is not timed (the first
//! creates the state record). Prints the median and the 90th percentile of each variant's wall
//! time and the script's median over the binary's, and writes `target/bench/oneshot.json`.
//! Without `--bench` (as under `cargo test --all-targets`) it runs
//! two rounds of the binary alone and writes nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::bench::{env_or, target_dir};
use common::stack::{storefront_credential, Stack, StackOptions, ACCESS_TOKEN_PATH, STORE};
use common::ROOT_TOKEN;
use serde_json::json;

/// One way of rotating: a program and its arguments, on its own credential.
struct Variant {
    label: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    times_ms: Vec<f64>,
}

impl Variant {
    fn run_once(&self) -> Duration {
        let started = Instant::now();
        let out = Command::new(&self.command[0])
            .args(&self.command[1..])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", self.label));
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "{}: {:?}\n{}{}",
            self.label,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        took
    }

    fn quantile(&self, q: f64) -> f64 {
        let mut t = self.times_ms.clone();
        t.sort_by(f64::total_cmp);
        t[((t.len() - 1) as f64 * q).round() as usize]
    }
}

/// A config with the one credential `name`, its secret at `bigcommerce/oneshot/{name}`.
fn config(dir: &Path, bao: &str, base: &str, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let head = common::token_config_head(bao, "1h", "0s");
    let text = format!(
        r#"
{head}{}"#,
        storefront_credential(name, &format!("bigcommerce/oneshot/{name}"), base)
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn binary_variant(label: &str, bin: PathBuf, config: PathBuf, name: &str) -> Variant {
    Variant {
        label: label.into(),
        command: vec![
            bin.display().to_string(),
            "--config".into(),
            config.display().to_string(),
            "rotate".into(),
            name.into(),
            "--wait".into(),
        ],
        env: vec![
            ("VAULT_TOKEN".into(), ROOT_TOKEN.into()),
            ("SECRET_ROTATOR_INSTANCE_ID".into(), "oneshot".into()),
            ("SECRET_ROTATOR_LOG".into(), "warn".into()),
        ],
        times_ms: Vec::new(),
    }
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rounds: usize = if full { env_or("ONESHOT_RUNS", 40) } else { 2 };
    let s = Stack::with(StackOptions {
        grace: "0s",
        revocation_delay_ms: 0,
        root_token: true,
        ..Default::default()
    })
    .await;
    s.admin
        .set_rate_limit(STORE, u32::MAX, Duration::from_secs(30))
        .await
        .expect("lift the store's rate limit");
    let base = s.emu.base_url();
    let dir = s.dir.path();

    let mut variants = vec![binary_variant(
        "secret-rotator rotate --wait",
        common::binary(),
        config(dir, &s.bao.addr, &base, "oneshot-new"),
        "oneshot-new",
    )];
    let mut names = vec!["oneshot-new"];
    if full {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/oneshot/rotate-by-hand.sh");
        variants.push(Variant {
            label: "bash: bao, curl, jq".into(),
            command: vec!["bash".into(), script.display().to_string()],
            env: vec![
                ("BAO".into(), common::bao_binary().display().to_string()),
                ("BAO_ADDR".into(), s.bao.addr.clone()),
                ("BAO_TOKEN".into(), ROOT_TOKEN.into()),
                ("API".into(), base.clone()),
                ("STORE".into(), STORE.into()),
                ("SECRET".into(), "bigcommerce/oneshot/oneshot-bash".into()),
                ("ACCESS".into(), ACCESS_TOKEN_PATH.into()),
            ],
            times_ms: Vec::new(),
        });
        names.push("oneshot-bash");
        // Other builds, side by side: `label=path` pairs, comma separated.
        let others = std::env::var("ONESHOT_BINS").unwrap_or_default();
        for (i, pair) in others.split(',').filter(|p| !p.is_empty()).enumerate() {
            let (label, path) = pair.split_once('=').expect("ONESHOT_BINS: label=path,...");
            let name: &'static str = Box::leak(format!("oneshot-other{i}").into_boxed_str());
            variants.push(binary_variant(
                &format!("{label} rotate --wait"),
                PathBuf::from(path),
                config(dir, &s.bao.addr, &base, name),
                name,
            ));
            names.push(name);
        }
    }
    s.seed_tokens_by_hand("bigcommerce/oneshot", &names).await;

    // Not timed: the first rotation of each (the binaries create their state records).
    for v in &variants {
        v.run_once();
    }
    for _ in 0..rounds {
        for v in &mut variants {
            let took = v.run_once();
            v.times_ms.push(took.as_secs_f64() * 1000.0);
        }
    }

    println!(
        "one rotation per process ({rounds} rounds, variants in turn; grace 0, revocation delay 0)"
    );
    println!("| variant | runs | p50 ms | p90 ms | min ms |");
    println!("|---|---|---|---|---|");
    for v in &variants {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} |",
            v.label,
            v.times_ms.len(),
            v.quantile(0.5),
            v.quantile(0.9),
            v.quantile(0.0)
        );
    }
    if !full {
        return;
    }
    let p50 = |i: usize| variants[i].quantile(0.5);
    println!(
        "the script's median over the binary's: {:.1}x",
        p50(1) / p50(0)
    );
    let rows: Vec<_> = variants
        .iter()
        .map(|v| {
            json!({
                "variant": v.label,
                "runs": v.times_ms.len(),
                "p50_ms": v.quantile(0.5),
                "p90_ms": v.quantile(0.9),
                "min_ms": v.quantile(0.0),
                "times_ms": v.times_ms,
            })
        })
        .collect();
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).unwrap();
    let out = out.join("oneshot.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({
            "rounds": rounds,
            "variants": rows,
            "script_over_binary": p50(1) / p50(0),
        }))
        .unwrap(),
    )
    .unwrap();
    println!("wrote {}", out.display());
}
