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

    /// Starts over TLS with `tls`, speaking HTTP/1.1 (ALPN `http/1.1` only).
    pub fn start_tls_http1(name: &str, tls: Arc<rustls::ServerConfig>) -> Http2Echo {
        let mut config = (*tls).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
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
                    let trailers = req.uri().path() == "/trailers";
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let mut payload = text.into_bytes();
                    payload.extend_from_slice(&body.unwrap_or_default());
                    // `/trailers` ends as a gRPC server ends a call.
                    let end = trailers.then(|| {
                        let mut end = hyper::HeaderMap::new();
                        end.insert("grpc-status", "0".parse().unwrap());
                        end.insert("grpc-message", "done".parse().unwrap());
                        Ok::<_, Infallible>(end)
                    });
                    let body =
                        Full::new(Bytes::from(payload)).with_trailers(std::future::ready(end));
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("x-upstream", name)
                            .body(body)
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
                    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                        connections.fetch_add(1, Ordering::SeqCst);
                        let _ = server.serve_connection(TokioIo::new(tls), service).await;
                    } else if acceptor.config().alpn_protocols == [b"http/1.1".to_vec()] {
                        connections.fetch_add(1, Ordering::SeqCst);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    }
                }
            }
        });
    }
}

/// An HTTP/2 client over TLS that opens many streams and reads none of their response
/// bodies until told to ([`Stalled::read_all`]): hyper's client with a 64 KiB window per
/// stream, on a thread of its own (it answers the server's pings meanwhile).
pub struct Stalled {
    /// Response heads received (status codes, in the order of the requests).
    pub statuses: Vec<u16>,
    read: std::sync::mpsc::Sender<()>,
    bodies: std::sync::mpsc::Receiver<Vec<Result<usize, String>>>,
}

impl Stalled {
    /// Opens `streams` requests for `https://host{path}` at `addr` (ALPN `h2`,
    /// trusting `config`'s roots) and waits for their response heads.
    pub fn open(
        addr: SocketAddr,
        host: &str,
        config: Arc<rustls::ClientConfig>,
        path: &str,
        streams: usize,
    ) -> Stalled {
        let (host, uri) = (
            host.to_owned(),
            format!("https://{host}:{}{path}", addr.port()),
        );
        let (heads_tx, heads_rx) = std::sync::mpsc::channel();
        let (read, read_rx) = std::sync::mpsc::channel::<()>();
        let (bodies_tx, bodies) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("h2-stalled".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut sender = connect_h2(addr, host, config, Some(65_535)).await;
                    let mut pending = Vec::new();
                    for _ in 0..streams {
                        sender.ready().await.unwrap();
                        let req = Request::get(&uri)
                            .body(http_body_util::Empty::<Bytes>::new())
                            .unwrap();
                        pending.push(sender.send_request(req));
                    }
                    let mut responses = Vec::new();
                    for response in pending {
                        responses.push(response.await.unwrap());
                    }
                    let statuses = responses.iter().map(|r| r.status().as_u16()).collect();
                    heads_tx.send(statuses).unwrap();
                    // Read nothing until told to (the connection task runs on).
                    let _ = tokio::task::spawn_blocking(move || read_rx.recv()).await;
                    let mut outcomes = Vec::new();
                    for response in responses {
                        let mut body = response.into_body();
                        let mut got = 0;
                        let outcome = loop {
                            match body.frame().await {
                                Some(Ok(frame)) => {
                                    got += frame.data_ref().map_or(0, |d| d.len());
                                }
                                Some(Err(e)) => break Err(format!("{e} after {got} bytes")),
                                None => break Ok(got),
                            }
                        };
                        outcomes.push(outcome);
                    }
                    let _ = bodies_tx.send(outcomes);
                });
            })
            .unwrap();
        let statuses = heads_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the stalled client's response heads");
        Stalled {
            statuses,
            read,
            bodies,
        }
    }

    /// Reads every body now: for each, its length when it ended cleanly, or the error
    /// that ended it.
    pub fn read_all(self) -> Vec<Result<usize, String>> {
        self.read.send(()).unwrap();
        self.bodies
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the stalled client's bodies")
    }
}

/// What one HTTP/2 exchange ([`exchange`]) got back.
#[derive(Debug)]
pub struct Exchanged {
    /// The response's status code.
    pub status: u16,
    /// Its body, whole.
    pub body: Vec<u8>,
    /// The trailers that ended the response, if any.
    pub trailers: Option<hyper::HeaderMap>,
}

/// One request over a new TLS connection (ALPN `h2`, trusting `config`'s roots) to
/// `https://host{path}` at `addr`, with `headers` and `body`; the whole response, its
/// trailers included.
pub fn exchange(
    addr: SocketAddr,
    host: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Exchanged {
    let mut req = Request::post(format!("https://{host}:{}{path}", addr.port()));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let host = host.to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut sender = connect_h2(addr, host, config, None).await;
        let response = sender.send_request(req).await.unwrap();
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            match frame.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        Exchanged {
            status,
            body: data,
            trailers,
        }
    })
}

/// An HTTP/2 connection over TLS to `host` at `addr` (ALPN `h2` asserted, trusting
/// `config`'s roots; `window`: the initial window per stream, hyper's default when
/// `None`), its connection task running on the current runtime.
async fn connect_h2<B>(
    addr: SocketAddr,
    host: String,
    config: Arc<rustls::ClientConfig>,
    window: Option<u32>,
) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(host).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    if let Some(window) = window {
        builder.initial_stream_window_size(window);
    }
    let (sender, connection) = builder.handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    sender
}
