//! TLS peers for end-to-end tests of `tls://` endpoints: an echo upstream that
//! terminates TLS itself (so passthrough is visible), and a blocking TLS client.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// An echo server that terminates TLS with a certificate for `names`.
pub struct TlsEcho {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate (clients trust it directly).
    pub cert: CertificateDer<'static>,
    accepted: Arc<AtomicUsize>,
}

impl TlsEcho {
    /// Starts on 127.0.0.1 with a free port.
    pub fn start(names: &[&str]) -> TlsEcho {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        TlsEcho::start_with(crate::pki::server_config_with(cert.clone(), key), cert)
    }

    /// Starts on 127.0.0.1 with a free port, presenting `config`'s certificate `cert`.
    pub fn start_with(config: Arc<ServerConfig>, cert: CertificateDer<'static>) -> TlsEcho {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let config = config.clone();
                let counter = counter.clone();
                std::thread::spawn(move || {
                    // Health checks connect and close without a byte: not counted.
                    if !matches!(tcp.peek(&mut [0u8; 1]), Ok(n) if n > 0) {
                        return;
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                    let Ok(conn) = ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = StreamOwned::new(conn, tcp);
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match tls.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if tls.write_all(&buf[..n]).and_then(|()| tls.flush()).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        TlsEcho {
            addr,
            cert,
            accepted,
        }
    }

    /// TCP connections that brought bytes so far (health checks are not counted).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// A client config trusting exactly `certs`.
pub fn client_config(certs: &[&CertificateDer<'static>]) -> Arc<ClientConfig> {
    let roots: Vec<CertificateDer<'static>> = certs.iter().map(|c| (*c).clone()).collect();
    crate::pki::client_config_trusting(&roots, None)
}

/// Connects to `target`, sends the ClientHello in pieces of `piece` bytes (to make the
/// edge reassemble it), finishes the handshake and checks an echo. Errors say what
/// failed.
pub fn tls_echo(
    target: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
    piece: usize,
    payload: &[u8],
) -> Result<(), String> {
    let tcp = crate::client::connect_from(None, target).map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let mut conn = ClientConnection::new(config, server_name).map_err(|e| e.to_string())?;
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).map_err(|e| e.to_string())?;
    let mut raw = tcp;
    for chunk in hello.chunks(piece.max(1)) {
        raw.write_all(chunk)
            .map_err(|e| format!("sending ClientHello: {e}"))?;
    }
    let mut tls = StreamOwned::new(conn, raw);
    tls.write_all(payload)
        .map_err(|e| format!("handshake or write: {e}"))?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut got = vec![0u8; payload.len()];
    tls.read_exact(&mut got)
        .map_err(|e| format!("reading echo: {e}"))?;
    if got != payload {
        return Err("echo differs".into());
    }
    Ok(())
}
