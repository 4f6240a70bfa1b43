//! An HTTP/2-only upstream for the tests of `upstream.protocol: http2`: h2c (prior
//! knowledge: it speaks nothing else), or over TLS offering ALPN `h2` only (a client
//! that does not negotiate it is refused). hyper's HTTP/2 server on a thread of its
//! own, each response carrying the request as it arrived (version, method, URI,
//! headers) and the body echoed, with `x-upstream: NAME`; it counts the connections it
//! accepted.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, server::conn::http2, service::service_fn, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The upstream.
pub struct Http2Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Http2Echo {
    /// Starts on 127.0.0.1 with a free port, answering as `name` (h2c).
    pub fn start(name: &str) -> Http2Echo {
        Http2Echo::start_with(name, None)
    }

    /// Starts over TLS with `tls` (its ALPN set to `h2` only here).
    pub fn start_tls(name: &str, tls: Arc<rustls::ServerConfig>) -> Http2Echo {
        let mut config = (*tls).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Http2Echo::start_with(name, Some(Arc::new(config)))
    }

    fn start_with(name: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Http2Echo {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (conns, reqs, name) = (connections.clone(), requests.clone(), name.to_owned());
        std::thread::Builder::new()
            .name("http2-echo".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(serve(listener, conns, reqs, name, tls));
            })
            .unwrap();
        Http2Echo {
            addr,
            connections,
            requests,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn serve(
    listener: std::net::TcpListener,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    name: String,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (requests, name, acceptor) = (requests.clone(), name.clone(), acceptor.clone());
        let connections = connections.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (requests, name) = (requests.clone(), name.clone());
                async move {
                    requests.fetch_add(1, Ordering::SeqCst);
                    let mut text = format!("{:?} {} {}\n", req.version(), req.method(), req.uri());
                    for (k, v) in req.headers() {
                        text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
                    }
                    text.push('\n');
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let mut payload = text.into_bytes();
                    payload.extend_from_slice(&body.unwrap_or_default());
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("x-upstream", name)
                            .body(Full::new(Bytes::from(payload)))
                            .unwrap(),
                    )
                }
            });
            let server = http2::Builder::new(TokioExecutor::new());
            match acceptor {
                None => {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let _ = server.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(acceptor) => {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                        return;
                    }
                    connections.fetch_add(1, Ordering::SeqCst);
                    let _ = server.serve_connection(TokioIo::new(tls), service).await;
                }
            }
        });
    }
}
