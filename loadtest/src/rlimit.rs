//! Raising `RLIMIT_NOFILE`: `hold` needs one descriptor per connection and `serve`
//! one per accepted connection, far above the usual soft limit of 1024.

/// Raises the soft open-file limit to at least `wanted` where allowed: up to the hard
/// limit, and past it (up to `fs.nr_open`) when the process may raise the hard limit.
/// Returns the soft limit in force afterwards; never lowers it.
pub fn raise_nofile(wanted: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur >= wanted {
        return lim.rlim_cur;
    }
    if lim.rlim_max < wanted {
        let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(wanted);
        let raised = libc::rlimit {
            rlim_cur: wanted.min(ceiling),
            rlim_max: wanted.min(ceiling),
        };
        // SAFETY: setrlimit reads the struct we own; failure (not privileged) is fine.
        if raised.rlim_max > lim.rlim_max
            && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0
        {
            return raised.rlim_cur;
        }
    }
    let soft = libc::rlimit {
        rlim_cur: wanted.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } == 0 {
        return soft.rlim_cur;
    }
    lim.rlim_cur
}
