//! Process signals: SIGINT and SIGTERM are blocked in every thread at start-up and
//! waited for synchronously on the main thread, so no worker is interrupted mid-I/O.

use std::time::Duration;

fn termination_set() -> libc::sigset_t {
    signal_set(false)
}

fn signal_set(hangup: bool) -> libc::sigset_t {
    // SAFETY: sigset manipulation on a zeroed local sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if hangup {
            libc::sigaddset(&mut set, libc::SIGHUP);
        }
        set
    }
}

/// A signal the edge acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT or SIGTERM (named): drain and exit.
    Terminate(&'static str),
    /// SIGHUP: reload the configuration.
    Hangup,
}

/// Blocks SIGINT, SIGTERM and SIGHUP for this thread and every thread it spawns
/// afterwards. Call before starting workers.
pub fn block_with_hangup() {
    let set = signal_set(true);
    // SAFETY: pthread_sigmask on the calling thread with a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for SIGINT, SIGTERM or SIGHUP (blocked with [`block_with_hangup`]).
pub fn wait_with_hangup() -> Signal {
    let set = signal_set(true);
    let mut sig: libc::c_int = 0;
    // SAFETY: sigwait writes the received signal number into `sig`.
    unsafe { libc::sigwait(&set, &mut sig) };
    if sig == libc::SIGHUP {
        Signal::Hangup
    } else {
        Signal::Terminate(name(sig))
    }
}

fn name(sig: libc::c_int) -> &'static str {
    if sig == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    }
}

/// Blocks SIGINT and SIGTERM for this thread and every thread it spawns afterwards.
/// Call before starting workers.
pub fn block_termination_signals() {
    let set = termination_set();
    // SAFETY: pthread_sigmask on the calling thread with a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits until SIGINT or SIGTERM arrives; returns its name.
pub fn wait_for_termination() -> &'static str {
    let set = termination_set();
    let mut sig: libc::c_int = 0;
    // SAFETY: sigwait writes the received signal number into `sig`.
    unsafe { libc::sigwait(&set, &mut sig) };
    name(sig)
}

/// Waits up to `timeout` for SIGINT or SIGTERM; its name, or `None` when none came.
pub fn wait_for_termination_timeout(timeout: Duration) -> Option<&'static str> {
    let set = termination_set();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: sigtimedwait with a valid set and timespec; no siginfo requested.
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (sig > 0).then(|| name(sig))
}
