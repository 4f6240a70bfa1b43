//! `serve`: the upstream for benchmarks and tests. One worker per thread, each with
//! its own `SO_REUSEPORT` listener on the same port, each connection a task:
//! `echo` writes back what it reads (and passes half-close on), `sink` discards,
//! `source` streams the verification pattern until the client leaves, `http` answers
//! every HTTP/1.1 request with `200 OK` and a 64-byte body. Optional TLS.
//!
//! [`serve`] returns once every worker listens, with a [`ServeHandle`] that knows the
//! bound address (port 0 resolved) and stops the workers.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use monoio::net::{TcpListener, TcpStream};

use crate::{
    net,
    options::check_range,
    pattern, rlimit,
    runtime::{self, DriverKind, Workers},
    stream::Stream,
    DriverChoice, LoadError, ServeMode, Shutdown,
};

/// Read and write size of the server.
const BUF: usize = 64 << 10;
/// Longest TLS handshake the server waits for.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of [`serve`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// What to do with connections.
    pub mode: ServeMode,
    /// Worker threads.
    pub threads: usize,
    /// Runtime driver.
    pub driver: DriverChoice,
    /// Terminate TLS with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl ServeOptions {
    /// An echo server on `listen` with one worker.
    #[must_use]
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            mode: ServeMode::Echo,
            threads: 1,
            driver: DriverChoice::Auto,
            tls: None,
        }
    }

    /// Sets the mode.
    #[must_use]
    pub fn mode(mut self, mode: ServeMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the worker count.
    #[must_use]
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Chooses the driver.
    #[must_use]
    pub fn driver(mut self, d: DriverChoice) -> Self {
        self.driver = d;
        self
    }

    /// Enables TLS.
    #[must_use]
    pub fn tls(mut self, config: Option<Arc<rustls::ServerConfig>>) -> Self {
        self.tls = config;
        self
    }
}

/// Counters of a running server.
#[derive(Debug, Default)]
pub struct ServeCounters {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections that ended.
    pub closed: AtomicU64,
    /// TLS handshakes that failed.
    pub handshake_failures: AtomicU64,
    /// Errors returned by accept (e.g. out of descriptors).
    pub accept_errors: AtomicU64,
}

/// A running server.
#[derive(Debug)]
pub struct ServeHandle {
    addr: SocketAddr,
    shutdown: Shutdown,
    workers: Workers<()>,
    counters: Arc<ServeCounters>,
}

impl ServeHandle {
    /// The address the server listens on (port resolved).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The driver the workers run on.
    #[must_use]
    pub fn driver(&self) -> DriverKind {
        self.workers.driver
    }

    /// Live counters.
    #[must_use]
    pub fn counters(&self) -> &ServeCounters {
        &self.counters
    }

    /// Stops the workers (open connections are closed) and waits for them.
    pub fn stop(self) -> Result<(), LoadError> {
        self.shutdown.trigger();
        self.workers.join().map(|_| ())
    }

    /// Waits until the shutdown signal given to [`serve`] fires and the workers end.
    pub fn wait(self) -> Result<(), LoadError> {
        self.workers.join().map(|_| ())
    }
}

/// Starts the server; returns once every worker listens. It runs until `shutdown`
/// fires (or [`ServeHandle::stop`]).
pub fn serve(opts: ServeOptions, shutdown: Shutdown) -> Result<ServeHandle, LoadError> {
    check_range("--threads", opts.threads as u64, 1, 1024)?;
    rlimit::raise_nofile(1 << 20);
    let listeners = net::listeners(opts.listen, opts.threads)?;
    let addr = listeners[0]
        .local_addr()
        .map_err(|source| LoadError::Listen {
            addr: opts.listen.to_string(),
            source,
        })?;
    let slots: Arc<Mutex<Vec<Option<std::net::TcpListener>>>> =
        Arc::new(Mutex::new(listeners.into_iter().map(Some).collect()));
    let counters = Arc::new(ServeCounters::default());
    let (mode, tls, stop, c) = (
        opts.mode,
        opts.tls.clone(),
        shutdown.clone(),
        counters.clone(),
    );
    let workers = runtime::spawn(
        "serve-worker",
        opts.threads,
        opts.driver,
        &shutdown,
        move |i| {
            let std_listener = slots.lock().unwrap_or_else(|p| p.into_inner())[i].take();
            let (tls, stop, c) = (tls.clone(), stop.clone(), c.clone());
            async move {
                let Some(l) = std_listener.and_then(|l| TcpListener::from_std(l).ok()) else {
                    stop.trigger();
                    return;
                };
                monoio::select! {
                    _ = accept_loop(l, mode, tls, c) => {}
                    _ = stop.wait() => {}
                }
            }
        },
    )?;
    Ok(ServeHandle {
        addr,
        shutdown,
        workers,
        counters,
    })
}

async fn accept_loop(
    l: TcpListener,
    mode: ServeMode,
    tls: Option<Arc<rustls::ServerConfig>>,
    c: Arc<ServeCounters>,
) {
    loop {
        match l.accept().await {
            Ok((tcp, _)) => {
                c.accepted.fetch_add(1, Relaxed);
                monoio::spawn(connection(tcp, mode, tls.clone(), c.clone()));
            }
            Err(_) => {
                // Out of descriptors or memory: back off instead of spinning.
                c.accept_errors.fetch_add(1, Relaxed);
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

async fn connection(
    tcp: TcpStream,
    mode: ServeMode,
    tls: Option<Arc<rustls::ServerConfig>>,
    c: Arc<ServeCounters>,
) {
    let _ = tcp.set_nodelay(true);
    let stream = match tls {
        None => Some(Stream::plain(tcp)),
        Some(cfg) => {
            match monoio::time::timeout(HANDSHAKE_TIMEOUT, Stream::tls_server(tcp, cfg)).await {
                Ok(Ok(s)) => Some(s),
                _ => {
                    c.handshake_failures.fetch_add(1, Relaxed);
                    None
                }
            }
        }
    };
    if let Some(s) = stream {
        match mode {
            ServeMode::Echo => echo(s).await,
            ServeMode::Sink => sink(s).await,
            ServeMode::Source => source(s).await,
            ServeMode::Http => http(s).await,
        }
    }
    c.closed.fetch_add(1, Relaxed);
}

async fn echo(mut s: Stream) {
    let mut buf = vec![0u8; BUF];
    loop {
        let (res, b) = s.reader.read(buf, 0..BUF).await;
        buf = b;
        match res {
            Ok(0) => break,
            Ok(n) => {
                let (res, b) = s.writer.write_all(buf, 0..n).await;
                buf = b;
                if res.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    let _ = s.writer.shutdown().await;
}

async fn sink(mut s: Stream) {
    let mut buf = vec![0u8; BUF];
    loop {
        let (res, b) = s.reader.read(buf, 0..BUF).await;
        buf = b;
        if !matches!(res, Ok(n) if n > 0) {
            return;
        }
    }
}

async fn source(mut s: Stream) {
    let mut buf = pattern::buffer(BUF);
    let mut off = 0u64;
    loop {
        let phase = (off % pattern::PERIOD as u64) as usize;
        let (res, b) = s.writer.write_all(buf, phase..phase + BUF).await;
        buf = b;
        if res.is_err() {
            return;
        }
        off += BUF as u64;
    }
}

/// The head of `--mode http`'s answer to `HEAD`.
const HTTP_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 64\r\n\r\n";

/// The answer of `--mode http` to every other request.
const HTTP_OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 64\r\n\r\n\
    0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const HTTP_OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 64\r\nConnection: close\r\n\r\n\
    0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// HTTP/1.1: a `200 OK` for each request, until the client closes or asks to; a
/// request that does not parse gets `400` and the connection is closed.
async fn http(s: Stream) {
    let mut conn = crate::http_wire::Conn::new(s);
    let (mut ok, mut ok_close) = (HTTP_OK.to_vec(), HTTP_OK_CLOSE.to_vec());
    loop {
        match conn.read_request().await {
            Ok(None) => return,
            Ok(Some(req)) if req.head => {
                if conn
                    .write_all(HTTP_HEAD.to_vec(), "response")
                    .await
                    .is_err()
                    || req.close
                {
                    return;
                }
            }
            Ok(Some(req)) if req.close => {
                let _ = conn
                    .write_all(std::mem::take(&mut ok_close), "response")
                    .await;
                let _ = conn.stream.writer.shutdown().await;
                return;
            }
            Ok(Some(_)) => match conn.write_all(std::mem::take(&mut ok), "response").await {
                Ok(back) => ok = back,
                Err(_) => return,
            },
            Err(_) => {
                let bad =
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = conn.write_all(bad.to_vec(), "response").await;
                return;
            }
        }
    }
}
