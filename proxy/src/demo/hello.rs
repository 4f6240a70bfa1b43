//! The demo's HTTP upstream: answers every request with a short text naming what it
//! received (method, path, the forwarding headers the edge added), one thread per
//! connection, keep-alive as the client asks.

use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
};

/// Serves `listener` forever.
pub fn serve(listener: TcpListener) {
    for conn in listener.incoming().flatten() {
        let _ = std::thread::Builder::new()
            .name("demo-hello-conn".into())
            .spawn(move || {
                let _ = answer(conn);
            });
    }
}

/// Answers the requests of one connection (bodies are not expected: a
/// `Content-Length` body is read and ignored).
fn answer(conn: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let (mut forwarded, mut close, mut body_len) = (Vec::new(), false, 0usize);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("x-forwarded-") {
                forwarded.push(line.trim_end().to_owned());
            }
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
            if let Some(n) = lower.strip_prefix("content-length:") {
                body_len = n.trim().parse().unwrap_or(0);
            }
        }
        std::io::copy(
            &mut std::io::Read::take(&mut reader, body_len as u64),
            &mut std::io::sink(),
        )?;
        let mut body = format!(
            "hello from the demo's HTTP upstream, behind a sluice agent\nyou asked: {}\n",
            request_line.trim_end()
        );
        for header in &forwarded {
            body.push_str(header);
            body.push('\n');
        }
        write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )?;
        if close {
            return Ok(());
        }
    }
}
