//! TLS material: PEM loading with errors that name the file, rustls server and client
//! configurations (ring provider), and self-signed certificates for `sluice demo`.

use std::{path::Path, sync::Arc};

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

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

/// Reads every certificate in a PEM file; an empty file is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsSetupError::new(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::new(path, e))?;
    if certs.is_empty() {
        return Err(TlsSetupError::new(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsSetupError::new(path, e))
}

/// A server configuration presenting `certs`/`key`, no client authentication.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    source: &Path,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::new(source, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsSetupError::new(source, e))?;
    Ok(Arc::new(config))
}

/// A client configuration trusting `cas`, or the webpki root set when `cas` is `None`.
pub fn client_config(
    cas: Option<Vec<CertificateDer<'static>>>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    match cas {
        Some(cas) => {
            for ca in cas {
                roots
                    .add(ca)
                    .map_err(|e| TlsSetupError::new(Path::new("connect_cas"), e))?;
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
