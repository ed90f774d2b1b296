//! TLS for HTTPS and gRPC-over-TLS checks: rustls with ring, the Mozilla roots, and — only when a check
//! asks for `TLSSkipVerify` — a verifier that accepts any certificate (handshake signatures are still
//! checked, as Go's `InsecureSkipVerify` does).

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Which protocol the connection speaks after the handshake (offered with ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alpn {
    Http1,
    H2,
}

/// A client configuration: verifying against the Mozilla roots, or accepting any certificate.
pub(super) fn client_config(skip_verify: bool, alpn: Alpn) -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIGS: [OnceLock<Arc<rustls::ClientConfig>>; 4] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = usize::from(skip_verify) * 2 + usize::from(alpn == Alpn::H2);
    if let Some(config) = CONFIGS.get(slot).and_then(OnceLock::get) {
        return Ok(config.clone());
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let mut config = if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth()
    } else {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = match alpn {
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
        Alpn::H2 => vec![b"h2".to_vec()],
    };
    let config = Arc::new(config);
    if let Some(cell) = CONFIGS.get(slot) {
        let _ = cell.set(config.clone());
    }
    Ok(config)
}

/// Opens TLS over `stream` to `server_name` (an IP address or DNS name).
pub(super) async fn connect(
    stream: tokio::net::TcpStream,
    server_name: &str,
    skip_verify: bool,
    alpn: Alpn,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let config = client_config(skip_verify, alpn)?;
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| format!("tls: invalid server name {server_name:?}"))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| format!("tls: {e}"))
}

/// Go's `InsecureSkipVerify`: any chain, any name; the handshake's signatures must still verify.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
