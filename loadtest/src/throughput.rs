//! `throughput`: bulk transfer on `streams` connections until the run ends.
//! `up` writes the pattern (the server reads: `serve --mode sink`, or any service that
//! reads), `down` reads and verifies the pattern (`serve --mode source`), `both` writes
//! and reads the echo at once on each connection (`serve --mode echo`), verifying it.
//! Bytes count when the write or read completes inside the window; a stream that
//! fails is recorded and reopened.
use std::{
    cell::Cell,
    rc::Rc,
    time::{Duration, Instant},
};

use crate::{
    client::{self, within, Step, Worker},
    options::check_range,
    pattern,
    stream::{Reader, Writer},
    ClientOptions, Direction, Failure, LoadError, RunResult,
};

/// Options of `throughput`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ThroughputOptions {
    /// Shared client options.
    pub client: ClientOptions,
    /// Parallel connections.
    pub streams: usize,
    /// Direction of the data.
    pub direction: Direction,
    /// Bytes per write and per read.
    pub buffer: usize,
    /// Check received bytes against the pattern (`down` and `both`).
    pub verify: bool,
}

impl ThroughputOptions {
    /// One stream up, 128 KiB buffers, verification on.
    #[must_use]
    pub fn new(client: ClientOptions) -> Self {
        Self {
            client,
            streams: 1,
            direction: Direction::Up,
            buffer: 128 << 10,
            verify: true,
        }
    }

    /// Sets the number of streams.
    #[must_use]
    pub fn streams(mut self, n: usize) -> Self {
        self.streams = n;
        self
    }

    /// Sets the direction.
    #[must_use]
    pub fn direction(mut self, d: Direction) -> Self {
        self.direction = d;
        self
    }

    /// Sets the buffer size.
    #[must_use]
    pub fn buffer(mut self, n: usize) -> Self {
        self.buffer = n;
        self
    }

    /// Turns verification on or off.
    #[must_use]
    pub fn verify(mut self, on: bool) -> Self {
        self.verify = on;
        self
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), LoadError> {
        self.client.validate()?;
        check_range("--streams", self.streams as u64, 1, 10_000)?;
        check_range("--buffer", self.buffer as u64, 1, 16 << 20)
    }
}

/// Runs `throughput` to the end.
pub fn run(opts: &ThroughputOptions) -> Result<RunResult, LoadError> {
    opts.validate()?;
    let o = opts.clone();
    client::run("throughput", &opts.client, opts.streams as u64, move |w| {
        let o = o.clone();
        async move {
            let handles = w
                .share(o.streams)
                .map(|_| monoio::spawn(stream_loop(w.clone(), o.clone())))
                .collect();
            client::join_all(handles).await;
        }
    })
}

async fn stream_loop(w: Worker, o: ThroughputOptions) {
    while Instant::now() < w.end() {
        let Some(stream) = w.open().await else {
            monoio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let failed = Rc::new(Cell::new(false));
        match o.direction {
            Direction::Up => send(&w, stream.writer, o.buffer, &failed).await,
            Direction::Down => receive(&w, stream.reader, o.buffer, o.verify, &failed).await,
            Direction::Both => {
                let writer = monoio::spawn({
                    let (w, failed) = (w.clone(), failed.clone());
                    async move { send(&w, stream.writer, o.buffer, &failed).await }
                });
                receive(&w, stream.reader, o.buffer, o.verify, &failed).await;
                writer.await;
            }
        }
        let mut rec = w.rec.borrow_mut();
        if !failed.get() {
            rec.conns.held += 1;
        }
        rec.closed(!failed.get());
    }
}

/// Records the first failure of a connection only: once one half failed, the other
/// half's failure is a consequence.
fn fail(w: &Worker, failed: &Cell<bool>, f: Failure) {
    if !failed.replace(true) {
        w.rec.borrow_mut().error(Instant::now(), f);
    }
}

async fn send(w: &Worker, mut writer: Writer, chunk: usize, failed: &Cell<bool>) {
    let mut buf = pattern::buffer(chunk);
    let mut off = 0u64;
    while !failed.get() {
        let phase = (off % pattern::PERIOD as u64) as usize;
        match within(
            w.end(),
            w.opts.timeout,
            writer.write_all(buf, phase..phase + chunk),
        )
        .await
        {
            Step::Done((Ok(()), b)) => {
                buf = b;
                off += chunk as u64;
                w.rec.borrow_mut().bytes(Instant::now(), chunk as u64, 0);
            }
            Step::Done((Err(e), _)) => return fail(w, failed, Failure::io("send", &e)),
            Step::TimedOut => return fail(w, failed, Failure::timeout("send")),
            Step::Ended => return,
        }
    }
}

async fn receive(w: &Worker, mut reader: Reader, chunk: usize, verify: bool, failed: &Cell<bool>) {
    let expected = pattern::buffer(chunk);
    let mut buf = vec![0u8; chunk];
    let mut off = 0u64;
    while !failed.get() {
        match within(w.end(), w.opts.timeout, reader.read(buf, 0..chunk)).await {
            Step::Done((Ok(0), _)) => {
                return fail(
                    w,
                    failed,
                    Failure::new(
                        crate::ErrorClass::ShortRead,
                        "receive: peer closed the stream",
                    ),
                )
            }
            Step::Done((Ok(n), b)) => {
                if verify && !pattern::matches(&expected, off, &b[..n]) {
                    return fail(w, failed, Failure::mismatch("receive"));
                }
                buf = b;
                off += n as u64;
                w.rec.borrow_mut().bytes(Instant::now(), 0, n as u64);
            }
            Step::Done((Err(e), _)) => return fail(w, failed, Failure::io("receive", &e)),
            Step::TimedOut => return fail(w, failed, Failure::timeout("receive")),
            Step::Ended => return,
        }
    }
}
