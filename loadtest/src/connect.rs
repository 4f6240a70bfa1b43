//! `connect`: connection-setup rate. Each of `concurrency` loops opens a new
//! connection (TCP, then TLS if asked), sends `size` pattern bytes, reads the echo,
//! verifies it and closes. Latency is connect-to-first-byte: from the start of the
//! connect to the first byte of the echo. One operation is one full cycle. With
//! `size` 0 nothing is sent: the cycle is connect (and TLS handshake), then close,
//! the latency is the set-up time, and any TCP service can be the target.
use std::time::Instant;

use crate::{
    blocking,
    client::{self, Worker},
    options::{check_range, check_rate},
    pace::Schedule,
    pattern,
    stream::Stream,
    ClientModel, ClientOptions, Failure, LoadError, RunResult,
};

/// Options of `connect`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Shared client options.
    pub client: ClientOptions,
    /// Connect loops running at once.
    pub concurrency: usize,
    /// Payload echoed on each connection.
    pub size: usize,
    /// Open-loop rate in connection cycles per second over all loops; `None` =
    /// closed loop.
    pub rate: Option<f64>,
    /// Client model: async tasks (default) or a pool of blocking threads, one per
    /// loop (see [`crate::blocking`]).
    pub model: ClientModel,
}

impl ConnectOptions {
    /// One loop, 32-byte payload.
    #[must_use]
    pub fn new(client: ClientOptions) -> Self {
        Self {
            client,
            concurrency: 1,
            size: 32,
            rate: None,
            model: ClientModel::Async,
        }
    }

    /// Sets the concurrency.
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Sets the payload size.
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
        check_range("--concurrency", self.concurrency as u64, 1, 100_000)?;
        check_range("--size", self.size as u64, 0, 1 << 20)?;
        check_rate(self.rate)?;
        if self.model == ClientModel::Blocking {
            blocking::check_options("--concurrency", self.concurrency, self.rate)?;
        }
        Ok(())
    }
}

/// Runs `connect` to the end.
pub fn run(opts: &ConnectOptions) -> Result<RunResult, LoadError> {
    opts.validate()?;
    if opts.model == ClientModel::Blocking {
        return blocking::connect(opts);
    }
    let (concurrency, size, rate) = (opts.concurrency, opts.size, opts.rate);
    client::run(
        "connect",
        &opts.client,
        concurrency as u64 * 2,
        move |w| async move {
            let start = Instant::now();
            let handles = w
                .share(concurrency)
                .map(|k| {
                    let schedule = rate.map(|r| Schedule::new(start, k, concurrency, r));
                    monoio::spawn(cycle_loop(w.clone(), k, size, schedule))
                })
                .collect();
            client::join_all(handles).await;
        },
    )
}

async fn cycle_loop(w: Worker, k: usize, size: usize, mut schedule: Option<Schedule>) {
    let end = w.end();
    let mut req = pattern::buffer(size);
    let mut resp = vec![0u8; size];
    let mut seq = k as u64;
    loop {
        let slot = match schedule.as_mut() {
            None if Instant::now() >= end => return,
            None => None,
            Some(s) => match s.wait(end).await {
                None => return,
                slot => slot,
            },
        };
        let t0 = Instant::now();
        let record = |first: Instant| {
            let mut rec = w.rec.borrow_mut();
            match slot {
                None => rec.op(t0, first.duration_since(t0)),
                Some(slot) => rec.op_open(
                    slot.intended,
                    slot.latency(t0, first),
                    first.duration_since(t0),
                    slot.lag(t0),
                ),
            }
            rec.closed(true);
        };
        let Some(mut stream) = w.open().await else {
            continue;
        };
        if size == 0 {
            record(Instant::now());
            continue;
        }
        let phase = (seq % pattern::PERIOD as u64) as usize;
        seq += 1;
        match monoio::time::timeout(w.opts.timeout, echo(&mut stream, req, resp, phase, size)).await
        {
            Ok((Ok(first), q, p)) => {
                (req, resp) = (q, p);
                record(first);
            }
            Ok((Err(f), q, p)) => {
                (req, resp) = (q, p);
                w.fail(f);
            }
            Err(_) => {
                (req, resp) = (pattern::buffer(size), vec![0u8; size]);
                w.fail(Failure::timeout("echo"));
            }
        }
    }
}

/// Sends the payload and reads the echo; returns when the first byte arrived.
async fn echo(
    s: &mut Stream,
    req: Vec<u8>,
    resp: Vec<u8>,
    phase: usize,
    size: usize,
) -> (Result<Instant, Failure>, Vec<u8>, Vec<u8>) {
    let (res, req) = s.writer.write_all(req, phase..phase + size).await;
    if let Err(e) = res {
        return (Err(Failure::io("send", &e)), req, resp);
    }
    let (res, resp) = s.reader.read(resp, 0..size).await;
    let first = Instant::now();
    let n = match res {
        Ok(0) => return (Err(Failure::short_read("receive", 0, size)), req, resp),
        Ok(n) => n,
        Err(e) => return (Err(Failure::io("receive", &e)), req, resp),
    };
    let (res, resp) = client::read_exact(&mut s.reader, resp, n..size, "receive").await;
    if let Err(f) = res {
        return (Err(f), req, resp);
    }
    if resp[..size] != req[phase..phase + size] {
        return (Err(Failure::mismatch("echo")), req, resp);
    }
    (Ok(first), req, resp)
}
