//! TLS material: PEM loading with errors that name the file, rustls server and client
//! configurations (ring provider), client-certificate verification (mTLS), and
//! self-signed certificates for `sluice demo`.

use std::{path::Path, sync::Arc};

use rustls::{
    server::{danger::ClientCertVerifier, WebPkiClientVerifier},
    ClientConfig, RootCertStore, ServerConfig,
};
use rustls_pki_types::{
    pem::{self, PemObject},
    CertificateDer, PrivateKeyDer,
};

/// A TLS file could not be used; the message names the file and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct TlsSetupError {
    /// The offending file, or `<generated>`.
    pub path: String,
    /// What is wrong with it.
    pub problem: String,
}

impl TlsSetupError {
    fn new(path: &Path, problem: impl ToString) -> Self {
        Self {
            path: path.display().to_string(),
            problem: problem.to_string(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Says what is wrong with a PEM file in words an operator can act on.
fn pem_problem(e: pem::Error, wanted: &str) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        pem::Error::NoItemsFound => format!("no {wanted} block found (is this a PEM file?)"),
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "not valid PEM: missing `{}`",
            String::from_utf8_lossy(&end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "not valid PEM: bad line `{}`",
            String::from_utf8_lossy(&line)
        ),
        pem::Error::Base64Decode(e) => format!("not valid PEM: bad base64 ({e})"),
        other => format!("not valid PEM: {other}"),
    }
}

/// Reads every certificate in a PEM file; an empty file is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsSetupError::new(path, pem_problem(e, "CERTIFICATE")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::new(path, pem_problem(e, "CERTIFICATE")))?;
    if certs.is_empty() {
        return Err(TlsSetupError::new(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        TlsSetupError::new(path, pem_problem(e, "PRIVATE KEY (PKCS#8, PKCS#1 or SEC1)"))
    })
}

/// A trust store from the certificates of every file in `paths`; a file that holds
/// no usable CA certificate is an error naming it.
pub fn load_roots(paths: &[&Path]) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for path in paths {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|e| {
                TlsSetupError::new(path, format!("not a usable CA certificate: {e}"))
            })?;
        }
    }
    Ok(roots)
}

/// A verifier that requires a client certificate chaining to one of `roots`.
pub fn client_verifier(
    roots: RootCertStore,
    source: &Path,
) -> Result<Arc<dyn ClientCertVerifier>, TlsSetupError> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsSetupError::new(source, e))
}

/// Loads a certificate chain and key into a server configuration; `verifier`, when
/// given, requires and checks client certificates. Errors name the offending file,
/// including a key that does not belong to the certificate.
pub fn server_config_from_files(
    cert: &Path,
    key: &Path,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    server_config_with(certs, key_der, cert, key, verifier)
}

/// [`server_config_from_files`] for a chain and key already loaded from `cert` and
/// `key` (the paths name the file in errors).
pub fn server_config_with(
    certs: Vec<CertificateDer<'static>>,
    key_der: PrivateKeyDer<'static>,
    cert: &Path,
    key: &Path,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::new(cert, e))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key_der)
        .map_err(|e| single_cert_error(e, cert, key))?;
    Ok(Arc::new(config))
}

/// Names the file at fault when a certificate and key cannot be used together: the
/// key when it does not match the certificate or is of a kind rustls cannot sign with
/// (DSA, say), the certificate otherwise.
fn single_cert_error(e: rustls::Error, cert: &Path, key: &Path) -> TlsSetupError {
    match e {
        rustls::Error::InconsistentKeys(_) => TlsSetupError::new(
            key,
            format!("does not match the certificate in {}", cert.display()),
        ),
        rustls::Error::General(m) if m.contains("private key") => TlsSetupError::new(
            key,
            format!("unusable private key ({m}); use an RSA, ECDSA (P-256/P-384) or Ed25519 key"),
        ),
        e => TlsSetupError::new(cert, e),
    }
}

/// The agent port's server configuration: presenting `certs`/`key`, TLS 1.3 only, no
/// client authentication.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    // TLS 1.3 only: both ends are sluice, and 1.3 has no legacy suites or renegotiation.
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsSetupError::new(cert_path, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| single_cert_error(e, cert_path, key_path))?;
    Ok(Arc::new(config))
}

/// A client configuration trusting `cas`, or the webpki root set when `cas` is `None`.
pub fn client_config(
    cas: Option<Vec<CertificateDer<'static>>>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    client_config_named(cas, Path::new("connect_cas"))
}

/// [`client_config`], naming `source` (the CA file) when a certificate is unusable.
pub fn client_config_named(
    cas: Option<Vec<CertificateDer<'static>>>,
    source: &Path,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    match cas {
        Some(cas) => {
            for ca in cas {
                roots.add(ca).map_err(|e| {
                    TlsSetupError::new(source, format!("not a usable CA certificate: {e}"))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::new(Path::new("<client>"), e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A self-signed certificate (and its key) for `names`, as PEM strings.
pub fn self_signed_pem(names: &[&str]) -> Result<(String, String), TlsSetupError> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsSetupError::new(Path::new("<generated>"), e))?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

/// When the first certificate of `certs` (the leaf) stops being valid, if it parses.
pub fn not_after(certs: &[CertificateDer<'_>]) -> Option<std::time::SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?).ok()?;
    let secs = cert.validity().not_after.timestamp();
    let secs = u64::try_from(secs).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// How long before its expiry a certificate is warned about.
pub const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Logs how soon the certificate named `what` expires: an error once it has, a
/// warning within [`EXPIRY_WARNING`], info otherwise.
pub fn log_expiry(what: &str, not_after: Option<std::time::SystemTime>) {
    let Some(at) = not_after else {
        return;
    };
    let expires = humantime::format_rfc3339_seconds(at).to_string();
    match at.duration_since(std::time::SystemTime::now()) {
        Err(_) => {
            tracing::error!(certificate = what, %expires, "certificate has expired: peers will refuse it; replace it and reload")
        }
        Ok(left) if left < EXPIRY_WARNING => {
            let days = left.as_secs() / 86_400;
            tracing::warn!(certificate = what, %expires, days, "certificate expires soon: replace it and reload (SIGHUP)")
        }
        Ok(_) => tracing::info!(certificate = what, %expires, "certificate valid"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_blamed_on_the_key_file() {
        let a = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = PrivateKeyDer::try_from(b.signing_key.serialize_der()).unwrap();
        let err = server_config(
            vec![a.cert.der().clone()],
            key,
            Path::new("/etc/sluice/edge.crt"),
            Path::new("/etc/sluice/edge.key"),
        )
        .unwrap_err();
        assert_eq!(err.path, "/etc/sluice/edge.key", "{err}");
        assert!(
            err.problem.contains("does not match the certificate"),
            "{err}"
        );
    }
}

/// What is wrong with the shape of `cert` as a server's own certificate, which
/// clients (rustls among them) will always refuse, each a sentence for `config check`
/// and start-up: a CA used as the leaf, an X.509 v1 certificate, no subjectAltName.
/// Its dates are [`validity_problem`]'s.
pub fn leaf_problems(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, c)) = x509_parser::parse_x509_certificate(cert) else {
        return vec!["cannot be parsed as an X.509 certificate".into()];
    };
    let mut out = Vec::new();
    if c.version() != x509_parser::x509::X509Version::V3 {
        out.push(format!(
            "is an X.509 {} certificate; TLS clients require v3 (with extensions): \
             make one with `sluice certs new`, or `openssl req -x509 … -addext \
             subjectAltName=DNS:NAME`",
            match c.version().0 {
                0 => "v1",
                1 => "v2",
                _ => "unknown-version",
            }
        ));
    }
    if c.is_ca() {
        out.push(
            "is a CA certificate (basicConstraints CA:TRUE), which TLS clients refuse as a \
             server's own certificate (CaUsedAsEndEntity): issue a leaf from it, e.g. \
             `sluice certs new`, or add `-addext basicConstraints=critical,CA:FALSE` to \
             `openssl req`"
                .into(),
        );
    }
    if c.subject_alternative_name().ok().flatten().is_none() {
        out.push(
            "has no subjectAltName: clients check the name they dial against the SANs only \
             (add `-addext subjectAltName=DNS:edge.example.com`, or use `sluice certs new`)"
                .into(),
        );
    }
    out
}

/// Whether `cert` is outside its validity now: expired, or not valid yet (a sentence),
/// a problem that passes with time or a replaced file rather than one of its shape.
pub fn validity_problem(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    let validity = c.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        Some(format!("expired on {}", validity.not_after))
    } else if validity.not_before > now {
        Some(format!("is not valid before {}", validity.not_before))
    } else {
        None
    }
}

/// A TLS failure as a sentence: rustls' certificate errors (which print as debug text
/// such as `Other(OtherError(CaUsedAsEndEntity))`) with what to do about them.
pub fn explain(error: &str) -> String {
    const HINTS: [(&str, &str); 8] = [
        ("CaUsedAsEndEntity", "the edge presents a CA certificate as its own; give it a leaf certificate signed by that CA (`sluice certs new`)"),
        ("UnknownIssuer", "the edge's certificate is not signed by a CA this side trusts; set connect_cas to the CA that signed it"),
        ("NotValidForName", "the edge's certificate does not name the host dialed; add it as a subjectAltName or set server_name"),
        ("Expired", "a certificate has expired; replace it"),
        ("NotValidYet", "a certificate is not valid yet (check the clocks)"),
        ("UnsupportedCertVersion", "a certificate is X.509 v1; TLS needs v3 (`sluice certs new`)"),
        ("BadEncoding", "a certificate is malformed"),
        ("InvalidPurpose", "a certificate is not meant for this use (extendedKeyUsage serverAuth/clientAuth)"),
    ];
    match HINTS.iter().find(|(tag, _)| error.contains(tag)) {
        Some((_, hint)) => format!("{hint} ({error})"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod leaf_tests {
    use super::*;

    #[test]
    fn a_ca_without_san_is_told_apart_from_a_good_leaf() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        let problems = leaf_problems(ca.der());
        assert!(
            problems.iter().any(|p| p.contains("CaUsedAsEndEntity")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("no subjectAltName")),
            "{problems:?}"
        );
        let good = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        assert!(leaf_problems(good.cert.der()).is_empty());
    }

    #[test]
    fn rustls_debug_text_becomes_a_sentence() {
        let e = explain("invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))");
        assert!(e.starts_with("the edge presents a CA certificate"), "{e}");
        assert_eq!(explain("connection reset"), "connection reset");
    }
}
