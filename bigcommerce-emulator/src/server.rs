//! Starting and stopping the emulator: the listener, the connection loop, shutdown.
//!
//! Connections are served by hand (not `axum::serve`) so that a drop-after-commit fault can
//! close one connection without answering.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand::SeedableRng;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tower::Service;

use crate::credentials;
use crate::routes::ConnectionKill;
use crate::seed::Seed;
use crate::state::{App, Inner, StateError};

/// How to start an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// Used when there is no state file yet.
    pub seed: Seed,
    /// Keep stores, keys and tokens here across restarts.
    pub state_file: Option<PathBuf>,
    /// The admin bearer token; generated when None.
    pub admin_token: Option<String>,
}

impl EmulatorConfig {
    /// Loopback, a free port, the given seed, no state file, a generated admin token.
    pub fn new(seed: Seed) -> EmulatorConfig {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed,
            state_file: None,
            admin_token: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the admin token must not be empty")]
    EmptyAdminToken,
}

/// A running emulator; stop it with [`RunningEmulator::shutdown`].
pub struct RunningEmulator {
    app: Arc<App>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningEmulator {
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        self.app.base_url.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn admin_token(&self) -> &str {
        &self.app.admin_token
    }

    /// An admin client for this emulator.
    pub fn admin(&self) -> crate::AdminClient {
        crate::AdminClient::new(&self.base_url(), self.admin_token())
    }

    /// Stops accepting, lets open requests finish (1 s at most), writes the state file.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.app.persist().await;
    }
}

/// Starts an emulator in the current tokio runtime.
pub async fn start(cfg: EmulatorConfig) -> Result<RunningEmulator, Error> {
    let loaded = match &cfg.state_file {
        Some(path) => Inner::load(path)?,
        None => None,
    };
    let from_state = loaded.is_some();
    let mut inner = loaded.unwrap_or_else(|| Inner::from_seed(&cfg.seed));
    let admin_token = match cfg.admin_token {
        Some(t) if t.trim().is_empty() => return Err(Error::EmptyAdminToken),
        Some(t) => t,
        None => credentials::admin_token(&mut rand::rngs::StdRng::from_os_rng()),
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: cfg.listen,
        source,
    })?;
    inner.counters = Default::default();
    let app = Arc::new(App::new(
        inner,
        admin_token,
        format!("http://{addr}"),
        cfg.state_file.clone(),
    ));
    if cfg.state_file.is_some() && !from_state {
        app.persist().await;
    }
    tracing::info!(%addr, from_state, "emulator listening");
    let router = crate::routes::router(app.clone());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, router, stop_rx));
    Ok(RunningEmulator {
        app,
        addr,
        stop,
        task,
    })
}

async fn accept_loop(listener: TcpListener, router: axum::Router, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                connections.spawn(serve_connection(stream, router.clone(), stop.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(Duration::from_secs(1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let kill = Arc::new(Notify::new());
    let kill_ext = ConnectionKill(kill.clone());
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(kill_ext.clone());
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            // Dropping the connection closes the socket with no answer written.
            _ = kill.notified() => return,
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
