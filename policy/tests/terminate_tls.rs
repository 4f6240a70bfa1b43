//! The `terminate-tls` action of `on_tcp_connect`, written as ngrok's documentation
//! writes it: which connections reach it (the first one reached applies), the rustls
//! configuration it makes (versions, client certificates), how an inline key is kept
//! out of what a policy shows, and what is refused, with where and why.

use std::{io::Write, net::SocketAddr, sync::Arc};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    ClientConfig, ProtocolVersion, RootCertStore, ServerConfig,
};
use sluice_policy::{ConnInfo, EndpointPolicy, TrafficPolicy};

/// A CA and a server certificate it signed for `app.acme.example`, as PEM; a client
/// certificate it signed, as DER.
struct Material {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    other_key_pem: String,
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

fn material() -> Material {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["app.acme.example".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["saas-app".to_owned()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    Material {
        client: (
            client.der().clone(),
            PrivateKeyDer::try_from(client_key.serialize_der()).unwrap(),
        ),
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: key.serialize_pem(),
        other_key_pem: KeyPair::generate().unwrap().serialize_pem(),
    }
}

/// A `terminate-tls` action's config as JSON (JSON is YAML).
fn action(config: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "type": "terminate-tls", "config": config })
}

fn policy(rules: serde_json::Value) -> Result<TrafficPolicy, String> {
    TrafficPolicy::from_yaml(&serde_json::json!({ "on_tcp_connect": rules }).to_string())
        .map_err(|e| e.to_string())
}

fn forward() -> serde_json::Value {
    serde_json::json!({ "actions": [
        { "type": "forward-internal", "config": { "url": "tcp://app.internal:443" } }
    ] })
}

/// A client trusting `ca_pem`, offering `versions`, with `identity` if given.
fn client(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<&(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    Arc::new(match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(vec![cert.clone()], key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS12, &rustls::version::TLS13];

/// A whole handshake in memory; the version agreed, or the first error either side
/// met.
fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> Result<ProtocolVersion, rustls::Error> {
    let mut c = rustls::ClientConnection::new(client, "app.acme.example".try_into().unwrap())?;
    let mut s = rustls::ServerConnection::new(server)?;
    for _ in 0..16 {
        let mut wire = Vec::new();
        c.write_tls(&mut wire).unwrap();
        s.read_tls(&mut wire.as_slice()).unwrap();
        s.process_new_packets()?;
        let mut wire = Vec::new();
        s.write_tls(&mut wire).unwrap();
        c.read_tls(&mut wire.as_slice()).unwrap();
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(c.protocol_version().unwrap());
        }
    }
    panic!("the handshake made no progress");
}

struct Sni(&'static str);

impl ConnInfo for Sni {
    fn server(&self) -> Option<SocketAddr> {
        None
    }
    fn sni(&self) -> Option<String> {
        Some(self.0.to_owned())
    }
    fn country_code(&self, _: std::net::IpAddr) -> Option<String> {
        None
    }
}

#[test]
fn the_first_terminate_tls_a_connection_reaches_applies() {
    let m = material();
    let tls13 = action(serde_json::json!({
        "server_certificate": m.cert_pem, "server_private_key": m.key_pem, "min_version": "1.3",
    }));
    let tls12 = action(serde_json::json!({
        "server_certificate": m.cert_pem, "server_private_key": m.key_pem, "max_version": 1.2,
    }));
    let p = policy(serde_json::json!([
        { "expressions": ["conn.tls.sni == 'new.acme.example'"], "actions": [tls13] },
        { "expressions": ["inCidrRange(conn.client_ip, '10.0.0.0/8')"], "actions": [tls12] },
        forward(),
    ]))
    .unwrap();
    let c = p.compile().unwrap();
    assert!(c.terminates_tls());
    let tls_of = |client: &str, sni: &'static str| {
        let d = c.evaluate_conn(client.parse().unwrap(), &Sni(sni));
        assert!(d.is_allowed(), "{client} {sni}: {d}");
        d.terminate_tls().cloned()
    };
    let versions = |config: Arc<ServerConfig>| {
        let offered = |v| handshake(config.clone(), client(&m.ca_pem, &[v], None)).ok();
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter_map(offered)
            .map(|v| {
                if v == ProtocolVersion::TLSv1_2 {
                    "1.2"
                } else {
                    "1.3"
                }
            })
            .collect::<Vec<_>>()
    };
    // Not reached: the bytes pass through as they are.
    assert!(tls_of("192.0.2.1:40000", "old.acme.example").is_none());
    assert_eq!(
        versions(tls_of("192.0.2.1:40000", "new.acme.example").unwrap()),
        ["1.3"]
    );
    assert_eq!(
        versions(tls_of("10.1.2.3:40000", "old.acme.example").unwrap()),
        ["1.2"]
    );
    // Both reached: the first one.
    assert_eq!(
        versions(tls_of("10.1.2.3:40000", "new.acme.example").unwrap()),
        ["1.3"]
    );
    // A policy without the action terminates nothing.
    let plain = policy(serde_json::json!([forward()]))
        .unwrap()
        .compile()
        .unwrap();
    assert!(!plain.terminates_tls());
    assert!(plain
        .evaluate("10.1.2.3:1".parse().unwrap())
        .terminate_tls()
        .is_none());
}

#[test]
fn client_certificates_are_asked_for_when_cas_are_named() {
    let m = material();
    let with_cas = |strategy: Option<&str>| {
        let mut config = serde_json::json!({
            "server_certificate": m.cert_pem, "server_private_key": m.key_pem,
            "mutual_tls_certificate_authorities": [m.ca_pem],
        });
        if let Some(s) = strategy {
            config["mutual_tls_verification_strategy"] = s.into();
        }
        let c = policy(serde_json::json!([{ "actions": [action(config)] }, forward()]))
            .unwrap()
            .compile()
            .unwrap();
        let d = c.evaluate("192.0.2.1:1".parse().unwrap());
        let config = d.terminate_tls().unwrap().clone();
        let without = handshake(config.clone(), client(&m.ca_pem, BOTH, None)).is_ok();
        let with = handshake(config, client(&m.ca_pem, BOTH, Some(&m.client))).is_ok();
        (with, without)
    };
    // (a client with a certificate from the CA, a client without one): let through?
    assert_eq!(
        with_cas(None),
        (true, false),
        "require-and-verify by default"
    );
    assert_eq!(with_cas(Some("require-and-verify")), (true, false));
    assert_eq!(with_cas(Some("request")), (true, true));
}

#[test]
fn files_are_read_when_the_policy_compiles_and_an_inline_key_is_never_shown() {
    let m = material();
    let dir = std::env::temp_dir().join(format!("sluice-policy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        path.to_string_lossy().into_owned()
    };
    let cert = write("app.crt", &m.cert_pem);
    let key = write("app.key", &m.key_pem);
    let from_files = policy(serde_json::json!([
        { "actions": [action(serde_json::json!({
            "server_certificate": cert, "server_private_key": key,
        }))] },
        forward(),
    ]))
    .unwrap();
    assert!(!from_files
        .terminate_tls_actions()
        .any(|t| t.has_inline_key()));
    assert!(from_files.compile().unwrap().terminates_tls());
    // Shown back, the paths are as written and parse again.
    let shown = serde_json::to_string(&from_files).unwrap();
    assert!(shown.contains(&key), "{shown}");
    assert_eq!(TrafficPolicy::from_yaml(&shown).unwrap(), from_files);
    // A file gone by the time the policy compiles: refused, naming it.
    std::fs::remove_file(dir.join("app.key")).unwrap();
    let err = from_files.compile().unwrap_err().to_string();
    assert!(err.contains("rule 1, action 1 (`terminate-tls`)"), "{err}");
    assert!(
        err.contains("server_private_key") && err.contains("app.key"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let inline = policy(serde_json::json!([
        { "actions": [action(serde_json::json!({
            "server_certificate": m.cert_pem, "server_private_key": m.key_pem,
        }))] },
        forward(),
    ]))
    .unwrap();
    assert!(inline.terminate_tls_actions().all(|t| t.has_inline_key()));
    let shown = serde_json::to_string(&inline).unwrap();
    assert!(!shown.contains("PRIVATE KEY-----"), "{shown}");
    assert!(shown.contains("not shown"), "{shown}");
    assert!(
        shown.contains("BEGIN CERTIFICATE"),
        "the certificate is public: {shown}"
    );
    // What is shown cannot be stored back as if it held the key.
    assert!(TrafficPolicy::from_yaml(&shown).is_err());
}

#[test]
fn bad_configs_are_refused_with_where_and_why() {
    let m = material();
    let refused = |config: serde_json::Value, needles: &[&str]| {
        let err = policy(serde_json::json!([{ "actions": [action(config.clone())] }, forward()]))
            .and_then(|p| p.compile().map(|_| ()).map_err(|e| e.to_string()))
            .unwrap_err();
        for n in needles {
            assert!(err.contains(n), "`{n}` missing for {config}: {err}");
        }
    };
    refused(
        serde_json::json!({ "server_certificate": m.cert_pem }),
        &[
            "needs `server_certificate` and `server_private_key`",
            "line",
        ],
    );
    refused(
        serde_json::json!({ "server_certificate": m.cert_pem, "server_private_key": m.other_key_pem }),
        &["rule 1, action 1", "does not match server_certificate"],
    );
    refused(
        serde_json::json!({ "server_certificate": "app.crt", "server_private_key": m.key_pem }),
        &["server_certificate", "absolute path", "app.crt"],
    );
    refused(
        serde_json::json!({ "server_certificate": m.ca_pem, "server_private_key": "MIGHAgEAMBMGByqGSM49" }),
        &["server_private_key: neither PEM text"],
    );
    let err = policy(serde_json::json!([{ "actions": [action(serde_json::json!({
        "server_certificate": m.cert_pem, "server_private_key": "MIGHAgEAMBMGByqGSM49" }))] }, forward()]))
    .unwrap_err();
    assert!(
        !err.contains("MIGHAgEAMBMGByqGSM49"),
        "a key's text echoed: {err}"
    );
    // A combined PEM (certificate and key) in a certificate field would be stored and
    // shown back with its key.
    refused(
        serde_json::json!({ "server_certificate": format!("{}{}", m.cert_pem, m.key_pem),
            "server_private_key": m.key_pem }),
        &["server_certificate holds a private key"],
    );
    refused(
        serde_json::json!({ "server_certificate": m.cert_pem, "server_private_key": m.key_pem,
            "mutual_tls_certificate_authorities": [format!("{}{}", m.ca_pem, m.key_pem)] }),
        &["mutual_tls_certificate_authorities holds a private key"],
    );
    refused(
        serde_json::json!({ "server_certificate": m.ca_pem.replace("CERTIFICATE", "X509 CRL"), "server_private_key": m.key_pem }),
        &["server_certificate", "no PEM certificate"],
    );
    refused(
        serde_json::json!({ "server_certificate": m.cert_pem, "server_private_key": m.cert_pem }),
        &["server_private_key", "no usable PEM private key"],
    );
    refused(
        serde_json::json!({ "server_certificate": m.cert_pem, "server_private_key": m.key_pem, "min_version": "1.1" }),
        &["min_version", "`1.1`"],
    );
    refused(
        serde_json::json!({ "server_certificate": m.cert_pem, "server_private_key": m.key_pem,
            "min_version": "1.3", "max_version": "1.2" }),
        &["min_version is newer than max_version"],
    );
    refused(
        serde_json::json!({ "server_certificate": m.cert_pem, "server_private_key": m.key_pem,
            "mutual_tls_verification_strategy": "request" }),
        &["without mutual_tls_certificate_authorities"],
    );
    refused(
        serde_json::json!({ "server_certificate": m.cert_pem, "server_private_key": m.key_pem,
            "mutual_tls_certificate_authorities": [m.ca_pem],
            "mutual_tls_verification_strategy": "require-any" }),
        &["require-any", "proves nothing"],
    );
    refused(
        serde_json::json!({ "server_certificate": m.cert_pem, "server_private_key": m.key_pem, "sni": "x" }),
        &["unknown field `sni`"],
    );
    // Written with `config` before `type`, the same checks run.
    let err = TrafficPolicy::from_yaml(
        "on_tcp_connect:\n  - actions:\n      - config: { server_certificate: x.crt, server_private_key: /k }\n        type: terminate-tls\n      - { type: deny }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("absolute path"), "{err}");
    // In an agent endpoint's policy the agent ends TLS itself.
    let json = serde_json::json!({ "on_tcp_connect": [{ "actions": [action(serde_json::json!({
        "server_certificate": m.cert_pem, "server_private_key": m.key_pem,
    }))] }] });
    let err = EndpointPolicy::from_yaml(&json.to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains("agent_tls_termination"), "{err}");
}
