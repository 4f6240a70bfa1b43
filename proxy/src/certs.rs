//! `sluice certs new`: a working set of certificates for a self-hosted edge, made with
//! rcgen, so nobody has to get `openssl req` right. A private CA (`ca.crt`, `ca.key`),
//! the edge's certificate signed by it with every name agents dial as a
//! subjectAltName (`edge.crt`, `edge.key`: a leaf, not a CA, so rustls accepts it), and
//! optionally client certificates for mTLS (`clients/NAME.crt`, `.key`). Keys are
//! written 0600 and never over an existing file.

use std::{
    fs::OpenOptions,
    io::Write,
    net::IpAddr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// How long the certificates made here are valid unless asked otherwise.
pub const VALID_DAYS: i64 = 825;

/// What to make.
#[derive(Debug, Clone)]
pub struct CertRequest {
    /// Directory to write into (created if missing).
    pub dir: PathBuf,
    /// Names agents dial the edge by (DNS names or IP addresses); the first is its
    /// common name.
    pub names: Vec<String>,
    /// Client certificates to issue for mTLS (common names).
    pub clients: Vec<String>,
    /// Days the certificates stay valid (from yesterday, for clock skew).
    pub days: i64,
}

/// The files written, for the summary printed to the operator.
#[derive(Debug, Default)]
pub struct Written {
    /// Every file, in order.
    pub files: Vec<PathBuf>,
}

/// Makes the CA, the edge certificate and the client certificates.
pub fn make(req: &CertRequest) -> anyhow::Result<Written> {
    anyhow::ensure!(
        !req.names.is_empty(),
        "give at least one --name: the host name (or IP) agents use in connect_url"
    );
    std::fs::create_dir_all(&req.dir)?;
    let mut out = Written::default();
    anyhow::ensure!(req.days >= 1, "--days must be at least 1");
    let ca = ca(&format!("sluice CA for {}", req.names[0]), req.days)?;
    write(&req.dir.join("ca.crt"), &ca.pem(), 0o644, &mut out)?;
    write(
        &req.dir.join("ca.key"),
        &ca.key().serialize_pem(),
        0o600,
        &mut out,
    )?;
    let (cert, key) = leaf(
        &ca,
        &req.names,
        ExtendedKeyUsagePurpose::ServerAuth,
        req.days,
    )?;
    write(&req.dir.join("edge.crt"), &cert, 0o644, &mut out)?;
    write(&req.dir.join("edge.key"), &key, 0o600, &mut out)?;
    if !req.clients.is_empty() {
        let dir = req.dir.join("clients");
        std::fs::create_dir_all(&dir)?;
        for name in &req.clients {
            anyhow::ensure!(
                !name.is_empty() && !name.contains(['/', '\0']),
                "client name `{name}`: no slashes"
            );
            let (cert, key) = leaf(
                &ca,
                std::slice::from_ref(name),
                ExtendedKeyUsagePurpose::ClientAuth,
                req.days,
            )?;
            write(&dir.join(format!("{name}.crt")), &cert, 0o644, &mut out)?;
            write(&dir.join(format!("{name}.key")), &key, 0o600, &mut out)?;
        }
    }
    Ok(out)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let day = |offset: i64| {
        let (y, m, d) = civil_from_days(now / 86_400 + offset);
        rcgen::date_time_ymd(y, m, d)
    };
    params.not_before = day(-1);
    params.not_after = day(days);
}

fn ca(name: &str, days: i64) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days);
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[String],
    usage: ExtendedKeyUsagePurpose,
    days: i64,
) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
        })
        .collect::<anyhow::Result<_>>()?;
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(path: &Path, content: &str, mode: u32, out: &mut Written) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (sluice never overwrites a key or certificate)",
                path.display()
            )
        })?;
    f.write_all(content.as_bytes())?;
    out.files.push(path.to_path_buf());
    Ok(())
}

/// The civil date (year, month, day) of day `days` since the Unix epoch (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m as u8, d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_426), (2025, 12, 4));
    }

    #[test]
    fn the_set_verifies_with_rustls_and_refuses_to_overwrite() {
        use rustls::client::danger::ServerCertVerifier;
        let dir = std::env::temp_dir().join(format!("sluice-certs-{}", crate::state::new_id("t")));
        let req = CertRequest {
            dir: dir.clone(),
            names: vec!["localhost".into(), "127.0.0.1".into()],
            clients: vec!["app".into()],
            days: VALID_DAYS,
        };
        let written = make(&req).unwrap();
        assert_eq!(written.files.len(), 6);
        // The edge's pair loads as the agent port's TLS (a leaf, key matching).
        let certs = crate::tls::load_certs(&dir.join("edge.crt")).unwrap();
        let key = crate::tls::load_key(&dir.join("edge.key")).unwrap();
        crate::tls::server_config(
            certs.clone(),
            key,
            &dir.join("edge.crt"),
            &dir.join("edge.key"),
        )
        .unwrap();
        // And verifies against the CA for both names.
        let ca = crate::tls::load_certs(&dir.join("ca.crt")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca[0].clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        for name in ["localhost", "127.0.0.1"] {
            let server_name = rustls_pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(
                    &certs[0],
                    &[],
                    &server_name,
                    &[],
                    rustls_pki_types::UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("edge.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(make(&req).is_err(), "an existing set is never overwritten");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
