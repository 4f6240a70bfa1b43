//! One accepted connection: TLS (when configured), then HTTP/1.1 with hyper driving the
//! axum app, the whole under the connection's [`Watch`] so that a phase outliving its
//! limit closes it. The app sees the client address as axum's `ConnectInfo`.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use axum::extract::ConnectInfo;
use hyper::{body::Incoming, Request};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use super::{
    options::{ConnStats, ServeOptions},
    phase::{AnswerBody, AnswerDone, Phase, Watch, Watched},
};

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(hyper::Error),
}

/// Serves `stream` from `peer` until the client is done, an error, or a phase limit.
/// Logs (throttled) how it ended when that was not a clean close.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    kind: &'static str,
    app: axum::Router,
    options: Arc<ServeOptions>,
    stats: Arc<ConnStats>,
) {
    let watch = Arc::new(Watch::new());
    let work = async {
        match &options.tls {
            None => http(stream, peer, app, &watch).await,
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                let tls = acceptor.accept(stream).await.map_err(ConnError::Tls)?;
                http(tls, peer, app, &watch).await
            }
        }
    };
    tokio::select! {
        ended = work => match ended {
            Ok(()) => {}
            Err(ConnError::Tls(e)) => {
                stats.count_tls_failed();
                crate::log_throttled!(info, kind, client = %peer, error = %e, "HTTP listener: TLS handshake failed; closed");
            }
            Err(e @ ConnError::Http(_)) => {
                crate::log_throttled!(debug, kind, client = %peer, error = %e, "HTTP connection ended with an error");
            }
        },
        phase = watch.expired(options.limits) => {
            stats.count_timed_out(phase);
            let limit = options.limits.of(phase);
            // Idle keep-alive connections closing is routine; the others are not.
            if phase == Phase::Idle {
                crate::log_throttled!(debug, kind, client = %peer, ?limit, "HTTP connection idle past its limit; closed");
            } else {
                crate::log_throttled!(info, kind, client = %peer, phase = phase.name(), ?limit, "HTTP connection too slow; closed");
            }
        }
    }
}

/// HTTP/1.1 over `io` (plain or TLS), phases reported to `watch`.
async fn http<I>(
    io: I,
    peer: SocketAddr,
    app: axum::Router,
    watch: &Arc<Watch>,
) -> Result<(), ConnError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(Watched::new(io, watch.clone()));
    let watch = watch.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        watch.enter(Phase::Request);
        let done = AnswerDone(watch.clone());
        req.extensions_mut().insert(ConnectInfo(peer));
        let answer = tower_service::Service::call(&mut app.clone(), req);
        async move {
            let answer = answer.await?;
            Ok::<_, Infallible>(answer.map(|body| AnswerBody::new(body, done)))
        }
    });
    hyper::server::conn::http1::Builder::new()
        // Our Watch bounds the head instead (phase.rs says why); without a timer,
        // hyper's own default would be ignored anyway.
        .header_read_timeout(None)
        .keep_alive(true)
        .serve_connection(io, service)
        .await
        .map_err(ConnError::Http)
}
