//! `bigcommerce-emulator`: serve the emulator until Ctrl-C or SIGTERM.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bigcommerce_emulator::{start, EmulatorConfig, Seed};
use clap::Parser;

/// A loopback emulator of BigCommerce's credential surface (API accounts, legacy accounts,
/// storefront JWTs, rate limits) with an admin API under /__admin/ and fault injection.
///
/// On start it prints two lines on stdout: `listening on http://ADDR` and, when the admin token
/// was generated, `admin token: TOKEN`. Logs go to stderr (RUST_LOG sets the level).
#[derive(Debug, Parser)]
#[command(name = "bigcommerce-emulator", version)]
struct Args {
    /// Address to listen on; port 0 picks a free one. Keep it on loopback.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,

    /// Seed file (TOML) with the stores and credentials to start with; used only when the
    /// state file does not exist yet.
    #[arg(long, value_name = "FILE")]
    seed: Option<PathBuf>,

    /// Keep stores, signing keys and tokens in this file across restarts (written atomically
    /// after every change).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,

    /// Read the admin bearer token from this file instead of generating one.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,

    /// Start with the built-in demo store `abc123` instead of a seed file.
    #[arg(long, conflicts_with = "seed")]
    demo: bool,
}

/// Exit codes: 64 for a usage or configuration error, 70 when the server cannot run.
const EXIT_CONFIG: u8 = 64;
const EXIT_RUNTIME: u8 = 70;

fn load_config(args: &Args) -> Result<EmulatorConfig, String> {
    let seed = match (&args.seed, args.demo) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read seed {}: {e}", path.display()))?;
            Seed::from_toml_str(&text).map_err(|e| format!("seed {}: {e}", path.display()))?
        }
        (None, true) => Seed::demo(),
        (None, false) => return Err("give --seed FILE or --demo".to_string()),
    };
    let admin_token = match &args.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read admin token file {}: {e}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    Ok(EmulatorConfig {
        listen: args.listen,
        seed,
        state_file: args.state.clone(),
        admin_token,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let cfg = match load_config(&args) {
        Ok(cfg) => cfg,
        Err(message) => {
            eprintln!("bigcommerce-emulator: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let generated_token = cfg.admin_token.is_none();
    let emulator = match start(cfg).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("bigcommerce-emulator: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    println!("listening on {}", emulator.base_url());
    if generated_token {
        // Printed once on stdout for the person or script that started it; never logged.
        println!("admin token: {}", emulator.admin_token());
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    emulator.shutdown().await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
