//! The bench's own HTTP endpoints (log-bench's and trace-bench's sinks): an axum app
//! on `127.0.0.1:0`, served by a current-thread runtime in a thread of its own so the
//! measured agents' CPU is never mixed with it, and stopped when dropped.

use axum::Router;

/// A running endpoint.
pub struct Served {
    /// Its port on 127.0.0.1.
    pub port: u16,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Serves `app` in a thread called `name`.
    pub fn start(name: &str, app: Router) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("sink runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("sink listener");
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })?;
        Ok(Self {
            port,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The `cluster-agent` binary a bench runs: `path` when given, else the one next to the
/// bench's own executable (build both with the same profile).
pub fn cluster_agent_binary(
    path: &Option<std::path::PathBuf>,
) -> anyhow::Result<std::path::PathBuf> {
    let path = match path {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("cluster-agent"),
    };
    if !path.is_file() {
        anyhow::bail!("{} is not built (or pass --cluster-agent)", path.display());
    }
    Ok(path)
}
