//! TLS material: PEM loading, the listener's server config, the upstream client's trust roots.
//! Every config names the ring provider explicitly, so no process-wide default is needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not the PEM that was expected.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the material.
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads every certificate of a PEM file; at least one must be there.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "holds no PEM certificate".into(),
        });
    }
    Ok(certs)
}

/// Loads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: format!("holds no usable PEM private key ({e})"),
    })
}

/// A server config for a certificate and key, offering h2 and http/1.1 by ALPN.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The listener's certificate and key, replaceable while it serves: a reload loads a new
/// pair (refused whole if it is bad, the running one staying), and new handshakes get it.
#[derive(Debug)]
pub struct CertStore {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl CertStore {
    /// A store holding the pair in `cert` and `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertStore>, TlsError> {
        Ok(Arc::new(CertStore {
            current: std::sync::RwLock::new(CertStore::pair(cert, key)?),
        }))
    }

    /// Reads and checks a pair (the key must be the certificate's).
    pub fn pair(cert: &Path, key: &Path) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
        let certs = load_certs(cert)?;
        let key = load_key(key)?;
        Ok(Arc::new(rustls::sign::CertifiedKey::from_der(
            certs,
            key,
            &ring::default_provider(),
        )?))
    }

    /// Serves `pair` from the next handshake on; true when it differs from the one before.
    pub fn replace(&self, pair: Arc<rustls::sign::CertifiedKey>) -> bool {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = current.cert != pair.cert;
        *current = pair;
        changed
    }

    /// A server config (h2 and HTTP/1.1 by ALPN) serving this store's certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl rustls::server::ResolvesServerCert for CertStore {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// The certificates a TLS client of this process trusts, as PEM: the platform's roots plus
/// every certificate in `ca_file` (for clients that take their trust as PEM, like Redis's).
pub fn roots_pem(ca_file: Option<&Path>) -> Result<Vec<u8>, TlsError> {
    use base64::Engine as _;
    let mut certs: Vec<CertificateDer<'static>> = rustls_native_certs::load_native_certs().certs;
    if let Some(path) = ca_file {
        certs.extend(load_certs(path)?);
    }
    let mut pem = Vec::new();
    for cert in certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    Ok(pem)
}

/// A client config trusting the platform's roots (or, when the platform has none, the
/// bundled webpki roots) plus every certificate in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = ca_file {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|e| TlsError::Pem {
                path: path.to_path_buf(),
                what: format!("not a usable CA certificate: {e}"),
            })?;
        }
    }
    Ok(
        ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A throwaway certificate authority and a certificate it signed (PEM), for the demo and tests.
#[derive(Debug)]
pub struct Throwaway {
    /// The CA's certificate: what a client trusts.
    pub ca: String,
    /// The server's certificate.
    pub cert: String,
    /// The server's private key.
    pub key: String,
}

/// Makes a new CA and a certificate for `names` (DNS names or IP addresses) signed by it.
pub fn throwaway(names: &[&str]) -> Result<Throwaway, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "bcproxy throwaway CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf = CertificateParams::new(names)?.signed_by(&leaf_key, &ca)?;
    Ok(Throwaway {
        ca: ca.pem(),
        cert: leaf.pem(),
        key: leaf_key.serialize_pem(),
    })
}

/// The store's TLS failure in plain words, with what to do about it; rustls' own words for
/// anything else.
pub fn explain(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let fix = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => {
                "the store's certificate has expired (or this machine's clock is wrong)"
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the store's certificate is not valid yet (is this machine's clock right?)"
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the store's certificate is not for the host in upstream.url: use the host name the certificate names"
            }
            C::UnknownIssuer => {
                "the store's certificate is signed by a CA this proxy does not trust: put that CA's certificate (PEM) in upstream.ca_file (the CA that signed it, not the store's own certificate)"
            }
            C::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                "the store presents a CA certificate (CA:TRUE) as its own, as a self-signed certificate made with `openssl req -x509` does: sign the store's certificate with a CA and put that CA in upstream.ca_file, or make the self-signed certificate with `-addext basicConstraints=critical,CA:FALSE`"
            }
            C::Other(other) if format!("{other:?}").contains("EndEntityUsedAsCa") => {
                "upstream.ca_file holds a server's own certificate, not a CA: put the CA that signed the store's certificate there"
            }
            _ => return format!("the store's certificate was refused: {e}"),
        },
        _ => return e.to_string(),
    };
    format!("{fix} ({e})")
}
