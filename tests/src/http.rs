//! HTTP for the `http://` endpoint tests: an upstream that answers every request with
//! what it received (request line, headers, body) and its own name, and `curl` as the
//! client, run with `--resolve` so the host names stay on loopback.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

/// An upstream whose responses (200, `X-Upstream: NAME`) carry the request as it
/// arrived: its head as text, a blank line, then its body. A request to switch
/// protocols (`Upgrade`) gets a 101, then its bytes echoed as they come.
///
/// A request for `/bytes/N` is answered with a body of N bytes instead.
///
/// [`HttpEcho::stop`] closes its listener and every connection, as a server that went
/// down: new connections are refused from then on.
///
/// A request for a path under [`DROP_ON_REUSE`] that is not the first on its
/// connection, the first time that path comes, is not answered: the connection is
/// closed instead, as a server whose keep-alive timeout fired just as it arrived.
pub struct HttpEcho {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests answered.
    pub requests: Arc<AtomicUsize>,
    /// The paths of the requests it dropped, in order.
    pub dropped: Arc<Mutex<Vec<String>>>,
    /// The paths of every request it read, answered or not, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
    /// Connections open now.
    pub open: Arc<AtomicUsize>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Set to stop listening (the accept loop then lets the listener go).
    stopped: Arc<std::sync::atomic::AtomicBool>,
    /// Every connection accepted, to shut down on [`HttpEcho::stop`].
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

/// Paths under this prefix are dropped once on a reused connection (see [`HttpEcho`]).
pub const DROP_ON_REUSE: &str = "/drop-on-reuse/";

/// What an [`HttpEcho`]'s connections share.
#[derive(Clone)]
struct Shared {
    name: String,
    count: Arc<AtomicUsize>,
    dropped: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<Vec<String>>>,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl HttpEcho {
    /// Starts on 127.0.0.1 with a free port, answering as `name`.
    pub fn start(name: &str) -> HttpEcho {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared {
            name: name.to_owned(),
            count: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::default(),
            seen: Arc::default(),
            open: Arc::default(),
            accepted: Arc::default(),
        };
        let echo = HttpEcho {
            addr,
            requests: shared.count.clone(),
            dropped: shared.dropped.clone(),
            seen: shared.seen.clone(),
            open: shared.open.clone(),
            accepted: shared.accepted.clone(),
            stopped: Arc::default(),
            connections: Arc::default(),
        };
        let (stopped, connections) = (echo.stopped.clone(), echo.connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                // (kept for stop(); so that a connection still ends when its serve
                // does, it is shut down then rather than only closed)
                let end = stream.try_clone().ok();
                if let Some(end) = end.as_ref().and_then(|e| e.try_clone().ok()) {
                    connections.lock().unwrap().push(end);
                }
                let shared = shared.clone();
                std::thread::spawn(move || {
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    shared.open.fetch_add(1, Ordering::SeqCst);
                    let _ = serve(stream, &shared);
                    if let Some(end) = end {
                        let _ = end.shutdown(std::net::Shutdown::Both);
                    }
                    shared.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        echo
    }

    /// Goes down: the listener closes (new connections are refused once this returns)
    /// and every connection it accepted is shut down.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which sees the flag and lets the listener go.
        let _ = TcpStream::connect(self.addr);
        crate::wait_until(
            "the upstream to stop listening",
            std::time::Duration::from_secs(5),
            || TcpStream::connect(self.addr).is_err(),
        );
        for conn in self.connections.lock().unwrap().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Answers requests on one connection until it closes or asks to.
fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let (name, count) = (&shared.name, &shared.count);
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    for served in 0usize.. {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let end = line == "\r\n";
            head.push_str(&line);
            if end {
                break;
            }
        }
        let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
        shared.seen.lock().unwrap().push(path.clone());
        if served > 0 && path.starts_with(DROP_ON_REUSE) {
            let mut dropped = shared.dropped.lock().unwrap();
            if !dropped.contains(&path) {
                dropped.push(path);
                return Ok(());
            }
        }
        let lower = head.to_ascii_lowercase();
        let header = |name: &str| {
            lower
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::trim))
                .map(str::to_owned)
        };
        if header("upgrade").is_some()
            && header("connection").is_some_and(|c| c.contains("upgrade"))
        {
            // A protocol switch: 101, then every byte echoed until the client ends.
            count.fetch_add(1, Ordering::Relaxed);
            write!(
                writer,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Upstream: {name}\r\n\r\n"
            )?;
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    return writer.shutdown(std::net::Shutdown::Write);
                }
                writer.write_all(&buf[..n])?;
            }
        }
        let mut body = Vec::new();
        if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
            body.resize(len, 0);
            reader.read_exact(&mut body)?;
        } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0u8; n + 2];
                reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        count.fetch_add(1, Ordering::Relaxed);
        let payload = match path.strip_prefix("/bytes/").and_then(|n| n.parse().ok()) {
            Some(n) => vec![b'x'; n],
            None => {
                let mut payload = head.into_bytes();
                payload.extend_from_slice(&body);
                payload
            }
        };
        let close = header("connection").is_some_and(|c| c == "close");
        write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Upstream: {name}\r\nContent-Length: {}\r\n{}\r\n",
            payload.len(),
            if close { "Connection: close\r\n" } else { "" }
        )?;
        writer.write_all(&payload)?;
        if close {
            return Ok(());
        }
    }
    Ok(())
}

/// What `curl` reported of one transfer.
#[derive(Debug)]
pub struct Transfer {
    /// The status.
    pub status: u16,
    /// Response headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// New connections curl made for it (0: it reused the previous transfer's).
    pub connects: u32,
    /// The HTTP version it used (`1.1`, `2`).
    pub version: String,
}

impl Transfer {
    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs `curl` for each of `urls` in one invocation (so it reuses its connection),
/// host names resolved to `edge`, from `source` when given, with `extra` arguments for
/// each; each transfer's status, headers, body, connects and HTTP version.
pub fn curl(
    edge: SocketAddr,
    host: &str,
    urls: &[String],
    source: Option<&str>,
    extra: &[&str],
    dir: &Path,
) -> Vec<Transfer> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20"]);
    cmd.arg("--resolve")
        .arg(format!("{host}:{}:{}", edge.port(), edge.ip()));
    if let Some(source) = source {
        cmd.args(["--interface", source]);
    }
    cmd.args(extra);
    for (i, url) in urls.iter().enumerate() {
        if i > 0 {
            cmd.arg("--next");
            cmd.arg("--resolve")
                .arg(format!("{host}:{}:{}", edge.port(), edge.ip()));
            if let Some(source) = source {
                cmd.args(["--interface", source]);
            }
            cmd.args(extra);
        }
        let headers = dir.join(format!("headers-{i}"));
        let body = dir.join(format!("body-{i}"));
        cmd.arg("-D").arg(&headers).arg("-o").arg(&body);
        cmd.args(["-w", "%{http_code} %{num_connects} %{http_version}\\n"]);
        cmd.arg(url);
    }
    let out = cmd.output().expect("curl runs (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    report
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let mut fields = line.split(' ');
            let (status, connects, version) = (
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default(),
            );
            let head = std::fs::read_to_string(dir.join(format!("headers-{i}"))).unwrap();
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            Transfer {
                status: status.parse().unwrap(),
                headers,
                body: std::fs::read(dir.join(format!("body-{i}"))).unwrap(),
                connects: connects.trim().parse().unwrap(),
                version: version.trim().to_owned(),
            }
        })
        .collect()
}
