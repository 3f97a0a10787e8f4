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

/// Why certificates could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("the validity must be at least one day, not {0} (a certificate valid for 0 days is expired when written)")]
    Days(i64),
    #[error("the validity of {0} days is too long")]
    TooLong(i64),
    #[error("{0}")]
    Rcgen(#[from] rcgen::Error),
}

/// The longest validity `generate` accepts: 100 years.
pub const MAX_DAYS: i64 = 36_500;

/// Generates a fresh CA and a serving certificate for `names` (DNS names or IP addresses),
/// valid from an hour ago (clock skew) for `days` days; `days` must be at least 1.
pub fn generate(names: &[String], days: i64) -> Result<Bundle, CertsError> {
    if days < 1 {
        return Err(CertsError::Days(days));
    }
    if days > MAX_DAYS {
        return Err(CertsError::TooLong(days));
    }
    let now = time::OffsetDateTime::now_utc();
    generate_between(names, now - time::Duration::hours(1), now + time::Duration::days(days))
}

/// The CA's subject common name: which install it belongs to (the serving certificate's
/// first name) and when it was made, so that two CAs of two installs, or of two starts of
/// `hallmark serve`, are told apart in a trust store or an `openssl x509 -subject` line.
/// At most 64 characters (the X.520 upper bound of a common name).
pub fn ca_common_name(names: &[String], made: time::OffsetDateTime) -> String {
    let when = made
        .format(&time::format_description::well_known::Rfc3339)
        .map(|t| t.chars().take(19).collect::<String>() + "Z")
        .unwrap_or_default();
    let first = names.first().map(String::as_str).unwrap_or("hallmark");
    // "hallmark CA " + name + " " + 20 characters of time.
    let room = 64 - "hallmark CA ".len() - 1 - when.len();
    let name: String = if first.chars().count() > room {
        first.chars().take(room.saturating_sub(1)).collect::<String>() + "~"
    } else {
        first.to_owned()
    };
    format!("hallmark CA {name} {when}")
}

/// Generates a CA and a serving certificate valid from `not_before` to `not_after`
/// (tests make expired and not-yet-valid pairs with it).
pub fn generate_between(
    names: &[String],
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Result<Bundle, CertsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, ca_common_name(names, time::OffsetDateTime::now_utc()));
    ca.distinguished_name.push(DnType::OrganizationName, "hallmark");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name.push(DnType::CommonName, names.first().map(String::as_str).unwrap_or("hallmark"));
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Bundle { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_below_one_are_refused() {
        for days in [0, -1] {
            let e = generate(&["localhost".into()], days).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("at least one day"), "{days}: {e}");
        }
        assert!(generate(&["localhost".into()], MAX_DAYS + 1).is_err());
        assert!(generate(&["localhost".into()], 1).is_ok());
    }

    #[test]
    fn ca_names_say_which_install_and_when() {
        let t =
            time::OffsetDateTime::from_unix_timestamp(1772600767).expect("time") + time::Duration::milliseconds(500);
        assert_eq!(
            ca_common_name(&["hallmark.hallmark-system.svc".into()], t),
            "hallmark CA hallmark.hallmark-system.svc 2026-03-04T05:06:07Z"
        );
        let long = ca_common_name(&["hallmark.hallmark-system.svc.cluster.local".into()], t);
        assert!(long.chars().count() <= 64, "{long}");
        assert!(
            long.starts_with("hallmark CA hallmark.hallmark-system.svc.") && long.ends_with(" 2026-03-04T05:06:07Z")
        );
        // Two generated CAs of two installs differ in their subject.
        let subject = |names: &[String]| {
            let b = generate(names, 1).expect("certs");
            let der = rustls_pki_types::CertificateDer::from_pem_slice(b.ca_pem.as_bytes()).expect("pem");
            let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).expect("x509");
            c.subject().to_string()
        };
        use rustls_pki_types::pem::PemObject as _;
        let a = subject(&["a.example".into()]);
        let b = subject(&["b.example".into()]);
        assert!(a.contains("CN=hallmark CA a.example 2") && b.contains("CN=hallmark CA b.example 2"), "{a} / {b}");
    }
}
