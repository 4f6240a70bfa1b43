//! TLS configuration with rustls on the `ring` provider: client configs for
//! `--tls --sni --ca --insecure` ([`client_options`]) and the server config of
//! `serve --tls-cert --tls-key` ([`server_config`]). The record layer over monoio
//! sockets is in [`crate::stream`].
use std::{path::Path, sync::Arc};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{ring, CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};

use crate::{options::TlsClientOptions, LoadError};

/// Which certificates the client trusts.
#[derive(Clone, Debug)]
pub enum Roots {
    /// The Mozilla roots bundled by `webpki-roots`.
    WebPki,
    /// Only these CA certificates.
    Certs(Vec<CertificateDer<'static>>),
    /// Anything (`--insecure`): handshake signatures are still checked, the chain is not.
    Insecure,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// A client config trusting `roots` that presents `server_name` (a DNS name or IP).
pub fn client_options(roots: Roots, server_name: &str) -> Result<TlsClientOptions, LoadError> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| LoadError::Tls(format!("server name {server_name:?}: {e}")))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::Tls(e.to_string()))?;
    let config = match roots {
        Roots::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(
                provider().signature_verification_algorithms,
            )))
            .with_no_client_auth(),
        Roots::WebPki => {
            let store =
                rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(store).with_no_client_auth()
        }
        Roots::Certs(certs) => {
            let mut store = rustls::RootCertStore::empty();
            for c in certs {
                store
                    .add(c)
                    .map_err(|e| LoadError::Tls(format!("CA certificate: {e}")))?;
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
    };
    Ok(TlsClientOptions {
        config: Arc::new(config),
        server_name: name,
    })
}

/// A server config presenting `certs` (leaf first) with `key`.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, LoadError> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| LoadError::Tls(format!("certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; an error if there is none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(LoadError::Tls(format!(
            "{}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| LoadError::Tls(format!("{}: {e}", path.display())))
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// `--insecure`: accepts any certificate chain.
#[derive(Debug)]
struct NoVerify(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
