//! A web config's `tls_server_config` as a rustls server configuration: the certificate and key,
//! the versions, suites and curves, and the client-certificate policy with its CA and allowed
//! SANs. Every error names the key it comes from.
use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

use super::web_config::{ClientAuth, Curve, TlsSettings, TlsVersion};

pub fn server_config(tls: &TlsSettings, http2: bool) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(provider(tls)?);
    let versions: Vec<&'static SupportedProtocolVersion> = [
        (TlsVersion::TLS12, &rustls::version::TLS12),
        (TlsVersion::TLS13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (tls.min_version.max(TlsVersion::TLS12)..=tls.max_version).contains(v))
    .map(|(_, v)| v)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("min_version/max_version/cipher_suites: {e}"))?
        .with_client_cert_verifier(client_verifier(tls, &provider)?);
    let certs = CertificateDer::pem_slice_iter(&tls.cert.read("cert_file")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert_file: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("cert_file: no certificate in it".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&tls.key.read("key_file")?)
        .map_err(|e| format!("key_file: no PEM private key in it ({e})"))?;
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert_file/key_file: {e} (is the key the certificate's?)"))?;
    config.ignore_client_order = tls.prefer_server_cipher_suites;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// ring's provider narrowed to the configured TLS 1.2 suites and curves. As in Go, the suites
/// list does not touch TLS 1.3.
fn provider(tls: &TlsSettings) -> Result<CryptoProvider, String> {
    let mut provider = ring::default_provider();
    if !tls.cipher_suites.is_empty() {
        let all = provider.cipher_suites.clone();
        let mut chosen: Vec<_> = all
            .iter()
            .filter(|s| s.tls13().is_some())
            .copied()
            .collect();
        for name in &tls.cipher_suites {
            let suite = all
                .iter()
                .find(|s| s.tls13().is_none() && format!("{:?}", s.suite()) == *name)
                .ok_or_else(|| {
                    let offered: Vec<String> = all
                        .iter()
                        .filter(|s| s.tls13().is_none())
                        .map(|s| format!("{:?}", s.suite()))
                        .collect();
                    format!("cipher_suites: {name:?} is not offered (TLS 1.2 suites: {offered:?})")
                })?;
            chosen.push(*suite);
        }
        provider.cipher_suites = chosen;
    }
    if !tls.curves.is_empty() {
        let all = provider.kx_groups.clone();
        provider.kx_groups = tls
            .curves
            .iter()
            .map(|curve| {
                let group = match curve {
                    Curve::X25519 => rustls::NamedGroup::X25519,
                    Curve::CurveP256 => rustls::NamedGroup::secp256r1,
                    Curve::CurveP384 => rustls::NamedGroup::secp384r1,
                    Curve::CurveP521 => rustls::NamedGroup::secp521r1,
                };
                all.iter()
                    .find(|g| g.name() == group)
                    .copied()
                    .ok_or_else(|| format!("curve_preferences: {curve:?} is not offered"))
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(provider)
}

fn client_verifier(
    tls: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let algorithms = provider.signature_verification_algorithms;
    let verifier = match tls.client_auth {
        ClientAuth::NoClientCert => return Ok(WebPkiClientVerifier::no_client_auth()),
        ClientAuth::RequestClientCert => Arc::new(AnyClientCert {
            mandatory: false,
            algorithms,
        }),
        ClientAuth::RequireAnyClientCert => Arc::new(AnyClientCert {
            mandatory: true,
            algorithms,
        }),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let pem = tls
                .client_ca
                .as_ref()
                .ok_or("client_ca_file: needed to verify client certificates")?
                .read("client_ca_file")?;
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client_ca_file: not PEM certificates: {e}"))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err("client_ca_file: no usable CA certificate in it".into());
            }
            let mut builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if tls.client_auth == ClientAuth::VerifyClientCertIfGiven {
                builder = builder.allow_unauthenticated();
            }
            builder
                .build()
                .map_err(|e| format!("client_ca_file: {e}"))?
        }
    };
    let Some(sans) = &tls.client_allowed_sans else {
        return Ok(verifier);
    };
    let allowed = sans
        .iter()
        .map(|s| {
            ServerName::try_from(s.as_str())
                .map(|n| n.to_owned())
                .map_err(|e| format!("client_allowed_sans: {s:?}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Arc::new(AllowedSans {
        inner: verifier,
        allowed,
    }))
}

/// RequestClientCert and RequireAnyClientCert: any certificate is taken without a CA to check
/// it against (as Go does), but the handshake signature still proves the client holds its key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A verified client certificate must also name one of `client_allowed_sans`.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<ServerName<'static>>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if self
            .allowed
            .iter()
            .any(|name| cert.verify_is_valid_for_subject_name(name).is_ok())
        {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
