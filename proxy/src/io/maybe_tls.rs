//! A stream that is either plain or wrapped in TLS, decided per endpoint at run time
//! (edge `terminate_tls`, agent `agent_tls_termination` and `upstream.tls`), so one
//! forwarding path serves both and plain-to-plain hops can still use splice.

use std::os::fd::{AsRawFd, RawFd};

use monoio::{
    buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut},
    io::{AsyncReadRent, AsyncWriteRent, Split},
    net::TcpStream,
    BufResult,
};
use rustls::{ConnectionCommon, SideData};

use super::{readiness::Readiness, tls_stream::TlsStream};

/// Plain bytes, or TLS over them; `C` is the rustls connection type.
pub enum MaybeTls<C, IO = TcpStream> {
    /// No TLS on this hop.
    Plain(IO),
    /// TLS terminated or originated here.
    Tls(Box<TlsStream<C, IO>>),
}

// SAFETY: both variants are `Split` (TcpStream, and TlsStream over a `Split` transport);
// the enum only dispatches.
unsafe impl<C, IO: Split> Split for MaybeTls<C, IO> {}

impl<C, IO: AsRawFd> AsRawFd for MaybeTls<C, IO> {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            MaybeTls::Plain(io) => io.as_raw_fd(),
            MaybeTls::Tls(tls) => tls.as_raw_fd(),
        }
    }
}

impl<C, IO, SD> AsyncReadRent for MaybeTls<C, IO>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
    IO: AsyncReadRent + AsyncWriteRent + Readiness,
{
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            MaybeTls::Plain(io) => io.read(buf).await,
            MaybeTls::Tls(tls) => tls.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            MaybeTls::Plain(io) => io.readv(buf).await,
            MaybeTls::Tls(tls) => tls.readv(buf).await,
        }
    }
}

impl<C, IO, SD> Readiness for MaybeTls<C, IO>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
    IO: AsyncReadRent + AsyncWriteRent + Readiness,
{
    async fn wait_readable(&mut self) -> std::io::Result<()> {
        match self {
            MaybeTls::Plain(io) => io.wait_readable().await,
            MaybeTls::Tls(tls) => tls.wait_readable().await,
        }
    }

    fn read_arrived<B: IoBufMut>(&mut self, buf: &mut B) -> Option<std::io::Result<usize>> {
        match self {
            MaybeTls::Plain(io) => io.read_arrived(buf),
            MaybeTls::Tls(tls) => tls.read_arrived(buf),
        }
    }
}

impl<C, IO, SD> AsyncWriteRent for MaybeTls<C, IO>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
    IO: AsyncReadRent + AsyncWriteRent + Readiness,
{
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            MaybeTls::Plain(io) => io.write(buf).await,
            MaybeTls::Tls(tls) => tls.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            MaybeTls::Plain(io) => io.writev(buf).await,
            MaybeTls::Tls(tls) => tls.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            MaybeTls::Plain(io) => io.flush().await,
            MaybeTls::Tls(tls) => tls.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            MaybeTls::Plain(io) => io.shutdown().await,
            MaybeTls::Tls(tls) => tls.shutdown().await,
        }
    }
}
