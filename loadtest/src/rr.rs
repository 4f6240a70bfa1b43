//! `rr`: request/response on persistent connections. Each connection sends `size`
//! pattern bytes, reads the echo, verifies it, and records the latency.
//!
//! Closed loop (no rate): the next request leaves when the previous answer is in;
//! latency is measured from the send. Open loop (`rate` requests/s over all
//! connections): connection `k` sends on a fixed schedule (every
//! `connections / rate` seconds, staggered by `k`). When an answer comes back late
//! and the next send is already due, the wait is the server's doing, so latency is
//! measured from the *intended* send time (the coordinated-omission correction of
//! wrk2). When the connection was idle and only the harness's millisecond timer made
//! the send late, that lateness is not the server's, so latency is measured from the
//! actual send; the lateness is reported separately as `schedule_lag`. The
//! uncorrected `service_time` (from the actual send) is reported too.
use std::time::{Duration, Instant};

use crate::{
    blocking,
    client::{self, Worker},
    options::{check_range, check_rate},
    pace::Schedule,
    pattern,
    stream::Stream,
    ClientModel, ClientOptions, Failure, LoadError, RunResult,
};

/// Options of `rr`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RrOptions {
    /// Shared client options.
    pub client: ClientOptions,
    /// Concurrent connections.
    pub connections: usize,
    /// Request (and echo) size in bytes.
    pub size: usize,
    /// Open-loop rate in requests per second over all connections; `None` = closed loop.
    pub rate: Option<f64>,
    /// Client model: async tasks (default) or a pool of blocking threads, one per
    /// connection (see [`crate::blocking`]).
    pub model: ClientModel,
}

impl RrOptions {
    /// Closed loop, one connection, 64-byte requests.
    #[must_use]
    pub fn new(client: ClientOptions) -> Self {
        Self {
            client,
            connections: 1,
            size: 64,
            rate: None,
            model: ClientModel::Async,
        }
    }

    /// Sets the number of connections.
    #[must_use]
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }

    /// Sets the request size.
    #[must_use]
    pub fn size(mut self, n: usize) -> Self {
        self.size = n;
        self
    }

    /// Sets the open-loop rate.
    #[must_use]
    pub fn rate(mut self, r: Option<f64>) -> Self {
        self.rate = r;
        self
    }

    /// Sets the client model.
    #[must_use]
    pub fn model(mut self, m: ClientModel) -> Self {
        self.model = m;
        self
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), LoadError> {
        self.client.validate()?;
        check_range("--connections", self.connections as u64, 1, 1_000_000)?;
        check_range("--size", self.size as u64, 1, 16 << 20)?;
        check_rate(self.rate)?;
        if self.model == ClientModel::Blocking {
            blocking::check_options("--connections", self.connections, self.rate)?;
        }
        Ok(())
    }
}

/// Runs `rr` to the end and returns the merged measurements.
pub fn run(opts: &RrOptions) -> Result<RunResult, LoadError> {
    opts.validate()?;
    if opts.model == ClientModel::Blocking {
        return blocking::rr(opts);
    }
    let (connections, size, rate) = (opts.connections, opts.size, opts.rate);
    client::run(
        "rr",
        &opts.client,
        connections as u64,
        move |w| async move {
            let start = Instant::now();
            let mut handles = Vec::new();
            for k in w.share(connections) {
                let schedule = rate.map(|r| Schedule::new(start, k, connections, r));
                handles.push(monoio::spawn(connection(w.clone(), k, size, schedule)));
            }
            client::join_all(handles).await;
        },
    )
}

/// One connection's life: reconnects after a failure until the run ends.
async fn connection(w: Worker, k: usize, size: usize, mut schedule: Option<Schedule>) {
    let end = w.end();
    let mut seq = k as u64;
    while Instant::now() < end && schedule.is_none_or(|s| !s.finished(end)) {
        let Some(mut stream) = w.open().await else {
            monoio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if requests(&w, &mut stream, size, schedule.as_mut(), &mut seq).await {
            // The run ended with this connection healthy.
            let mut rec = w.rec.borrow_mut();
            rec.conns.held += 1;
            rec.closed(true);
            return;
        }
    }
}

/// Sends requests on one connection; true when the run ended, false after a
/// (recorded) failure.
async fn requests(
    w: &Worker,
    stream: &mut Stream,
    size: usize,
    mut schedule: Option<&mut Schedule>,
    seq: &mut u64,
) -> bool {
    let end = w.end();
    let mut req = pattern::buffer(size);
    let mut resp = vec![0u8; size];
    loop {
        // When is this request due, and was the connection idle until then?
        let slot = match schedule.as_deref_mut() {
            None if Instant::now() >= end => return true,
            None => None,
            Some(s) => match s.wait(end).await {
                None => return true,
                slot => slot,
            },
        };
        let sent = Instant::now();
        let phase = (*seq % pattern::PERIOD as u64) as usize;
        let res =
            monoio::time::timeout(w.opts.timeout, exchange(stream, req, resp, phase, size)).await;
        let done = Instant::now();
        match res {
            Ok((Ok(()), q, p)) => (req, resp) = (q, p),
            Ok((Err(f), _, _)) => {
                w.fail(f);
                return false;
            }
            Err(_) => {
                w.fail(Failure::timeout("request"));
                return false;
            }
        }
        let service = done.duration_since(sent);
        match slot {
            None => w.rec.borrow_mut().op(sent, service),
            Some(slot) => w.rec.borrow_mut().op_open(
                slot.intended,
                slot.latency(sent, done),
                service,
                slot.lag(sent),
            ),
        }
        *seq += 1;
    }
}

/// Sends `req[phase..phase + size]`, reads the echo into `resp`, and verifies it.
/// The read is posted together with the write (`join!`), so that on io_uring both
/// go to the kernel in one submission.
async fn exchange(
    s: &mut Stream,
    req: Vec<u8>,
    resp: Vec<u8>,
    phase: usize,
    size: usize,
) -> (Result<(), Failure>, Vec<u8>, Vec<u8>) {
    let Stream { reader, writer } = s;
    let ((sent, req), (got, resp)) = monoio::join!(
        writer.write_all(req, phase..phase + size),
        client::read_exact(reader, resp, 0..size, "receive")
    );
    if let Err(e) = sent {
        return (Err(Failure::io("send", &e)), req, resp);
    }
    if let Err(f) = got {
        return (Err(f), req, resp);
    }
    if resp[..size] != req[phase..phase + size] {
        return (Err(Failure::mismatch("echo")), req, resp);
    }
    (Ok(()), req, resp)
}
