//! TLS to the cluster's NATS server: a private authority's certificates,
//! read once from a file no other user can change, and which failures to
//! connect are refusals (humd stops, saying why) rather than a server not
//! there yet (the node serves alone and keeps trying).

use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest CA file read: a bundle of a few certificates.
const MAX_CA_BYTES: u64 = 1024 * 1024;

/// Certificates of a private authority, as read from their file.
#[derive(Clone)]
pub struct Authority {
    pub path: PathBuf,
    certs: Vec<async_nats::rustls::pki_types::CertificateDer<'static>>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} certificates)",
            self.path.display(),
            self.certs.len()
        )
    }
}

impl Authority {
    /// A TLS client that trusts these certificates and no others.
    pub fn client_config(&self) -> Result<async_nats::rustls::ClientConfig, String> {
        let mut roots = async_nats::rustls::RootCertStore::empty();
        for cert in &self.certs {
            roots
                .add(cert.clone())
                .map_err(|e| format!("the cluster's CA file {}: {e}", self.path.display()))?;
        }
        Ok(async_nats::rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

/// A CA file the connection may trust: a regular file (no symlink
/// followed) of PEM certificates, owned by this user or root and
/// writable by no one else (who could change it could put their own
/// authority in, and read the cluster's traffic). Read once, here.
pub fn check_ca(path: &Path) -> Result<Authority, String> {
    use async_nats::rustls::pki_types::{pem::PemObject, CertificateDer};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("cannot open the cluster's CA file {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the cluster's CA file {shown}: {e}"))?;
    let uid = rustix::process::getuid().as_raw();
    if !meta.is_file() {
        return Err(format!(
            "the cluster's CA file {shown} is not a regular file"
        ));
    }
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(format!(
            "the cluster's CA file {shown} belongs to uid {}, not to this user ({uid}) or root",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "the cluster's CA file {shown} is writable by others (mode {:o}); chmod go-w it",
            meta.mode() & 0o777
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CA_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the cluster's CA file {shown}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the cluster's CA file {shown} does not read as PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "the cluster's CA file {shown} holds no PEM certificate"
        ));
    }
    let authority = Authority {
        path: path.to_owned(),
        certs,
    };
    // Each certificate must be one a TLS client can trust.
    authority.client_config()?;
    Ok(authority)
}

/// Why NATS refused a connection for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its credentials.
    Credentials,
    /// TLS: a server without it, or a certificate these settings do not
    /// trust (a handshake error reaches us as an I/O error holding
    /// rustls's).
    Tls,
}

/// Whether, and why, NATS refused the connection for good.
pub fn refusal(e: &async_nats::ConnectError) -> Option<Refusal> {
    use async_nats::ConnectErrorKind as K;
    match e.kind() {
        K::AuthorizationViolation | K::Authentication => return Some(Refusal::Credentials),
        K::Tls => return Some(Refusal::Tls),
        _ => {}
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let tls = c.downcast_ref::<async_nats::rustls::Error>().or_else(|| {
            c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<async_nats::rustls::Error>())
        });
        if let Some(tls) = tls {
            return (!depends_on_the_clock(tls)).then_some(Refusal::Tls);
        }
        cause = c.source();
    }
    None
}

/// A certificate refused only for the time: expired, or not valid yet
/// (a machine that booted before its clock was set). The clock or the
/// certificate may be right a moment later: tried again, not a refusal.
fn depends_on_the_clock(e: &async_nats::rustls::Error) -> bool {
    use async_nats::rustls::{CertificateError as C, Error as E};
    matches!(
        e,
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. }
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::rustls::{CertificateError as C, Error as E};

    #[test]
    fn a_certificate_refused_for_the_time_is_tried_again_the_rest_refuse() {
        assert!(depends_on_the_clock(&E::InvalidCertificate(C::Expired)));
        assert!(depends_on_the_clock(&E::InvalidCertificate(C::NotValidYet)));
        assert!(!depends_on_the_clock(&E::InvalidCertificate(
            C::UnknownIssuer
        )));
        assert!(!depends_on_the_clock(&E::InvalidCertificate(
            C::NotValidForName
        )));
        assert!(!depends_on_the_clock(&E::General("x".into())));
    }

    #[test]
    fn a_ca_file_must_hold_certificates_that_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            p
        };
        let none = write("none.pem", "not a certificate\n");
        let err = check_ca(&none).unwrap_err();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let broken = write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let err = check_ca(&broken).unwrap_err();
        assert!(err.contains("broken.pem"), "{err}");
        let garbage = write(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        assert!(check_ca(&garbage).is_err(), "bytes that are no certificate");
    }
}
