//! `hold`: opens `connections` connections (at most `open_concurrency` attempts in
//! flight per worker) and keeps each alive with a small echo every `interval`,
//! staggered so that the echoes spread evenly. A connection that fails is counted and
//! not reopened; at the end the report says how many were opened, how many are still
//! held, the peak, and every failure by class. The open-file limit is raised to fit.
use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    time::{Duration, Instant},
};

use crate::{
    client::{self, Worker},
    options::{check_range, invalid},
    pattern,
    stream::Stream,
    ClientOptions, Failure, LoadError, RunResult,
};

/// Size of one keep-alive echo.
const PING: usize = 16;

/// Options of `hold`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HoldOptions {
    /// Shared client options.
    pub client: ClientOptions,
    /// Connections to open and hold.
    pub connections: usize,
    /// Time between two keep-alive echoes on one connection.
    pub interval: Duration,
    /// Connection attempts in flight at once, per worker.
    pub open_concurrency: usize,
}

impl HoldOptions {
    /// 100 connections, an echo every 5 s, 256 attempts in flight per worker.
    #[must_use]
    pub fn new(client: ClientOptions) -> Self {
        Self {
            client,
            connections: 100,
            interval: Duration::from_secs(5),
            open_concurrency: 256,
        }
    }

    /// Sets the number of connections.
    #[must_use]
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }

    /// Sets the keep-alive interval.
    #[must_use]
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// Sets the attempts in flight per worker.
    #[must_use]
    pub fn open_concurrency(mut self, n: usize) -> Self {
        self.open_concurrency = n;
        self
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), LoadError> {
        self.client.validate()?;
        check_range("--connections", self.connections as u64, 1, 10_000_000)?;
        check_range(
            "--open-concurrency",
            self.open_concurrency as u64,
            1,
            100_000,
        )?;
        if self.interval < Duration::from_millis(10) || self.interval > Duration::from_secs(3600) {
            return Err(invalid("--interval must be between 10ms and 1h"));
        }
        Ok(())
    }
}

/// Runs `hold` to the end.
pub fn run(opts: &HoldOptions) -> Result<RunResult, LoadError> {
    opts.validate()?;
    let (total, interval, openers) = (opts.connections, opts.interval, opts.open_concurrency);
    client::run("hold", &opts.client, total as u64, move |w| async move {
        let mine: Rc<Vec<usize>> = Rc::new(w.share(total).collect());
        let cursor = Rc::new(Cell::new(0usize));
        let held = Rc::new(RefCell::new(Vec::new()));
        let opener_tasks = (0..openers.min(mine.len()))
            .map(|_| {
                let (w, mine, cursor, held) =
                    (w.clone(), mine.clone(), cursor.clone(), held.clone());
                monoio::spawn(async move {
                    while Instant::now() < w.end() {
                        let i = cursor.get();
                        let Some(&k) = mine.get(i) else { break };
                        cursor.set(i + 1);
                        if let Some(stream) = w.open().await {
                            let phase = Duration::from_secs_f64(
                                interval.as_secs_f64() * k as f64 / total as f64,
                            );
                            let first = Instant::now() + phase;
                            held.borrow_mut().push(monoio::spawn(keep_alive(
                                w.clone(),
                                stream,
                                first,
                                interval,
                                k,
                            )));
                        }
                    }
                })
            })
            .collect();
        client::join_all(opener_tasks).await;
        let tasks = std::mem::take(&mut *held.borrow_mut());
        client::join_all(tasks).await;
    })
}

/// Echoes on one connection every `interval` from `first` until the run ends.
async fn keep_alive(w: Worker, mut stream: Stream, first: Instant, interval: Duration, k: usize) {
    let end = w.end();
    let mut next = first;
    let mut req = pattern::buffer(PING);
    let mut resp = vec![0u8; PING];
    let mut seq = k as u64;
    while next < end {
        monoio::time::sleep_until(monoio::time::Instant::from_std(next)).await;
        let phase = (seq % pattern::PERIOD as u64) as usize;
        seq += 1;
        let sent = Instant::now();
        match monoio::time::timeout(w.opts.timeout, ping(&mut stream, req, resp, phase)).await {
            Ok((Ok(()), q, p)) => (req, resp) = (q, p),
            Ok((Err(f), _, _)) => return w.fail(f),
            Err(_) => return w.fail(Failure::timeout("keep-alive echo")),
        }
        w.rec.borrow_mut().op(sent, sent.elapsed());
        next += interval;
    }
    let mut rec = w.rec.borrow_mut();
    rec.conns.held += 1;
    rec.closed(true);
}

async fn ping(
    s: &mut Stream,
    req: Vec<u8>,
    resp: Vec<u8>,
    phase: usize,
) -> (Result<(), Failure>, Vec<u8>, Vec<u8>) {
    let (res, req) = s.writer.write_all(req, phase..phase + PING).await;
    if let Err(e) = res {
        return (Err(Failure::io("keep-alive send", &e)), req, resp);
    }
    let (res, resp) = client::read_exact(&mut s.reader, resp, 0..PING, "keep-alive receive").await;
    if let Err(f) = res {
        return (Err(f), req, resp);
    }
    if resp[..] != req[phase..phase + PING] {
        return (Err(Failure::mismatch("keep-alive echo")), req, resp);
    }
    (Ok(()), req, resp)
}
