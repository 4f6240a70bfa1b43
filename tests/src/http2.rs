//! An HTTP/2-only upstream (h2c, prior knowledge: it speaks nothing else) for the tests
//! of `upstream.protocol: http2`: hyper's HTTP/2 server on a thread of its own, each
//! response carrying the request as it arrived (version, method, URI, headers) and the
//! body echoed, with `x-upstream: NAME`; it counts the connections it accepted.

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
    /// Starts on 127.0.0.1 with a free port, answering as `name`.
    pub fn start(name: &str) -> Http2Echo {
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
                rt.block_on(serve(listener, conns, reqs, name));
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
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        connections.fetch_add(1, Ordering::SeqCst);
        let (requests, name) = (requests.clone(), name.clone());
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
            let _ = http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
