//! Chunk framing ([`crate::wire::chunk`]) between two plain sockets, a local one and a
//! `tcp` data channel, with bulk bytes moved by `splice(2)` and small ones copied.
//!
//! The framing lets a `tcp` channel carry one stream after another, as
//! [`super::chunked::forward`] does for any stream; this pump keeps what splice gave
//! the one-stream channels it replaced: bulk bytes never enter user space.
//!
//! - **Local to channel.** A read into a buffer of [`SMALL`] bytes; a message that fits
//!   goes out as one `send` of header and bytes (a 64-byte request costs a read and a
//!   send, as a copy loop would). A read that fills the buffer means bulk: the next
//!   reads are splices of up to [`MAX_CHUNK`] (1 MiB) into a pipe (enlarged to that
//!   once a splice fills the default 64 KiB), each sent as a header
//!   (`MSG_MORE`, so it leaves in the same segment) and a splice of exactly those
//!   bytes, until a splice returns less than [`SMALL`].
//! - **Channel to local.** Reads into the channel's [`FrameReader`] buffer parse
//!   headers and deliver what they hold; once the rest of a chunk is at least
//!   [`SPLICE_AT_LEAST`] bytes, exactly that many are spliced, so the read never runs
//!   past the chunk.
//!
//! Buffers are held only while bytes move: a stream waiting for its next byte holds no
//! buffer and no pipe. Readiness comes from the runtime (a one-shot poll on io_uring);
//! the syscalls themselves are non-blocking, as in [`super::splice`]. A read that
//! returned less than it asked for drained the socket, so the next one waits for
//! readiness first rather than failing once with `EAGAIN`: a request and its answer
//! cost a read and a send per hop, nothing more.

use std::{
    io,
    mem::MaybeUninit,
    os::fd::{AsRawFd, RawFd},
};

use bytes::{Buf, BytesMut};
use monoio::net::TcpStream;

use super::{
    chunked::ChunkedOutcome,
    framed::FrameReader,
    idle::Progress,
    sockets,
    splice::{join_or_first_error, splice, Pipe, PumpError, DEFAULT_PIPE_SIZE},
    PumpStats, Side,
};
use crate::wire::chunk::{decode_chunk_header, ChunkHeader, EOS_KEEP, EOS_RETIRE, MAX_CHUNK};

/// The copy buffer; a read that fills it switches a direction to splice.
pub const SMALL: usize = 16 * 1024;
/// The smallest rest of a chunk worth a splice rather than a read.
pub const SPLICE_AT_LEAST: usize = 8 * 1024;

/// Forwards `local <-> channel`, chunk-framed on the channel, until both directions
/// end; the channel comes back when both end markers said "keep". `keep_channel` is
/// asked when `local` reaches EOF. Bytes read past the peer's end marker stay in
/// `reader`. `channel` is already non-blocking: a `tcp` data channel or peer link is
/// made so once, where it is made (edge/agent_port.rs, edge/peer_out.rs,
/// agent/datachan/plain.rs), rather than again for each of its streams. Not
/// cancel-safe.
pub async fn forward(
    local: TcpStream,
    channel: TcpStream,
    reader: &mut FrameReader,
    keep_channel: impl FnOnce() -> bool,
    progress: &Progress,
) -> ChunkedOutcome<TcpStream> {
    if let Err(source) = sockets::set_nonblocking(local.as_raw_fd()) {
        return ChunkedOutcome {
            reusable: None,
            result: Err(PumpError {
                side: Side::Inbound,
                source,
            }),
        };
    }
    let result = {
        let up = std::pin::pin!(to_channel(&local, &channel, keep_channel, progress));
        let down = std::pin::pin!(from_channel(
            &channel,
            &local,
            reader,
            Deliver::Bytes,
            progress
        ));
        join_or_first_error(up, down).await
    };
    match result {
        Ok(((up, we_keep), (down, they_keep))) => ChunkedOutcome {
            reusable: (we_keep && they_keep).then_some(channel),
            result: Ok(PumpStats {
                inbound_to_outbound: up,
                outbound_to_inbound: down,
            }),
        },
        Err(e) => {
            if e.side == Side::Outbound {
                sockets::reset_on_close(local.as_raw_fd());
            }
            ChunkedOutcome {
                reusable: None,
                result: Err(e),
            }
        }
    }
}

/// Relays chunk-framed streams between two plain channels (a peer link `a` and a
/// `tcp` data channel `b`, at the edge holding the session), as
/// [`super::chunked_relay::relay`] does for any two, but with each chunk's header
/// copied and its bytes spliced (or copied when few). Each direction's end marker is
/// answered with ours, "keep"; (bytes `a` to `b`, bytes `b` to `a`), and each channel
/// back when its far side kept it (bytes past `a`'s end marker stay in `a_reader`).
/// An error resets both. Not cancel-safe.
pub async fn relay(
    a: TcpStream,
    a_reader: &mut FrameReader,
    b: TcpStream,
    b_reader: &mut FrameReader,
    progress: &Progress,
) -> super::chunked_relay::RelayOutcome<TcpStream, TcpStream> {
    use super::chunked_relay::RelayOutcome;
    let failed = |e: PumpError| {
        for s in [&a, &b] {
            sockets::reset_on_close(s.as_raw_fd());
        }
        e
    };
    let result = match [&a, &b]
        .into_iter()
        .try_for_each(|s| sockets::set_nonblocking(s.as_raw_fd()))
    {
        Err(source) => Err(inbound(source)),
        Ok(()) => {
            let a_to_b = std::pin::pin!(from_channel(&a, &b, a_reader, Deliver::Chunks, progress));
            let b_to_a = std::pin::pin!(from_channel(&b, &a, b_reader, Deliver::Chunks, progress));
            join_or_first_error(a_to_b, b_to_a).await
        }
    };
    match result {
        Ok(((a_bytes, a_keeps), (b_bytes, b_keeps))) => RelayOutcome {
            result: Ok(PumpStats {
                inbound_to_outbound: a_bytes,
                outbound_to_inbound: b_bytes,
            }),
            a_again: a_keeps.then_some(a),
            b_again: (b_keeps && !b_reader.has_leftover()).then_some(b),
        },
        Err(e) => RelayOutcome {
            result: Err(failed(e)),
            a_again: None,
            b_again: None,
        },
    }
}

fn inbound(source: io::Error) -> PumpError {
    PumpError {
        side: Side::Inbound,
        source,
    }
}

fn outbound(source: io::Error) -> PumpError {
    PumpError {
        side: Side::Outbound,
        source,
    }
}

/// The local side's bytes as chunks, its EOF as our end marker: (bytes, kept).
async fn to_channel(
    local: &TcpStream,
    channel: &TcpStream,
    keep_channel: impl FnOnce() -> bool,
    progress: &Progress,
) -> Result<(u64, bool), PumpError> {
    let mut total = 0u64;
    let mut bulk = false;
    // The last read returned less than it could take: the socket is drained, so the
    // next read waits for readiness first instead of failing once with EAGAIN (a
    // syscall per message saved). Also assumed for a new stream: at the edge the
    // client's first bytes went with the stream header, and an upstream the agent has
    // just connected has rarely spoken yet; a poll on a ready socket completes at once.
    let mut drained = true;
    loop {
        let n = if bulk {
            match splice_chunk(local, channel, progress).await? {
                Some(n) => {
                    bulk = n >= SMALL;
                    drained = !bulk;
                    n
                }
                None => {
                    bulk = false;
                    continue;
                }
            }
        } else {
            let n = copy_chunk(local, channel, drained, progress).await?;
            bulk = n == SMALL;
            drained = !bulk;
            n
        };
        if n == 0 {
            let keep = keep_channel();
            let marker = if keep { EOS_KEEP } else { EOS_RETIRE };
            send_all(channel, &marker.to_be_bytes(), 0)
                .await
                .map_err(outbound)?;
            return Ok((total, keep));
        }
        total += n as u64;
    }
}

/// One read of at most [`SMALL`] bytes from `local`, sent as one chunk; 0 at EOF.
/// `drained`: the last read emptied the socket, so wait for readiness before reading.
/// The bytes pass through a buffer on the thread's stack; only what the channel cannot
/// take at once is copied to the heap to wait for room.
async fn copy_chunk(
    local: &TcpStream,
    channel: &TcpStream,
    drained: bool,
    progress: &Progress,
) -> Result<usize, PumpError> {
    let mut wait = drained;
    loop {
        if wait {
            local.readable(false).await.map_err(inbound)?;
        }
        let n = match read_and_send(local.as_raw_fd(), channel.as_raw_fd()) {
            Ok(Relayed::Sent(n)) => n,
            Ok(Relayed::Pending { n, rest }) => {
                send_all(channel, &rest, 0).await.map_err(outbound)?;
                n
            }
            Err(e) if e.side == Side::Inbound => {
                match e.source.kind() {
                    io::ErrorKind::WouldBlock => wait = true,
                    io::ErrorKind::Interrupted => wait = false,
                    _ => return Err(e),
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        progress.bump(n as u64);
        return Ok(n);
    }
}

/// What [`read_and_send`] did with one read.
enum Relayed {
    /// `n` bytes read and sent as one chunk (0: EOF, nothing sent).
    Sent(usize),
    /// `n` bytes read; the end of their chunk (`rest`) still has to be sent.
    Pending { n: usize, rest: Vec<u8> },
}

/// One non-blocking read of at most [`SMALL`] bytes from `from` into a stack buffer,
/// sent on `to` behind its chunk header with one non-blocking `send`.
fn read_and_send(from: RawFd, to: RawFd) -> Result<Relayed, PumpError> {
    let mut chunk = [MaybeUninit::<u8>::uninit(); 4 + SMALL];
    let (header, body) = chunk.split_at_mut(4);
    let n = sockets::recv_uninit(from, body, 0).map_err(inbound)?.len();
    if n == 0 {
        return Ok(Relayed::Sent(0));
    }
    for (slot, byte) in header.iter_mut().zip((n as u32).to_be_bytes()) {
        slot.write(byte);
    }
    // SAFETY: the header was written just above and the `n` bytes behind it by recv.
    let whole = unsafe { std::slice::from_raw_parts(chunk.as_ptr().cast::<u8>(), 4 + n) };
    let sent = match send_now(to, whole, 0) {
        Ok(sent) => sent,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            0
        }
        Err(e) => return Err(outbound(e)),
    };
    if sent == whole.len() {
        Ok(Relayed::Sent(n))
    } else {
        Ok(Relayed::Pending {
            n,
            rest: whole[sent..].to_vec(),
        })
    }
}

/// One splice of at most [`MAX_CHUNK`] bytes from `local`, sent as one chunk; 0 at
/// EOF, `None` when no pipe could be made (out of descriptors: the copy path takes
/// over).
async fn splice_chunk(
    local: &TcpStream,
    channel: &TcpStream,
    progress: &Progress,
) -> Result<Option<usize>, PumpError> {
    let Ok(mut pipe) = Pipe::take() else {
        return Ok(None);
    };
    let n = loop {
        match splice(local.as_raw_fd(), pipe.write.as_raw_fd(), MAX_CHUNK) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Drained: wait for more without holding the (empty) pipe.
                pipe.give_back();
                local.readable(false).await.map_err(inbound)?;
                pipe = match Pipe::take() {
                    Ok(pipe) => pipe,
                    Err(_) => return Ok(None),
                };
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                pipe.give_back();
                return Err(inbound(e));
            }
        }
    };
    if n > 0 {
        // A stream that filled the default pipe gets a large one (as the one-stream
        // pump does): fewer wake-ups and headers per megabyte.
        if !pipe.enlarged && n >= DEFAULT_PIPE_SIZE {
            pipe.enlarge();
        }
        pipe.pending = n;
        send_all(channel, &(n as u32).to_be_bytes(), libc::MSG_MORE)
            .await
            .map_err(outbound)?;
        drain_pipe(&mut pipe, channel, progress)
            .await
            .map_err(outbound)?;
    }
    pipe.give_back();
    Ok(Some(n))
}

/// What [`from_channel`] makes of the channel's chunks on the other socket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deliver {
    /// Their bytes, and the end marker as a FIN (a local socket).
    Bytes,
    /// The chunks as they are, and the end marker as ours, "keep" (another channel).
    Chunks,
}

/// The channel's chunks delivered to `local` as `deliver` says: (bytes, whether the
/// peer keeps the channel).
async fn from_channel(
    channel: &TcpStream,
    local: &TcpStream,
    reader: &mut FrameReader,
    deliver: Deliver,
    progress: &Progress,
) -> Result<(u64, bool), PumpError> {
    let buf = reader.buffer_mut();
    let mut total = 0u64;
    // Bytes of the current chunk not yet delivered (some may be in `buf`).
    let mut rest = 0usize;
    // The last chunk was spliced: read only the next header, so that a bulk chunk's
    // bytes are spliced from its first byte rather than copied up to a buffer's worth.
    let mut bulk = false;
    // As in `to_channel`: the reader's last read (the status or the header) was short.
    let mut drained = true;
    loop {
        if rest > 0 && !buf.is_empty() {
            let k = rest.min(buf.len());
            send_all(local, &buf[..k], 0).await.map_err(inbound)?;
            buf.advance(k);
            rest -= k;
            total += k as u64;
            progress.bump(k as u64);
            continue;
        }
        if rest == 0 {
            match decode_chunk_header(buf) {
                Ok(Some(ChunkHeader::Data(n))) => {
                    bulk = n >= SMALL;
                    if deliver == Deliver::Chunks {
                        // The header with what is here of its bytes, in one send (a
                        // small message is one read and one send, as a copy would be).
                        let k = n.min(buf.len() - 4);
                        let more = if k < n { libc::MSG_MORE } else { 0 };
                        send_all(local, &buf[..4 + k], more)
                            .await
                            .map_err(inbound)?;
                        buf.advance(4 + k);
                        rest = n - k;
                        total += k as u64;
                        progress.bump(k as u64);
                        continue;
                    }
                    buf.advance(4);
                    rest = n;
                    continue;
                }
                Ok(Some(ChunkHeader::End { keep })) => {
                    buf.advance(4);
                    match deliver {
                        Deliver::Bytes => sockets::shutdown_write(local.as_raw_fd()),
                        Deliver::Chunks => send_all(local, &EOS_KEEP.to_be_bytes(), 0)
                            .await
                            .map_err(inbound)?,
                    }
                    return Ok((total, keep));
                }
                Ok(None) => {}
                Err(e) => return Err(outbound(io::Error::other(e.to_string()))),
            }
        }
        if rest >= SPLICE_AT_LEAST {
            if let Some(moved) = splice_rest(channel, local, rest, progress).await? {
                rest -= moved;
                total += moved as u64;
                continue;
            }
        }
        let want = if bulk && rest == 0 {
            4 - buf.len()
        } else {
            SMALL
        };
        drained = read_more(channel, buf, want, drained).await?;
    }
}

/// Splices up to `rest` bytes (never more) from the channel to `local`; `None` when no
/// pipe could be made.
async fn splice_rest(
    channel: &TcpStream,
    local: &TcpStream,
    rest: usize,
    progress: &Progress,
) -> Result<Option<usize>, PumpError> {
    let Ok(mut pipe) = Pipe::take() else {
        return Ok(None);
    };
    let n = loop {
        match splice(channel.as_raw_fd(), pipe.write.as_raw_fd(), rest) {
            Ok(0) => {
                pipe.give_back();
                return Err(outbound(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                channel.readable(false).await.map_err(outbound)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                pipe.give_back();
                return Err(outbound(e));
            }
        }
    };
    if !pipe.enlarged && n >= DEFAULT_PIPE_SIZE {
        pipe.enlarge();
    }
    pipe.pending = n;
    drain_pipe(&mut pipe, local, progress)
        .await
        .map_err(inbound)?;
    pipe.give_back();
    Ok(Some(n))
}

/// Reads what the channel has into `buf`, at least one byte and at most `want`,
/// waiting for it with no buffer held when `buf` is empty; first waits for readiness
/// when `drained` (the last read was short). Returns whether this read was short.
/// The read goes through a buffer on the thread's stack, so `buf` grows only by what
/// arrived.
async fn read_more(
    channel: &TcpStream,
    buf: &mut BytesMut,
    want: usize,
    drained: bool,
) -> Result<bool, PumpError> {
    let mut wait = drained;
    loop {
        if wait {
            release_if_empty(buf);
            channel.readable(false).await.map_err(outbound)?;
        }
        match read_appending(channel.as_raw_fd(), buf, want) {
            Ok(short) => return Ok(short),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait = true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => wait = false,
            Err(e) => return Err(outbound(e)),
        }
    }
}

/// One non-blocking read of at most `want` (and [`SMALL`]) bytes from `fd`, appended
/// to `buf`: whether it was short. EOF is an error here (mid-stream, before the end
/// marker).
fn read_appending(fd: RawFd, buf: &mut BytesMut, want: usize) -> io::Result<bool> {
    let mut scratch = [MaybeUninit::<u8>::uninit(); SMALL];
    let room = want.clamp(1, SMALL);
    let got = sockets::recv_uninit(fd, &mut scratch[..room], 0)?;
    if got.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(got);
    Ok(got.len() < room)
}

/// An idle stream holds no buffer.
fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() {
        *buf = BytesMut::new();
    }
}

/// Moves the pipe's pending bytes to `dst`.
async fn drain_pipe(pipe: &mut Pipe, dst: &TcpStream, progress: &Progress) -> io::Result<()> {
    while pipe.pending > 0 {
        match splice(pipe.read.as_raw_fd(), dst.as_raw_fd(), pipe.pending) {
            Ok(n) => {
                pipe.pending -= n;
                progress.bump(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable(false).await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends all of `data` on `dst` (`flags` beside `MSG_NOSIGNAL`), waiting for room.
async fn send_all(dst: &TcpStream, mut data: &[u8], flags: libc::c_int) -> io::Result<()> {
    while !data.is_empty() {
        match send_now(dst.as_raw_fd(), data, flags) {
            Ok(sent) => data = &data[sent..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable(false).await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One non-blocking `send(2)` of `data` on `fd` (`flags` beside `MSG_NOSIGNAL`): how
/// much the socket took, or the error (`WouldBlock` when it took nothing).
fn send_now(fd: RawFd, data: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: sends from a live slice of the given length on a caller-owned socket.
    let sent = unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL | flags,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
    };

    use super::*;

    /// `step` until it stops saying "would block" (loopback delivers at once; the
    /// deadline only keeps a broken pump from hanging the test).
    fn until_ready<T>(mut step: impl FnMut() -> Result<T, io::Error>) -> Result<T, io::Error> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match step() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "never ready");
                    std::thread::yield_now();
                }
                other => return other,
            }
        }
    }

    fn relay(local: &TcpStream, channel: &TcpStream) -> Relayed {
        until_ready(|| read_and_send(local.as_raw_fd(), channel.as_raw_fd()).map_err(|e| e.source))
            .unwrap()
    }

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    #[test]
    fn a_read_is_sent_as_one_chunk_or_kept_for_later_when_the_channel_is_full() {
        let (mut client, local) = pair();
        let (channel, mut peer) = pair();
        for s in [&local, &channel] {
            s.set_nonblocking(true).unwrap();
        }
        let message = [7u8; 100];

        // Room on the channel: header and bytes leave in one send.
        client.write_all(&message).unwrap();
        assert!(matches!(relay(&local, &channel), Relayed::Sent(100)));
        let mut got = [0u8; 104];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got[..4], 100u32.to_be_bytes());
        assert_eq!(got[4..], message);

        // A full channel: the whole chunk comes back to be sent once there is room.
        let filler = [0u8; 65536];
        while send_now(channel.as_raw_fd(), &filler, 0).is_ok() {}
        client.write_all(&message).unwrap();
        let Relayed::Pending { n: 100, rest } = relay(&local, &channel) else {
            panic!("a full channel took the chunk");
        };
        assert_eq!(rest[..4], 100u32.to_be_bytes());
        assert_eq!(rest[4..], message);

        // The client's EOF: nothing sent, 0.
        drop(client);
        assert!(matches!(relay(&local, &channel), Relayed::Sent(0)));
    }

    #[test]
    fn reads_append_only_what_arrived_and_say_when_they_were_short() {
        let (mut peer, channel) = pair();
        channel.set_nonblocking(true).unwrap();
        let mut buf = BytesMut::new();
        let e = read_appending(channel.as_raw_fd(), &mut buf, SMALL).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(buf.capacity(), 0, "no buffer while nothing arrived");

        peer.write_all(b"abcdef").unwrap();
        assert!(until_ready(|| read_appending(channel.as_raw_fd(), &mut buf, SMALL)).unwrap());
        assert_eq!(&buf[..], b"abcdef");
        assert!(
            buf.capacity() < 1024,
            "grown by what arrived, not a copy buffer"
        );

        // A read limited to `want` bytes that gets them all is not short.
        peer.write_all(b"0123").unwrap();
        assert!(!until_ready(|| read_appending(channel.as_raw_fd(), &mut buf, 2)).unwrap());
        assert_eq!(&buf[..], b"abcdef01");

        drop(peer);
        let mut rest = BytesMut::new();
        assert!(until_ready(|| read_appending(channel.as_raw_fd(), &mut rest, SMALL)).unwrap());
        let eof = until_ready(|| read_appending(channel.as_raw_fd(), &mut rest, SMALL));
        assert_eq!(eof.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(&rest[..], b"23");
    }
}
