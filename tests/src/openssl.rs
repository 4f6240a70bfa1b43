//! `openssl s_client` as a real, independent TLS client (Debian's `openssl` package;
//! `.ci/run` installs it): send a line, wait (with a deadline) for it to come back.

use std::{
    io::{Read, Write},
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// How long an exchange may take before it counts as failed.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Connects with `openssl s_client` (SNI `name`, server verified against `ca_file`,
/// presenting `identity` = (cert, key) PEM files when given), sends `line` and waits
/// for it to be echoed. `Err` carries s_client's stderr when the line never came back.
pub fn echo_line(
    target: SocketAddr,
    name: &str,
    ca_file: &Path,
    identity: Option<(&Path, &Path)>,
    line: &str,
) -> Result<(), String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-quiet", "-verify_return_error"])
        .args(["-connect", &target.to_string()])
        .args(["-servername", name, "-verify_hostname", name])
        .arg("-CAfile")
        .arg(ca_file);
    if let Some((cert, key)) = identity {
        cmd.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run openssl (install Debian's `openssl`): {e}"))?;
    let (tx, rx) = mpsc::channel::<Option<Vec<u8>>>();
    let mut stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(n) => {
                    let _ = tx.send(Some(buf[..n].to_vec()));
                }
            }
        }
    });
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdin = child.stdin.take().expect("piped");
    let sent = stdin.write_all(format!("{line}\n").as_bytes());
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let echoed = loop {
        if got.windows(line.len()).any(|w| w == line.as_bytes()) {
            break true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Some(bytes)) => got.extend_from_slice(&bytes),
            Ok(None) | Err(_) => break false,
        }
    };
    drop(stdin);
    // Our own child, stopped by its handle (its PID).
    let _ = child.kill();
    let status = child.wait();
    let stderr_text = err_reader.join().unwrap_or_default();
    if echoed && sent.is_ok() {
        Ok(())
    } else {
        Err(format!(
            "no echo from s_client (status {status:?}, stdout {:?}): {stderr_text}",
            String::from_utf8_lossy(&got)
        ))
    }
}
