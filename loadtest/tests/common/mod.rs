//! Shared helpers of the integration tests: drivers to test on, options for short
//! runs, the library's own server, small misbehaving servers (one thread per
//! connection, blocking std sockets, every read bounded by a timeout), and test
//! certificates.
#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use sluice_loadtest::{
    serve, ClientOptions, DriverChoice, ServeHandle, ServeMode, ServeOptions, Shutdown,
};

/// Both drivers, always: a kernel without io_uring fails the io_uring runs loudly
/// (as the end-to-end tests do) instead of silently testing epoll alone.
pub fn drivers() -> Vec<DriverChoice> {
    vec![DriverChoice::Legacy, DriverChoice::Uring]
}

/// A short run against `addr`: one thread, `ms` milliseconds, 5 s timeout. Not 1 s:
/// while the tests of a binary churn through thousands of loopback connections at
/// once, a connect now and then waits for the kernel's SYN retransmission, which
/// comes after 1 s (CI saw `connect: timed out` with a 1 s timeout). Tests of the
/// timeout class set their own.
pub fn short(addr: SocketAddr, ms: u64) -> ClientOptions {
    ClientOptions::new(addr)
        .threads(1)
        .duration(Duration::from_millis(ms))
        .timeout(Duration::from_secs(5))
}

/// Starts `sluice-load serve` in this process on a free loopback port.
pub fn start(mode: ServeMode, threads: usize, driver: DriverChoice) -> ServeHandle {
    let opts = ServeOptions::new("127.0.0.1:0".parse().unwrap())
        .mode(mode)
        .threads(threads)
        .driver(driver);
    serve(opts, Shutdown::new()).expect("serve starts")
}

/// A misbehaving server: `behave` runs on every accepted connection in its own thread.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start<F>(behave: F) -> TestServer
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let behave = Arc::new(behave);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let behave = behave.clone();
                std::thread::spawn(move || behave(conn));
            }
        });
        TestServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads up to `n` bytes (fewer if the peer closes or the read times out).
pub fn read_n(conn: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match conn.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    buf.truncate(got);
    buf
}

/// Echoes requests of `size` bytes, each after `delay`.
pub fn delayed_echo(size: usize, delay: Duration) -> TestServer {
    TestServer::start(move |mut c| {
        c.set_nodelay(true).unwrap();
        loop {
            let req = read_n(&mut c, size);
            if req.len() < size {
                return;
            }
            std::thread::sleep(delay);
            if c.write_all(&req).is_err() {
                return;
            }
        }
    })
}

/// A self-signed certificate for `localhost` (DER chain and key).
pub fn cert() -> (
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    (vec![ck.cert.der().clone()], key)
}

/// Polls `cond` until it holds or `deadline` passes; returns whether it held.
pub fn wait_for(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + deadline;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}
