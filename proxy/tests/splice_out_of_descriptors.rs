//! The `tcp` data channel's splice pump (`io::chunked_splice`) in a process that has no
//! descriptor left for a pipe: each stream moves its bytes through a user-space buffer
//! instead of failing. (Its own test binary, because it lowers the open-files limit of
//! the whole process.)

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener},
    os::fd::AsRawFd,
    thread,
};

mod common;

use common::{pair, pattern, read_header, write_chunk, write_end};
use sluice_proxy::{
    io::{chunked_splice, framed::FrameReader, idle::Progress},
    runtime::{self, Driver},
};

const UP: usize = 1 << 20;
const DOWN: usize = 300 * 1024;

/// The process's open-files limit, lowered until dropped.
struct LoweredLimit(libc::rlimit);

impl LoweredLimit {
    /// Lowers the soft limit to the lowest free descriptor number, so that no new
    /// descriptor can be made while the ones already open keep working.
    fn to_lowest_free() -> Self {
        let probe = std::fs::File::open("/dev/null").unwrap();
        let lowest_free = probe.as_raw_fd() as libc::rlim_t;
        drop(probe);
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with valid pointers to rlimit structs.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
            let lowered = libc::rlimit {
                rlim_cur: lowest_free,
                rlim_max: old.rlim_max,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lowered), 0);
        }
        assert!(std::fs::File::open("/dev/null").is_err());
        Self(old)
    }
}

impl Drop for LoweredLimit {
    fn drop(&mut self) {
        // SAFETY: setrlimit with a valid pointer to the limits read before.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
    }
}

fn forwards_both_ways_without_new_descriptors(driver: Driver) {
    runtime::block_on(driver, || async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut client, local) = pair(&listener);
        let (channel, mut peer) = pair(&listener);
        drop(listener);
        let local = monoio::net::TcpStream::from_std(local).unwrap();
        // A data channel is made non-blocking once, where it is made.
        channel.set_nonblocking(true).unwrap();
        let channel = monoio::net::TcpStream::from_std(channel).unwrap();

        let limit = LoweredLimit::to_lowest_free();
        let sender = thread::spawn(move || {
            client.write_all(&pattern(UP, 1)).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).unwrap();
            back
        });
        // The data channel's far end: the chunks up to the end marker, then the answer.
        let receiver = thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(len) = read_header(&mut peer) {
                let start = got.len();
                got.resize(start + len, 0);
                peer.read_exact(&mut got[start..]).unwrap();
            }
            write_chunk(&mut peer, &pattern(DOWN, 2));
            write_end(&mut peer);
            got
        });
        let mut reader = FrameReader::new();
        let outcome =
            chunked_splice::forward(local, channel, &mut reader, || true, &Progress::default())
                .await;
        drop(limit);
        let stats = outcome.result.expect("the pump failed for want of a pipe");
        assert_eq!(stats.inbound_to_outbound, UP as u64);
        assert_eq!(stats.outbound_to_inbound, DOWN as u64);
        assert!(receiver.join().unwrap() == pattern(UP, 1));
        assert!(sender.join().unwrap() == pattern(DOWN, 2));
    })
    .unwrap();
}

#[test]
fn with_no_descriptor_left_for_a_pipe_streams_are_copied_not_dropped() {
    forwards_both_ways_without_new_descriptors(Driver::Uring);
    forwards_both_ways_without_new_descriptors(Driver::Legacy);
}
