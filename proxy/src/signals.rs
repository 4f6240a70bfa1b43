//! Process signals: SIGINT and SIGTERM are blocked in every thread at start-up and
//! waited for synchronously on the main thread, so no worker is interrupted mid-I/O.

/// Blocks SIGINT and SIGTERM for this thread and every thread it spawns afterwards.
/// Call before starting workers.
pub fn block_termination_signals() {
    // SAFETY: sigset manipulation on a zeroed local sigset_t, then pthread_sigmask on
    // the calling thread; no memory is shared.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits until SIGINT or SIGTERM arrives; returns its name.
pub fn wait_for_termination() -> &'static str {
    // SAFETY: as above; sigwait writes the received signal number into `sig`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut sig: libc::c_int = 0;
        libc::sigwait(&set, &mut sig);
        if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        }
    }
}
