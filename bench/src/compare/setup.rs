//! What a run needs before the first path starts: sluice and sluice-load built in
//! release mode, a CA and an edge certificate (PEM, plus PKCS#12 for rathole's TLS),
//! a sluice token, a Noise key pair for rathole, and the two upstreams.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::procs::Proc;

/// The workspace root (bench/ is one level down).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// Builds sluice and sluice-load (release, same target directory as this binary) and
/// returns the directory holding them.
pub fn build_sluice() -> Result<PathBuf> {
    let st = Command::new("cargo")
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "sluice-proxy",
            "-p",
            "sluice-loadtest",
        ])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build")?;
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .context("the runner's directory")?
        .to_path_buf();
    for b in ["sluice", "sluice-load"] {
        if !dir.join(b).is_file() {
            bail!(
                "cargo build failed and {} does not exist",
                dir.join(b).display()
            );
        }
    }
    if !st.success() {
        eprintln!(
            "compare: cargo build failed; using the sluice and sluice-load already built in {}",
            dir.display()
        );
    }
    Ok(dir)
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A CA (`ca.pem`), an edge certificate for `localhost` signed by it (`edge.crt`,
/// `edge.key`) and the same as PKCS#12 (`identity.p12`, password returned).
pub fn certificates(dir: &Path) -> Result<String> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=sluice-bench CA",
    ]);
    openssl(dir, &ca)?;
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "edge.key",
        "-out",
        "edge.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr)?;
    std::fs::write(
        dir.join("edge.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "edge.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "edge.crt",
            "-days",
            "2",
            "-extfile",
            "edge.ext",
        ],
    )?;
    let password = "sluicebench";
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-out",
            "identity.p12",
            "-inkey",
            "edge.key",
            "-in",
            "edge.crt",
            "-certfile",
            "ca.pem",
            "-passout",
            &format!("pass:{password}"),
        ],
    )?;
    Ok(password.into())
}

/// A fresh sluice token: (token for the agent, hash for the edge).
pub fn sluice_token(sluice: &Path) -> Result<(String, String)> {
    let out = Command::new(sluice)
        .args(["token", "new"])
        .output()
        .context("sluice token new")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    match (lines.next(), lines.next()) {
        (Some(t), Some(h)) if out.status.success() => Ok((t.trim().into(), h.trim().into())),
        _ => bail!("sluice token new printed {text:?}"),
    }
}

/// `rathole --genkey`: (private key, public key).
pub fn noise_keys(rathole: &Path) -> Option<(String, String)> {
    let out = Command::new(rathole).arg("--genkey").output().ok()?;
    parse_genkey(&String::from_utf8_lossy(&out.stdout))
}

fn parse_genkey(text: &str) -> Option<(String, String)> {
    let after = |label: &str| {
        let mut it = text.lines();
        it.find(|l| l.trim().eq_ignore_ascii_case(label))
            .and(it.next())
            .map(|l| l.trim().to_string())
    };
    Some((after("Private Key:")?, after("Public Key:")?))
}

/// Starts `sluice-load serve --mode <mode>` on an ephemeral loopback port.
pub fn upstream(sluice_load: &Path, dir: &Path, mode: &str) -> Result<(Proc, SocketAddr)> {
    let args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--mode", mode]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut p = Proc::spawn(&format!("upstream-{mode}"), dir, sluice_load, &args)?;
    let line = p.wait_for_line("listening on", Duration::from_secs(10))?;
    let addr = parse_listening(&line).with_context(|| format!("no address in {line:?}"))?;
    Ok((p, addr))
}

fn parse_listening(line: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|w| w.trim_end_matches([',', ')']).parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tool_output() {
        let g = "Private Key:\ncHJpdg==\n\nPublic Key:\ncHVi\n";
        assert_eq!(parse_genkey(g), Some(("cHJpdg==".into(), "cHVi".into())));
        assert_eq!(parse_genkey("nothing"), None);
        assert_eq!(
            parse_listening("listening on 127.0.0.1:40123 (echo, 2 threads)"),
            Some("127.0.0.1:40123".parse().unwrap())
        );
    }

    #[test]
    fn makes_certificates() {
        if Command::new("openssl").arg("version").output().is_err() {
            return; // no openssl on this machine: nothing to check
        }
        let dir = std::env::temp_dir().join(format!("sluice-compare-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = certificates(&dir).unwrap();
        assert!(!pw.is_empty());
        for f in ["ca.pem", "edge.crt", "edge.key", "identity.p12"] {
            assert!(dir.join(f).is_file(), "{f}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
