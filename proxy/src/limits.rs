//! Process resource limits: every connection costs file descriptors (a public client, a
//! data channel, an upstream, pipes), so the soft `RLIMIT_NOFILE` is raised at start —
//! past the hard limit up to `fs.nr_open` (at most 1,048,576) where the process may, to
//! the hard limit otherwise — and the value in force is logged.

/// Raises the soft open-files limit to the hard limit; returns the limit now in force.
pub fn raise_nofile() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(0)
        .min(1 << 20);
    if ceiling > lim.rlim_max {
        let privileged = libc::rlimit {
            rlim_cur: ceiling,
            rlim_max: ceiling,
        };
        // SAFETY: setrlimit with a valid struct; fails harmlessly (EPERM) when the
        // process may not raise its hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &privileged) } == 0 {
            return Ok(ceiling);
        }
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit with a valid struct; raising soft up to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}

/// Raises the limit and logs the outcome once.
pub fn raise_and_log(role: &str) {
    match raise_nofile() {
        Ok(n) => tracing::info!(role, open_files = n, "file descriptor limit"),
        Err(e) => tracing::warn!(role, error = %e, "cannot read the file descriptor limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_at_least_the_hard_limit() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: get/setrlimit on this test process with structs we own.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            let lowered = libc::rlimit {
                rlim_cur: lim.rlim_cur.min(256),
                rlim_max: lim.rlim_max,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lowered), 0);
        }
        assert!(raise_nofile().unwrap() >= lim.rlim_max);
    }
}
