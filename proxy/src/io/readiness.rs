//! Reads that keep no large buffer while a stream idles. A pending io_uring read owns
//! its buffer until bytes arrive, so a stream that idles in a read holds that buffer
//! for as long as it idles: after a burst, up to 256 KiB of ciphertext and a 64 KiB
//! chunk per direction. Readers pace their reads with [`NextRead`]: small messages are
//! read into small buffers by the ring at once (what a request-response stream idles
//! in, and no extra step on its round trip); bulk into large ones; and once a large
//! read drains the stream the reader lets its buffer go, waits for readiness
//! ([`Readiness::wait_readable`]) and reads what arrived at once
//! ([`Readiness::read_arrived`]: a plain `recv` on a socket, not another trip round
//! the ring).

use std::{future::Future, io, mem::MaybeUninit, os::fd::AsRawFd};

use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, OwnedReadHalf},
    net::TcpStream,
    BufResult,
};

/// A read buffer this size or smaller is small: lent to the ring, and so kept while
/// the stream idles.
pub const SMALL_READ: usize = 4096;

/// How a reader makes its next read, from what its last one found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextRead {
    /// A small buffer ([`SMALL_READ`]) lent to the ring: messages are small, and a
    /// stream idles in this read.
    Small,
    /// A large buffer, only for bytes already there: read at once when they are,
    /// otherwise the buffer is let go until readiness (a burst may have ended).
    Large,
}

impl NextRead {
    /// After a read of `n` bytes into room for `asked`: large once a read fills its
    /// buffer, small again once one finds less than a small buffer's worth.
    pub fn after(n: usize, asked: usize) -> Self {
        if n >= asked && asked > 0 || n >= SMALL_READ {
            NextRead::Large
        } else {
            NextRead::Small
        }
    }

    /// Room for this read: [`SMALL_READ`], or `large`.
    pub fn room(self, large: usize) -> usize {
        match self {
            NextRead::Small => SMALL_READ,
            NextRead::Large => large,
        }
    }
}

/// An empty buffer of exactly `capacity`: `kept` when it has that capacity (the first
/// time a [`read_paced`] buffer is made), else a new one (after a size change, or after
/// `read_paced` let the first go).
pub fn kept_or_new(kept: &mut Vec<u8>, capacity: usize) -> Vec<u8> {
    let mut buf = std::mem::take(kept);
    if buf.capacity() != capacity {
        buf = Vec::with_capacity(capacity);
    }
    buf.clear();
    buf
}

/// A byte stream that can wait for readable bytes without a read in flight.
pub trait Readiness {
    /// Resolves once a read would not wait: bytes, EOF or an error are there. May
    /// resolve early (a read then waits as it would have); never later.
    fn wait_readable(&mut self) -> impl Future<Output = io::Result<()>>;

    /// Reads what has already arrived into `buf` (marking it initialised) without
    /// waiting: `None` when nothing has, or when this stream cannot tell without
    /// waiting; then an ordinary read follows.
    fn read_arrived<B: IoBufMut>(&mut self, buf: &mut B) -> Option<io::Result<usize>>;
}

/// Reads into `buf`, after a [`Readiness::wait_readable`]: what has arrived, at once,
/// or by an ordinary read when the stream could not tell (or woke early).
pub async fn read_woken<R: AsyncReadRent + Readiness, B: IoBufMut>(
    r: &mut R,
    mut buf: B,
) -> BufResult<usize, B> {
    match r.read_arrived(&mut buf) {
        Some(res) => (res, buf),
        None => r.read(buf).await,
    }
}

/// One read paced by `next`. A small one is an ordinary read. A large one never lends
/// its buffer to a stream with nothing to read: it reads what has arrived at once, or
/// lets the buffer go, waits for readiness and then reads. `buffer` makes the buffer
/// (again, after one was let go).
pub async fn read_paced<R: AsyncReadRent + Readiness, B: IoBufMut>(
    r: &mut R,
    next: NextRead,
    mut buffer: impl FnMut() -> B,
) -> BufResult<usize, B> {
    if next == NextRead::Small {
        return r.read(buffer()).await;
    }
    let mut buf = buffer();
    if let Some(res) = r.read_arrived(&mut buf) {
        return (res, buf);
    }
    drop(buf);
    if let Err(e) = r.wait_readable().await {
        return (Err(e), buffer());
    }
    read_woken(r, buffer()).await
}

impl Readiness for TcpStream {
    fn wait_readable(&mut self) -> impl Future<Output = io::Result<()>> {
        TcpStream::readable(self, false)
    }

    fn read_arrived<B: IoBufMut>(&mut self, buf: &mut B) -> Option<io::Result<usize>> {
        // SAFETY: the buffer's whole capacity is its own allocation, lent for this call;
        // recv writes at most that many bytes.
        let room = unsafe {
            std::slice::from_raw_parts_mut(
                buf.write_ptr().cast::<MaybeUninit<u8>>(),
                buf.bytes_total(),
            )
        };
        match super::sockets::recv_uninit(self.as_raw_fd(), room, libc::MSG_DONTWAIT) {
            Ok(got) => {
                let n = got.len();
                // SAFETY: recv initialised the first `n` bytes.
                unsafe { buf.set_init(n) };
                Some(Ok(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => Some(Err(e)),
        }
    }
}

impl<T: Readiness> Readiness for OwnedReadHalf<T> {
    fn wait_readable(&mut self) -> impl Future<Output = io::Result<()>> {
        // SAFETY: the read half is the only user of the stream's read side, as in
        // monoio's own `AsyncReadRent` for `OwnedReadHalf`; waiting touches nothing else.
        let stream = unsafe { &mut *self.0.get() };
        stream.wait_readable()
    }

    fn read_arrived<B: IoBufMut>(&mut self, buf: &mut B) -> Option<io::Result<usize>> {
        // SAFETY: as for `wait_readable`: only the read side is touched.
        let stream = unsafe { &mut *self.0.get() };
        stream.read_arrived(buf)
    }
}

/// For tests: a TCP stream that checks the promise readers built on [`Readiness`] make.
#[cfg(test)]
pub(crate) mod watched {
    use std::{
        cell::Cell,
        os::fd::{AsRawFd, RawFd},
        rc::Rc,
    };

    use monoio::{
        buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut},
        io::{AsyncReadRent, AsyncWriteRent, Split},
        net::TcpStream,
        BufResult,
    };

    use super::Readiness;

    /// Counts of a [`Watched`] stream's reads, shared with the test.
    #[derive(Default)]
    pub(crate) struct ReadCounts {
        /// Reads with a large buffer, lent to the ring or not.
        pub(crate) large: Cell<usize>,
        /// Reads that lent a large buffer to a socket with nothing to read: each would
        /// have held it for as long as the stream idled.
        pub(crate) idle_large: Cell<usize>,
    }

    /// A TCP stream whose reads check that none lends a buffer larger than
    /// [`SMALL_READ`](super::SMALL_READ) to a socket with nothing to read.
    pub(crate) struct Watched {
        stream: TcpStream,
        counts: Rc<ReadCounts>,
    }

    impl Watched {
        pub(crate) fn new(stream: std::net::TcpStream) -> (Self, Rc<ReadCounts>) {
            let counts = Rc::new(ReadCounts::default());
            stream.set_nonblocking(true).expect("non-blocking");
            let stream = TcpStream::from_std(stream).expect("a monoio stream");
            let watched = Self {
                stream,
                counts: counts.clone(),
            };
            (watched, counts)
        }
    }

    fn has_input(fd: RawFd) -> bool {
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut poll, 1, 0) == 1 }
    }

    // SAFETY: only dispatches to a TcpStream, which is `Split`; the read path touches
    // only the counts besides the stream's read side.
    unsafe impl Split for Watched {}

    impl AsRawFd for Watched {
        fn as_raw_fd(&self) -> RawFd {
            self.stream.as_raw_fd()
        }
    }

    impl Watched {
        /// Counts a read about to be made with `room` bytes of buffer, `lent` to the
        /// ring (held until bytes arrive) or not (a `recv` that does not wait).
        fn check(&mut self, room: usize, lent: bool) {
            let counts = &self.counts;
            if room > super::SMALL_READ {
                counts.large.set(counts.large.get() + 1);
                if lent && !has_input(self.stream.as_raw_fd()) {
                    counts.idle_large.set(counts.idle_large.get() + 1);
                }
            }
        }
    }

    impl Readiness for Watched {
        async fn wait_readable(&mut self) -> std::io::Result<()> {
            self.stream.wait_readable().await
        }

        fn read_arrived<B: IoBufMut>(&mut self, buf: &mut B) -> Option<std::io::Result<usize>> {
            let room = buf.bytes_total();
            self.check(room, false);
            self.stream.read_arrived(buf)
        }
    }

    impl AsyncReadRent for Watched {
        async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
            let room = buf.bytes_total();
            self.check(room, true);
            self.stream.read(buf).await
        }

        async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
            // Not checked: the readers under test read into one buffer.
            self.stream.readv(buf).await
        }
    }

    impl AsyncWriteRent for Watched {
        async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
            self.stream.write(buf).await
        }

        async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
            self.stream.writev(buf).await
        }

        async fn flush(&mut self) -> std::io::Result<()> {
            self.stream.flush().await
        }

        async fn shutdown(&mut self) -> std::io::Result<()> {
            self.stream.shutdown().await
        }
    }

    /// What an [`echo_client`] sends, one message at a time: small ones (read into small
    /// buffers) and large ones (whose last read drains the socket).
    pub(crate) const ECHO_MESSAGES: [usize; 5] = [1, 64, 70_000, 200_000, 3];

    /// A connected pair of blocking loopback sockets: (far, near).
    pub(crate) fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let far =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (near, _) = listener.accept().expect("accept");
        (far, near)
    }

    /// The bytes of a message `len` long.
    pub(crate) fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// A client on `stream` that sends each message and reads its echo before the next
    /// (so the stream drains and idles between them), then ends its direction and
    /// expects the end back.
    pub(crate) fn echo_client(
        mut stream: std::net::TcpStream,
        messages: &'static [usize],
    ) -> std::thread::JoinHandle<()> {
        use std::io::{Read, Write};
        std::thread::spawn(move || {
            for &size in messages {
                stream.write_all(&pattern(size)).unwrap();
                let mut back = vec![0u8; size];
                stream.read_exact(&mut back).unwrap();
                assert!(back == pattern(size), "{size} bytes echoed intact");
            }
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "nothing after the echoes");
        })
    }

    /// Asserts that `side` made large reads, and never lent a large buffer to a socket
    /// with nothing to read.
    pub(crate) fn assert_never_idle(side: &str, reads: &ReadCounts) {
        assert!(reads.large.get() > 0, "{side}: no large read was made");
        assert_eq!(
            reads.idle_large.get(),
            0,
            "{side}: large buffers lent to a socket with nothing to read"
        );
    }
}
