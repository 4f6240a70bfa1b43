//! A small HTTP/1.1 client for the edge's admin API (one request per connection,
//! `Connection: close`, or several on a [`KeepAlive`] connection), returning the
//! status, the headers and the JSON body.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use serde_json::Value;

/// The admin API of one edge.
pub struct Admin {
    /// Its address.
    pub addr: SocketAddr,
    /// The bearer key sent (None: no Authorization header).
    pub key: Option<String>,
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// Body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// Body as text.
    pub text: String,
}

impl Admin {
    /// A client for `addr` with `key`.
    pub fn new(addr: SocketAddr, key: &str) -> Self {
        Self {
            addr,
            key: Some(key.to_string()),
        }
    }

    /// The same API with another key (or none).
    pub fn with_key(&self, key: Option<&str>) -> Self {
        Self {
            addr: self.addr,
            key: key.map(str::to_string),
        }
    }

    /// Sends one request with a raw body.
    pub fn raw(&self, method: &str, path: &str, body: &[u8]) -> Answer {
        let mut s = TcpStream::connect(self.addr).expect("connect admin API");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        if let Some(k) = &self.key {
            head.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).expect("read admin answer");
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        let (status, headers) =
            parse_head(head).unwrap_or_else(|| panic!("no HTTP status in {resp:?}"));
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_string()
        };
        Answer::new(status, headers, body)
    }

    /// A keep-alive connection to this API, sending this client's key.
    pub fn keep_alive(&self) -> std::io::Result<KeepAlive> {
        let stream = TcpStream::connect(self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(KeepAlive {
            stream,
            addr: self.addr,
            key: self.key.clone(),
            buf: Vec::new(),
        })
    }

    /// Sends one request with a JSON body (or none).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(method, path, &bytes)
    }

    /// GET, expecting 200; the body.
    pub fn get(&self, path: &str) -> Value {
        let a = self.call("GET", path, None);
        assert_eq!(a.status, 200, "GET {path}: {}", a.text);
        a.body
    }

    /// POST, expecting 201; the body.
    pub fn create(&self, path: &str, body: Value) -> Value {
        let a = self.call("POST", path, Some(body));
        assert_eq!(a.status, 201, "POST {path}: {}", a.text);
        a.body
    }
}

impl Answer {
    fn new(status: u16, headers: Vec<(String, String)>, body: String) -> Answer {
        Answer {
            status,
            headers,
            body: serde_json::from_str(&body).unwrap_or(Value::Null),
            text: body,
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One connection carrying several requests (HTTP/1.1 keep-alive).
pub struct KeepAlive {
    /// The connection (tests may write raw bytes on it).
    pub stream: TcpStream,
    addr: SocketAddr,
    key: Option<String>,
    buf: Vec<u8>,
}

impl KeepAlive {
    /// Sends a GET and reads its answer; `Err` when the connection was closed or failed
    /// before a whole answer came.
    pub fn get(&mut self, path: &str) -> std::io::Result<Answer> {
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if let Some(k) = &self.key {
            head.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes())?;
        self.read_answer()
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk)? {
            0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    fn read_answer(&mut self) -> std::io::Result<Answer> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad answer head");
        let (status, headers) = parse_head(&head).ok_or_else(bad)?;
        self.buf.drain(..head_end + 4);
        let value = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let body = if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let end = loop {
                if let Some(i) = self.buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                    break i + 5;
                }
                self.fill()?;
            };
            let raw: Vec<u8> = self.buf.drain(..end).collect();
            dechunk(&String::from_utf8_lossy(&raw))
        } else {
            let len: usize = value("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while self.buf.len() < len {
                self.fill()?;
            }
            let raw: Vec<u8> = self.buf.drain(..len).collect();
            String::from_utf8_lossy(&raw).into_owned()
        };
        Ok(Answer::new(status, headers, body))
    }
}

/// Status and headers (names lower-cased) of an answer head.
fn parse_head(head: &str) -> Option<(u16, Vec<(String, String)>)> {
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Waits for the edge's `listening` event of kind `admin`; the admin address and the
/// event (its `tls` field says whether it serves HTTPS).
pub fn listening(edge: &mut crate::process::Sluice) -> (SocketAddr, Value) {
    let event = edge.wait_for_n("admin listener", 1, |v| {
        v["message"] == "listening" && v["kind"] == "admin"
    });
    let addr = event["addr"].as_str().unwrap().parse().unwrap();
    (addr, event)
}

/// Waits for an agent's `metrics_listen` listener: its address.
pub fn metrics_listening(agent: &mut crate::process::Sluice) -> SocketAddr {
    agent.wait_for_n("agent metrics listener", 1, |v| {
        v["message"] == "listening" && v["kind"] == "metrics"
    })["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

pub use crate::prom::sample;

/// The metrics text of a listener that needs no key (the agent's `metrics_listen`).
pub fn scrape(addr: SocketAddr) -> String {
    Admin::new(addr, "")
        .with_key(None)
        .call("GET", "/metrics", None)
        .text
}
