//! Helpers shared by the pump tests: payloads, loopback socket pairs, and the chunk
//! framing of data channels written and read by hand (independently of sluice's own
//! encoder and decoder).

#![allow(dead_code, reason = "each test binary uses its own subset")]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
};

/// `len` bytes of a recognisable pattern, different per `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// A connected pair of loopback sockets.
pub fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let near = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (far, _) = listener.accept().unwrap();
    (near, far)
}

/// Reads one chunk header: `Some(len)` for data, `None` for an end marker that keeps
/// the channel (one that retires it fails the test).
pub fn read_header(peer: &mut TcpStream) -> Option<usize> {
    let mut header = [0u8; 4];
    peer.read_exact(&mut header).unwrap();
    match u32::from_be_bytes(header) {
        0 => None,
        u32::MAX => panic!("the pump retired the channel"),
        n => Some(n as usize),
    }
}

/// Writes `data` as one chunk.
pub fn write_chunk(peer: &mut TcpStream, data: &[u8]) {
    peer.write_all(&(data.len() as u32).to_be_bytes()).unwrap();
    peer.write_all(data).unwrap();
}

/// Writes the end marker that keeps the channel.
pub fn write_end(peer: &mut TcpStream) {
    peer.write_all(&0u32.to_be_bytes()).unwrap();
}
