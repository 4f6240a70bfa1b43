//! A small HTTP/1.1 client for the edge's admin API (one request per connection,
//! `Connection: close`), returning the status and the JSON body.

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
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status in {resp:?}"));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Answer {
            status,
            body: serde_json::from_str(&body).unwrap_or(Value::Null),
            text: body,
        }
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
