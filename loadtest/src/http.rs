//! `http`: HTTP/1.1 requests, closed loop, on `connections` connections at once. Kept
//! alive (the default): each connection sends its next request when the last response
//! is in, and opens a new connection only when the server closes one. With
//! `new_connection`, every request has a connection of its own (`Connection: close`),
//! and its latency runs from the connect. A response whose status is not 2xx or 3xx is
//! counted as an `http_status` failure (the connection goes on); a malformed one, or a
//! connection that breaks, as the failure it is, and the connection is opened again.

use std::time::{Duration, Instant};

use crate::{
    client::{self, Worker},
    http_wire::{Conn, Response},
    options::{check_range, invalid},
    ClientOptions, ErrorClass, Failure, LoadError, RunResult,
};

/// Options of `http`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Shared client options.
    pub client: ClientOptions,
    /// Requests in flight at once (one per connection).
    pub connections: usize,
    /// Method.
    pub method: String,
    /// Request target (path and query).
    pub path: String,
    /// `Host` header [default: the target address as given].
    pub host: String,
    /// Request body bytes (sent with `Content-Length`).
    pub body: usize,
    /// A new connection for every request.
    pub new_connection: bool,
}

impl HttpOptions {
    /// `GET /` on one kept-alive connection, `Host` = the target's address.
    #[must_use]
    pub fn new(client: ClientOptions) -> Self {
        let host = client.target.to_string();
        Self {
            client,
            connections: 1,
            method: "GET".to_owned(),
            path: "/".to_owned(),
            host,
            body: 0,
            new_connection: false,
        }
    }

    /// Sets the number of connections.
    #[must_use]
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }

    /// Sets the method.
    #[must_use]
    pub fn method(mut self, m: impl Into<String>) -> Self {
        self.method = m.into();
        self
    }

    /// Sets the request target.
    #[must_use]
    pub fn path(mut self, p: impl Into<String>) -> Self {
        self.path = p.into();
        self
    }

    /// Sets the `Host` header.
    #[must_use]
    pub fn host(mut self, h: impl Into<String>) -> Self {
        self.host = h.into();
        self
    }

    /// Sets the request body size.
    #[must_use]
    pub fn body(mut self, n: usize) -> Self {
        self.body = n;
        self
    }

    /// A new connection per request.
    #[must_use]
    pub fn new_connection(mut self, yes: bool) -> Self {
        self.new_connection = yes;
        self
    }

    /// Checks ranges and that the request line and `Host` are well formed.
    pub fn validate(&self) -> Result<(), LoadError> {
        self.client.validate()?;
        check_range("--connections", self.connections as u64, 1, 1_000_000)?;
        check_range("--body", self.body as u64, 0, 16 << 20)?;
        let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        if !token(&self.method) {
            return Err(invalid(format!(
                "--method {:?} is not a method",
                self.method
            )));
        }
        if !self.path.starts_with('/') || !token(&self.path) {
            return Err(invalid(format!(
                "--path {:?}: expected a path starting with / (no spaces)",
                self.path
            )));
        }
        if !token(&self.host) {
            return Err(invalid(format!("--host {:?} is not a host", self.host)));
        }
        Ok(())
    }

    /// The request as sent.
    fn request(&self) -> Vec<u8> {
        let mut r = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice-load\r\n",
            self.method, self.path, self.host
        );
        if self.new_connection {
            r.push_str("Connection: close\r\n");
        }
        if self.body > 0 || !matches!(self.method.as_str(), "GET" | "HEAD" | "DELETE") {
            r.push_str(&format!("Content-Length: {}\r\n", self.body));
        }
        r.push_str("\r\n");
        let mut bytes = r.into_bytes();
        bytes.resize(bytes.len() + self.body, b'x');
        bytes
    }
}

/// Runs `http` to the end and returns the merged measurements.
pub fn run(opts: &HttpOptions) -> Result<RunResult, LoadError> {
    opts.validate()?;
    let connections = opts.connections;
    let request = opts.request();
    let (head_only, new_connection) = (opts.method == "HEAD", opts.new_connection);
    client::run("http", &opts.client, connections as u64, move |w| {
        let request = request.clone();
        async move {
            let mut handles = Vec::new();
            for _ in w.share(connections) {
                let how = How {
                    request: request.clone(),
                    head_only,
                    new_connection,
                };
                handles.push(monoio::spawn(connection(w.clone(), how)));
            }
            client::join_all(handles).await;
        }
    })
}

/// What one connection sends, and how it reads the answers.
struct How {
    request: Vec<u8>,
    head_only: bool,
    new_connection: bool,
}

/// One client's loop: a connection, requests on it while it is kept, another one.
async fn connection(w: Worker, how: How) {
    let end = w.end();
    // The request's buffer goes into each exchange and comes back; an exchange cut
    // short (a failed send, a timeout) keeps it, and a copy of `how.request` is used.
    let mut request = how.request.clone();
    while Instant::now() < end {
        let opened_at = Instant::now();
        let Some(stream) = w.open().await else {
            monoio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut conn = Conn::new(stream);
        loop {
            let sent = if how.new_connection {
                opened_at
            } else {
                Instant::now()
            };
            let exchange = exchange(&mut conn, std::mem::take(&mut request), how.head_only);
            let answer = match client::within(end, w.opts.timeout, exchange).await {
                client::Step::Done((answer, back)) => {
                    request = back;
                    answer
                }
                client::Step::Ended => {
                    let mut rec = w.rec.borrow_mut();
                    rec.conns.held += 1;
                    rec.closed(true);
                    return;
                }
                client::Step::TimedOut => Err(Failure::timeout("request")),
            };
            if request.is_empty() {
                request = how.request.clone();
            }
            match answer {
                Ok(response) => {
                    w.rec.borrow_mut().op(sent, sent.elapsed());
                    if !matches!(response.status / 100, 2 | 3) {
                        w.rec.borrow_mut().error(
                            Instant::now(),
                            Failure::new(
                                ErrorClass::HttpStatus,
                                format!("status {}", response.status),
                            ),
                        );
                    }
                    // A server that sent more than was asked for cannot be read in
                    // step any more: counted, and a new connection.
                    if conn.has_buffered() {
                        w.fail(Failure::new(
                            ErrorClass::Other,
                            "bytes after the response, before the next request",
                        ));
                        break;
                    }
                    if !response.keep_alive || how.new_connection {
                        w.rec.borrow_mut().closed(true);
                        break;
                    }
                }
                Err(f) => {
                    w.fail(f);
                    break;
                }
            }
        }
    }
}

/// Sends the request and reads the response.
async fn exchange(
    conn: &mut Conn,
    request: Vec<u8>,
    head_only: bool,
) -> (Result<Response, Failure>, Vec<u8>) {
    let request = match conn.write_all(request, "send").await {
        Ok(r) => r,
        Err(f) => return (Err(f), Vec::new()),
    };
    (conn.read_response(head_only).await, request)
}
