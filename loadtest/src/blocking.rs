//! The pool-of-blocking-clients model (`--model blocking`): what most real
//! applications are, a fixed pool of OS threads on blocking std sockets, each doing
//! one thing at a time. `connect`: every thread loops connect (TCP, then TLS if
//! asked) → write `size` pattern bytes → read the echo → verify → close. `rr`: every
//! thread keeps one connection and ping-pongs on it (closed loop only).
//!
//! One thread per client, so the pool size is `--concurrency` (`connect`) or
//! `--connections` (`rr`), at most [`MAX_THREADS`]; one thread is "one at a time".
//! Every step is bounded by `--timeout` (connect with a timeout, then read and write
//! timeouts on the socket) and every loop stops at the end of the run, so a run ends
//! at most one timeout after its window. The measurements, and the report, are those
//! of the async model: each thread owns a [`Recorder`], merged at the end; the
//! report's `machine.driver` says `blocking`.
use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    connect::ConnectOptions,
    options::{check_range, invalid},
    pattern,
    progress::{Printer, Progress},
    rlimit,
    rr::RrOptions,
    runtime::DriverKind,
    stats::{Recorder, RunResult, Window},
    ClientOptions, ErrorClass, Failure, LoadError,
};

/// Most OS threads one pool may start.
pub const MAX_THREADS: usize = 1024;

/// A blocking connection: plain TCP or rustls over it.
trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// Classifies an I/O error of `what`; the socket timeouts (`EAGAIN`) are `timeout`.
fn fail(what: &str, e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            Failure::new(ErrorClass::Timeout, format!("{what}: timed out ({e})"))
        }
        _ => Failure::io(what, e),
    }
}

/// Connects within the timeout, from `bind` if given (port chosen at connect time).
fn tcp(
    target: SocketAddr,
    bind: Option<std::net::IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let Some(ip) = bind else {
        return TcpStream::connect_timeout(&target, timeout);
    };
    let socket = crate::net::socket_from(target, ip)?;
    socket.connect_timeout(&target.into(), timeout)?;
    Ok(socket.into())
}

/// Opens one connection: TCP (`TCP_NODELAY`, read and write timeouts), then the TLS
/// handshake if configured.
fn open(o: &ClientOptions) -> Result<Box<dyn Conn>, Failure> {
    let s = tcp(o.target, o.bind, o.timeout).map_err(|e| fail("connect", &e))?;
    let setup = || -> io::Result<()> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(o.timeout))?;
        s.set_write_timeout(Some(o.timeout))
    };
    setup().map_err(|e| fail("connect", &e))?;
    let Some(tls) = &o.tls else {
        return Ok(Box::new(s));
    };
    let conn = rustls::ClientConnection::new(tls.config.clone(), tls.server_name.clone())
        .map_err(|e| Failure::new(ErrorClass::Tls, format!("TLS handshake: {e}")))?;
    let mut stream = rustls::StreamOwned::new(conn, s);
    while stream.conn.is_handshaking() {
        if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
            return Err(match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    Failure::timeout("TLS handshake")
                }
                _ => Failure::handshake(&e),
            });
        }
    }
    Ok(Box::new(stream))
}

/// Writes `req[phase..phase + size]`, reads the echo, verifies it; returns when the
/// first byte of the echo arrived.
fn exchange(
    c: &mut dyn Conn,
    req: &[u8],
    resp: &mut [u8],
    phase: usize,
) -> Result<Instant, Failure> {
    let size = resp.len();
    let want = &req[phase..phase + size];
    c.write_all(want).map_err(|e| fail("send", &e))?;
    let mut got = 0;
    let mut first = None;
    while got < size {
        match c.read(&mut resp[got..]) {
            Ok(0) => return Err(Failure::short_read("receive", got, size)),
            Ok(n) => {
                first.get_or_insert_with(Instant::now);
                got += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail("receive", &e)),
        }
    }
    if resp != want {
        return Err(Failure::mismatch("echo"));
    }
    Ok(first.unwrap_or_else(Instant::now))
}

/// What a pool thread gets.
struct Client<'a> {
    index: usize,
    opts: &'a ClientOptions,
    rec: &'a mut Recorder,
    /// Set when the pool gives up (a thread could not start): stop early.
    abort: &'a AtomicBool,
}

impl Client<'_> {
    fn running(&self) -> bool {
        Instant::now() < self.rec.window().end && !self.abort.load(Relaxed)
    }

    fn open(&mut self) -> Option<Box<dyn Conn>> {
        match open(self.opts) {
            Ok(c) => {
                self.rec.opened();
                Some(c)
            }
            Err(f) => {
                self.rec.open_failed(Instant::now(), f);
                None
            }
        }
    }

    fn fail(&mut self, f: Failure) {
        self.rec.error(Instant::now(), f);
        self.rec.closed(false);
    }
}

/// The option checks the blocking model adds: one thread per client (`flag` names the
/// option that sets how many), closed loop only.
pub(crate) fn check_options(
    flag: &str,
    clients: usize,
    rate: Option<f64>,
) -> Result<(), LoadError> {
    check_range(
        &format!("{flag} (one thread each in the blocking model)"),
        clients as u64,
        1,
        MAX_THREADS as u64,
    )?;
    if rate.is_some() {
        return Err(invalid(
            "--rate (open loop) needs --model async; the blocking model is closed loop",
        ));
    }
    Ok(())
}

/// Runs `body` on `n` OS threads named `load-client-{i}`, each with its own recorder,
/// and merges the recorders. `body` must return by the end of the window (plus one
/// timeout).
fn pool<F>(label: &str, opts: &ClientOptions, n: usize, body: F) -> Result<RunResult, LoadError>
where
    F: Fn(&mut Client<'_>) + Send + Sync + 'static,
{
    opts.validate()?;
    check_range(
        "clients of the blocking model",
        n as u64,
        1,
        MAX_THREADS as u64,
    )?;
    rlimit::raise_nofile(n as u64 * 2 + 256);
    let progress = Arc::new(Progress::new(n));
    let started = Instant::now();
    let window = Window::after(opts.warmup, opts.duration);
    let printer = Printer::start(
        label,
        progress.clone(),
        opts.warmup + opts.duration,
        opts.progress,
    );
    let (body, opts_arc, abort) = (
        Arc::new(body),
        Arc::new(opts.clone()),
        Arc::new(AtomicBool::new(false)),
    );
    let mut handles = Vec::with_capacity(n);
    let mut spawn_error = None;
    for index in 0..n {
        let (body, o, progress, stop) = (
            body.clone(),
            opts_arc.clone(),
            progress.clone(),
            abort.clone(),
        );
        let name = format!("load-client-{index}");
        let spawned = thread::Builder::new()
            .name(name.clone())
            .stack_size(256 << 10)
            .spawn(move || {
                let mut rec = Recorder::new(window, index, progress);
                body(&mut Client {
                    index,
                    opts: &o,
                    rec: &mut rec,
                    abort: &stop,
                });
                rec
            });
        match spawned {
            Ok(h) => handles.push((name, h)),
            Err(source) => {
                abort.store(true, Relaxed);
                spawn_error = Some(LoadError::Worker { name, source });
                break;
            }
        }
    }
    let mut recs = Vec::with_capacity(handles.len());
    let mut panicked = None;
    for (name, h) in handles {
        match h.join() {
            Ok(r) => recs.push(r),
            Err(_) => panicked = Some(LoadError::WorkerPanicked(name)),
        }
    }
    if let Some(p) = printer {
        p.finish();
    }
    if let Some(e) = spawn_error.or(panicked) {
        return Err(e);
    }
    Ok(RunResult::merge(
        recs,
        DriverKind::Blocking,
        started.elapsed(),
        &progress,
    ))
}

/// `connect` on a pool of `concurrency` blocking threads.
pub fn connect(opts: &ConnectOptions) -> Result<RunResult, LoadError> {
    if opts.rate.is_some() {
        return Err(invalid(
            "--rate (open loop) needs the async model; the blocking model is closed loop",
        ));
    }
    let size = opts.size;
    pool("connect", &opts.client, opts.concurrency, move |c| {
        let req = pattern::buffer(size);
        let mut resp = vec![0u8; size];
        let mut seq = c.index as u64;
        while c.running() {
            let t0 = Instant::now();
            let Some(mut conn) = c.open() else {
                continue;
            };
            if size == 0 {
                c.rec.op(t0, t0.elapsed());
                c.rec.closed(true);
                continue;
            }
            let phase = (seq % pattern::PERIOD as u64) as usize;
            seq += 1;
            match exchange(conn.as_mut(), &req, &mut resp, phase) {
                Ok(first) => {
                    c.rec.op(t0, first.duration_since(t0));
                    c.rec.closed(true);
                }
                Err(f) => c.fail(f),
            }
        }
    })
}

/// `rr` (closed loop) on a pool of `connections` blocking threads, one persistent
/// connection each; a failed connection is replaced after 10 ms.
pub fn rr(opts: &RrOptions) -> Result<RunResult, LoadError> {
    if opts.rate.is_some() {
        return Err(invalid(
            "--rate (open loop) needs the async model; the blocking model is closed loop",
        ));
    }
    let size = opts.size;
    pool("rr", &opts.client, opts.connections, move |c| {
        let req = pattern::buffer(size);
        let mut resp = vec![0u8; size];
        let mut seq = c.index as u64;
        while c.running() {
            let Some(mut conn) = c.open() else {
                thread::sleep(Duration::from_millis(10));
                continue;
            };
            let healthy = loop {
                if !c.running() {
                    break true;
                }
                let phase = (seq % pattern::PERIOD as u64) as usize;
                let sent = Instant::now();
                match exchange(conn.as_mut(), &req, &mut resp, phase) {
                    Ok(_) => {
                        c.rec.op(sent, sent.elapsed());
                        seq += 1;
                    }
                    Err(f) => {
                        c.fail(f);
                        break false;
                    }
                }
            };
            if healthy {
                c.rec.conns.held += 1;
                c.rec.closed(true);
                return;
            }
        }
    })
}
