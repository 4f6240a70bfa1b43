//! A network namespace joined to the test's own namespace by a veth pair, for faults
//! loopback cannot produce (a link that goes silent: no FIN, no RST, no ICMP).
//!
//! Needs root (`ip netns add`). [`Netns::create`] panics with a clear message when that
//! is not possible, so a test that needs it fails loudly instead of passing silently.
//! The namespace (and with it both veth ends) is deleted on drop, during a panic too.

use std::{
    net::Ipv4Addr,
    os::fd::AsRawFd,
    process::{Command, Stdio},
};

/// A namespace `name` whose interface `inner` (address [`Netns::inner_ip`]) is paired
/// with `outer` in the test's namespace (address [`Netns::outer_ip`]), a private /30.
pub struct Netns {
    /// Namespace name (`ip netns exec NAME …`).
    pub name: String,
    /// The veth end inside the namespace.
    pub inner: String,
    /// The veth end in the test's namespace.
    pub outer: String,
    /// Address of `outer` (what processes in the namespace dial).
    pub outer_ip: Ipv4Addr,
    /// Address of `inner`.
    pub inner_ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Creates the namespace and the veth pair, with addresses in 10.77.0.0/16 picked
    /// from the process id and `tag` (so parallel tests do not collide), both ends up.
    /// `tag` is short (interface names have 15 bytes).
    /// Panics, naming what failed, when namespaces cannot be created (not root).
    pub fn create(tag: &str) -> Netns {
        let pid = std::process::id();
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert!(
            euid == 0,
            "this test needs root to create network namespaces (`ip netns add`); \
             running as uid {euid}. Run the suite as root (CI does)."
        );
        let short = format!("{:x}", pid & 0xffff);
        let salt: u32 = tag.bytes().map(u32::from).sum();
        let subnet = (pid.wrapping_mul(7).wrapping_add(salt) % 16_000) * 4; // a /30 in 10.77/16
        let base = u32::from(Ipv4Addr::new(10, 77, 0, 0)) + subnet;
        let ns = Netns {
            name: format!("sluice-{tag}-{pid}"),
            inner: format!("sl{short}{tag}a"),
            outer: format!("sl{short}{tag}e"),
            outer_ip: Ipv4Addr::from(base + 1),
            inner_ip: Ipv4Addr::from(base + 2),
        };
        assert!(
            ns.inner.len() <= 15,
            "interface name too long: {}",
            ns.inner
        );
        // Leftovers of an earlier run of this same pid (unlikely) go first.
        let _ = ip(&["netns", "del", &ns.name]);
        let _ = ip(&["link", "del", &ns.outer]);
        if let Err(e) = ns.setup() {
            panic!("cannot create network namespace {}: {e}", ns.name);
        }
        ns
    }

    fn setup(&self) -> Result<(), String> {
        ip(&["netns", "add", &self.name])?;
        ip(&[
            "link",
            "add",
            &self.outer,
            "type",
            "veth",
            "peer",
            "name",
            &self.inner,
        ])?;
        ip(&["link", "set", &self.inner, "netns", &self.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", self.outer_ip),
            "dev",
            &self.outer,
        ])?;
        ip(&["link", "set", &self.outer, "up"])?;
        self.exec_ip(&[
            "addr",
            "add",
            &format!("{}/30", self.inner_ip),
            "dev",
            &self.inner,
        ])?;
        self.exec_ip(&["link", "set", &self.inner, "up"])?;
        self.exec_ip(&["link", "set", "lo", "up"])?;
        Ok(())
    }

    fn exec_ip(&self, args: &[&str]) -> Result<(), String> {
        let mut full = vec!["netns", "exec", &self.name, "ip"];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// Takes the inner link down: packets to and from the namespace vanish silently.
    pub fn link_down(&self) {
        self.exec_ip(&["link", "set", &self.inner, "down"])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Brings the inner link back up (its address and route return with it).
    pub fn link_up(&self) {
        self.exec_ip(&["link", "set", &self.inner, "up"])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs `f` on a thread that has joined the namespace: sockets it creates (e.g. a
    /// listener) live in the namespace and stay there when the thread ends.
    pub fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns(2) on an open namespace file; it changes only this thread's
            // network namespace, and the thread ends after `f`.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread inside the namespace panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys the inner veth end, which takes the outer
        // one with it; delete the outer end too in case a process still pins the
        // namespace.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.outer]);
    }
}
