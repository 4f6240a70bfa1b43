//! A real etcd server (Debian's `etcd-server`, installed by `tests/run.sh`) for the
//! fleet tests: one member on loopback ports of its own, in a data directory of its
//! own, stopped by its PID when dropped.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running etcd member.
pub struct Etcd {
    child: Child,
    dir: PathBuf,
    /// Its client address (`http://` + this).
    pub client: SocketAddr,
    peer: SocketAddr,
}

/// Where Debian's package puts the server.
const ETCD: &str = "/usr/bin/etcd";

impl Etcd {
    /// Starts a one-member cluster on 127.0.0.1 and waits until it answers `/health`.
    pub fn start() -> Etcd {
        assert!(
            std::path::Path::new(ETCD).exists(),
            "{ETCD} is missing: run the suite with `bash tests/run.sh`, which installs etcd-server"
        );
        let ip = "127.0.0.1".parse().unwrap();
        let deadline = Instant::now() + crate::process::WAIT;
        loop {
            let base = crate::fixture::free_port_range(ip, 2);
            let client = SocketAddr::new(ip, base);
            let peer = SocketAddr::new(ip, base + 1);
            let dir = std::env::temp_dir().join(format!(
                "sluice-etcd-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            let child = spawn(&dir, client, peer);
            let mut etcd = Etcd {
                child,
                dir,
                client,
                peer,
            };
            // A port taken between the probe and etcd's bind ends etcd at once: try
            // other ports.
            if etcd.wait_healthy(deadline) {
                return etcd;
            }
            assert!(Instant::now() < deadline, "etcd did not become healthy");
        }
    }

    /// Whether it answers `/health` before `deadline` (false once it has exited).
    fn wait_healthy(&mut self, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            if self.healthy() {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills the server (SIGKILL, by its PID), keeping its data for [`Etcd::restart`].
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the killed server again on the same ports and data, and waits until it
    /// is healthy.
    pub fn restart(&mut self) {
        self.child = spawn(&self.dir, self.client, self.peer);
        assert!(
            self.wait_healthy(Instant::now() + crate::process::WAIT),
            "etcd did not come back on {}",
            self.client
        );
    }

    /// `http://IP:PORT` for configs.
    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Whether `GET /health` says so.
    pub fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&self.client, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(dir: &std::path::Path, client: SocketAddr, peer: SocketAddr) -> Child {
    Command::new(ETCD)
        .args([
            "--name",
            "m0",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen-client-urls",
            &format!("http://{client}"),
            "--advertise-client-urls",
            &format!("http://{client}"),
            "--listen-peer-urls",
            &format!("http://{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://{peer}"),
            "--initial-cluster",
            &format!("m0=http://{peer}"),
            "--log-level",
            "error",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcd")
}
