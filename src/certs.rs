//! Certificates: a CA and a serving certificate signed by it (rcgen), for the embedded
//! default of `hallmark serve` and for `hallmark certs`.

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// A CA and one serving certificate, PEM-encoded.
pub struct Bundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Bundle {
    /// The CA certificate as a webhook configuration's `caBundle` wants it.
    pub fn ca_bundle_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes())
    }
}

/// Whether `name` can be a serving certificate's subject alternative name that a TLS
/// client (kube-apiserver) can verify: an IP address, or a DNS name (RFC 1123 labels, as
/// `rustls_pki_types::DnsName` checks), optionally with a leading `*.` wildcard label.
/// The error says why, for `hallmark certs` (exit 2).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let dns = name.strip_prefix("*.").unwrap_or(name);
    match rustls_pki_types::DnsName::try_from(dns) {
        Ok(_) if !dns.is_empty() => Ok(()),
        _ => Err("not a DNS name or an IP address (e.g. hallmark.hallmark-system.svc, 10.0.0.5)".to_owned()),
    }
}

/// Generates a fresh CA and a serving certificate for `names` (DNS names or IP addresses),
/// valid for `days`.
pub fn generate(names: &[String], days: i64) -> Result<Bundle, rcgen::Error> {
    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "hallmark CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(days);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name.push(DnType::CommonName, names.first().map(String::as_str).unwrap_or("hallmark"));
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + time::Duration::days(days);
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Bundle { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}
