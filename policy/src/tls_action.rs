//! The `terminate-tls` action of `on_tcp_connect` ([`TerminateTls`]): ngrok's config
//! fields, checked while they are read, and the rustls server configuration the
//! compiled policy hands to the edge ([`TerminateTls::server_config`]).
//!
//! Certificates, keys and CA bundles are written as ngrok writes them (PEM text in the
//! policy) or as the absolute path of a PEM file on the edge host. A policy kept by the
//! admin API is stored and shown back, so the API refuses inline private keys
//! ([`TerminateTls::has_inline_key`]); an inline key is never serialized back out.

use std::{fmt, path::PathBuf, sync::Arc};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use serde::{
    de::{self, Deserializer},
    Deserialize, Serialize, Serializer,
};

/// Config of a `terminate-tls` action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TerminateTls {
    /// Oldest TLS version offered (default 1.2).
    pub min_version: TlsVersion,
    /// Newest TLS version offered (default 1.3).
    pub max_version: TlsVersion,
    /// The certificate chain presented to clients.
    pub server_certificate: Pem,
    /// The private key of that certificate.
    pub server_private_key: Pem,
    /// CA certificates client certificates must chain to (none: no client
    /// certificates are asked for).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mutual_tls_certificate_authorities: Vec<Pem>,
    /// Whether a client certificate is required or only checked when given.
    #[serde(skip_serializing_if = "MtlsStrategy::is_default")]
    pub mutual_tls_verification_strategy: MtlsStrategy,
}

/// A TLS protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

/// `mutual_tls_verification_strategy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MtlsStrategy {
    /// A client without a certificate that chains to the CAs is refused.
    #[default]
    RequireAndVerify,
    /// A certificate is asked for; one that is given must chain to the CAs.
    Request,
}

/// PEM as written in the policy, or the absolute path of a PEM file on the edge host.
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    /// `-----BEGIN …` text.
    Inline(String),
    /// A file read when the policy is compiled.
    File(PathBuf),
}

impl MtlsStrategy {
    fn is_default(&self) -> bool {
        *self == MtlsStrategy::default()
    }
}

impl TerminateTls {
    /// Whether the private key is written in the policy itself (not a file).
    pub fn has_inline_key(&self) -> bool {
        matches!(self.server_private_key, Pem::Inline(_))
    }

    /// Its certificates, key and CAs as bytes (files read now; an unreadable one adds
    /// nothing), for telling a reloaded policy whose files were replaced from an
    /// unchanged one.
    pub fn material(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let pems = [&self.server_certificate, &self.server_private_key]
            .into_iter()
            .chain(&self.mutual_tls_certificate_authorities);
        for pem in pems {
            out.extend(pem.read("").unwrap_or_default());
            out.push(0);
        }
        out
    }

    /// The server configuration this action terminates with: files read, the key
    /// matched to the certificate, the client verifier built. The error names the
    /// field at fault.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = certificates(&self.server_certificate, "server_certificate")?;
        let key_pem = self.server_private_key.read("server_private_key")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| format!("server_private_key: no usable PEM private key ({e})"))?;
        let versions: Vec<&'static SupportedProtocolVersion> = [
            (TlsVersion::V1_2, &rustls::version::TLS12),
            (TlsVersion::V1_3, &rustls::version::TLS13),
        ]
        .into_iter()
        .filter(|(v, _)| (self.min_version..=self.max_version).contains(v))
        .map(|(_, v)| v)
        .collect();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("min_version/max_version: {e}"))?;
        let builder = if self.mutual_tls_certificate_authorities.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            for pem in &self.mutual_tls_certificate_authorities {
                for ca in certificates(pem, "mutual_tls_certificate_authorities")? {
                    roots.add(ca).map_err(|e| {
                        format!(
                            "mutual_tls_certificate_authorities: not a usable CA certificate: {e}"
                        )
                    })?;
                }
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match self.mutual_tls_verification_strategy {
                MtlsStrategy::RequireAndVerify => verifier,
                MtlsStrategy::Request => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("mutual_tls_certificate_authorities: {e}"))?,
            )
        };
        let config = builder.with_single_cert(certs, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                "server_private_key: does not match server_certificate".to_owned()
            }
            e => format!("server_certificate/server_private_key: {e}"),
        })?;
        Ok(Arc::new(config))
    }
}

/// Every certificate of `pem` (at least one).
fn certificates(pem: &Pem, field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = pem.read(field)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{field}: unreadable PEM ({e})"))?;
    if certs.is_empty() {
        return Err(format!("{field}: no PEM certificate in it"));
    }
    Ok(certs)
}

impl Pem {
    /// The PEM bytes: the text, or the file's contents.
    fn read(&self, field: &str) -> Result<Vec<u8>, String> {
        match self {
            Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
            Pem::File(path) => {
                std::fs::read(path).map_err(|e| format!("{field}: {}: {e}", path.display()))
            }
        }
    }

    /// Reads one field's value: PEM text, or an absolute path.
    fn parse(text: String, field: &str) -> Result<Pem, String> {
        if text.trim_start().starts_with("-----BEGIN ") {
            return Ok(Pem::Inline(text));
        }
        let path = PathBuf::from(&text);
        if !path.is_absolute() {
            // A key pasted without its PEM lines is still a key: never echoed.
            let shown = if field == "server_private_key" {
                String::new()
            } else {
                format!(": `{}`", text.chars().take(60).collect::<String>())
            };
            return Err(format!(
                "{field}: neither PEM text (`-----BEGIN …`) nor an absolute path{shown} \
                 (a policy can travel through the admin API and a fleet's etcd, where no \
                 directory is \"here\")"
            ));
        }
        Ok(Pem::File(path))
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::Inline(text) => write!(f, "Pem::Inline({} bytes)", text.len()),
            Pem::File(path) => write!(f, "Pem::File({})", path.display()),
        }
    }
}

/// A file is shown by its path; inline certificates as written; an inline private key
/// never (a placeholder that no parse accepts, so a policy shown back cannot be stored
/// again by mistake as if it held the key).
impl Serialize for Pem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Pem::File(path) => s.serialize_str(&path.to_string_lossy()),
            Pem::Inline(text) if text.contains("PRIVATE KEY") => {
                s.serialize_str("(an inline private key, not shown)")
            }
            Pem::Inline(text) => s.serialize_str(text),
        }
    }
}

impl Serialize for TlsVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        })
    }
}

impl Serialize for MtlsStrategy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            MtlsStrategy::RequireAndVerify => "require-and-verify",
            MtlsStrategy::Request => "request",
        })
    }
}

/// A version as YAML gives it: `"1.2"` or, unquoted, the number 1.2.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum VersionText {
    Text(String),
    Number(f64),
}

fn version(v: VersionText, field: &str) -> Result<TlsVersion, String> {
    let text = match v {
        VersionText::Text(t) => t,
        VersionText::Number(n) => format!("{n}"),
    };
    match text.as_str() {
        "1.2" => Ok(TlsVersion::V1_2),
        "1.3" => Ok(TlsVersion::V1_3),
        other => Err(format!("{field}: `{other}`: expected \"1.2\" or \"1.3\"")),
    }
}

/// The config as written, before its checks.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTerminateTls {
    pub(crate) min_version: Option<VersionText>,
    pub(crate) max_version: Option<VersionText>,
    pub(crate) server_certificate: Option<String>,
    pub(crate) server_private_key: Option<String>,
    pub(crate) mutual_tls_certificate_authorities: Option<Vec<String>>,
    pub(crate) mutual_tls_verification_strategy: Option<String>,
}

impl RawTerminateTls {
    /// The checked config; the error names the field.
    pub(crate) fn check(self) -> Result<TerminateTls, String> {
        let min_version = self
            .min_version
            .map_or(Ok(TlsVersion::V1_2), |v| version(v, "min_version"))?;
        let max_version = self
            .max_version
            .map_or(Ok(TlsVersion::V1_3), |v| version(v, "max_version"))?;
        if min_version > max_version {
            return Err("min_version is newer than max_version".to_owned());
        }
        let (Some(cert), Some(key)) = (self.server_certificate, self.server_private_key) else {
            return Err(
                "`terminate-tls` needs `server_certificate` and `server_private_key` \
                 (PEM text or absolute paths): sluice makes no certificates for endpoints"
                    .to_owned(),
            );
        };
        for (field, text) in std::iter::once(("server_certificate", &cert)).chain(
            self.mutual_tls_certificate_authorities
                .iter()
                .flatten()
                .map(|ca| ("mutual_tls_certificate_authorities", ca)),
        ) {
            if text.contains("PRIVATE KEY-----") {
                return Err(format!(
                    "{field} holds a private key: a key belongs in server_private_key only \
                     (where it is never shown back)"
                ));
            }
        }
        let server_certificate = Pem::parse(cert, "server_certificate")?;
        let server_private_key = Pem::parse(key, "server_private_key")?;
        if let Pem::Inline(text) = &server_certificate {
            certificates(&Pem::Inline(text.clone()), "server_certificate")?;
        }
        if let Pem::Inline(text) = &server_private_key {
            PrivateKeyDer::from_pem_slice(text.as_bytes())
                .map_err(|e| format!("server_private_key: no usable PEM private key ({e})"))?;
        }
        let mutual_tls_certificate_authorities = self
            .mutual_tls_certificate_authorities
            .unwrap_or_default()
            .into_iter()
            .map(|ca| {
                let pem = Pem::parse(ca, "mutual_tls_certificate_authorities")?;
                if let Pem::Inline(_) = &pem {
                    certificates(&pem, "mutual_tls_certificate_authorities")?;
                }
                Ok(pem)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mutual_tls_verification_strategy = match self.mutual_tls_verification_strategy {
            None => MtlsStrategy::default(),
            Some(_) if mutual_tls_certificate_authorities.is_empty() => {
                return Err("mutual_tls_verification_strategy without \
                     mutual_tls_certificate_authorities: name the CAs client certificates \
                     must chain to"
                    .to_owned())
            }
            Some(s) => match s.as_str() {
                "require-and-verify" => MtlsStrategy::RequireAndVerify,
                "request" => MtlsStrategy::Request,
                "require-any" => {
                    return Err("mutual_tls_verification_strategy `require-any` (any \
                         certificate, unchecked) proves nothing about the client and is not \
                         offered: use `require-and-verify` or `request`"
                        .to_owned())
                }
                other => {
                    return Err(format!(
                        "mutual_tls_verification_strategy `{other}`: expected \
                         `require-and-verify` or `request`"
                    ))
                }
            },
        };
        Ok(TerminateTls {
            min_version,
            max_version,
            server_certificate,
            server_private_key,
            mutual_tls_certificate_authorities,
            mutual_tls_verification_strategy,
        })
    }
}

impl<'de> Deserialize<'de> for TerminateTls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawTerminateTls::deserialize(d)?
            .check()
            .map_err(de::Error::custom)
    }
}
