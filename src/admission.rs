//! AdmissionReview in, AdmissionReview out.
//!
//! The review types are our own plain serde structs rather than kube's
//! `AdmissionReview<DynamicObject>`: the request is decoded exactly once into borrowed-
//! free `serde_json::Value`s that the diff and the stamp read directly, `v1beta1` is
//! answered in its own version, and the response's `patch` is the base64 string that
//! kube-apiserver expects (kube's `AdmissionResponse` serialises it as an array of bytes).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub const V1: &str = "admission.k8s.io/v1";
pub const V1BETA1: &str = "admission.k8s.io/v1beta1";

/// Why a body is not an AdmissionReview; answered with HTTP 400 and this one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    #[error("request body is not a valid AdmissionReview: {0}")]
    Json(String),
    #[error("unsupported AdmissionReview apiVersion {0:?}: expected admission.k8s.io/v1 or admission.k8s.io/v1beta1")]
    ApiVersion(String),
    #[error("unexpected kind {0:?}: expected AdmissionReview")]
    Kind(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has an empty uid")]
    MissingUid,
    #[error("AdmissionReview request.{0} must be a JSON object or null")]
    NotAnObject(&'static str),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    request: Option<AdmissionRequest>,
}

#[derive(Deserialize)]
struct OuterEnvelope {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

fn check_envelope(api_version: &str, kind: &str) -> Result<&'static str, ReviewError> {
    let version = match api_version {
        V1 => V1,
        V1BETA1 => V1BETA1,
        other => return Err(ReviewError::ApiVersion(shown(other, |v| v.starts_with("admission.k8s.io/")))),
    };
    if kind != "AdmissionReview" {
        return Err(ReviewError::Kind(shown(kind, |v| v.ends_with("Review"))));
    }
    Ok(version)
}

/// A request value repeated in an error message: only when it looks like what was
/// expected (a body is not trusted to hold no secrets: a malformed one may carry a
/// Secret's data anywhere), else a placeholder.
fn shown(value: &str, plausible: impl Fn(&str) -> bool) -> String {
    let tokenish = value.len() <= 64 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"./-".contains(&b));
    if value.is_empty() || (tokenish && plausible(value)) { value.to_owned() } else { "(not shown)".to_owned() }
}

/// serde's message without the request's value: `invalid type: string "…"` and
/// `unknown variant `…`` quote the input (once, before the last `, expected`, which
/// starts serde's own text).
fn redacted(message: &str) -> String {
    if message.starts_with("missing field") || message.starts_with("duplicate field") {
        return message.to_owned();
    }
    let (got, rest) = message.split_at(message.rfind(", expected").unwrap_or(message.len()));
    let Some(open) = got.find(['"', '`']) else {
        return message.to_owned();
    };
    let quote = &got[open..=open];
    let close = got.rfind(quote).filter(|&c| c > open).unwrap_or(got.len());
    format!("{}{quote}…{quote}{}{rest}", &got[..open], got.get(close + 1..).unwrap_or(""))
}

/// A decoded review: the request and the version to answer in.
#[derive(Debug, Clone)]
pub struct Review {
    pub api_version: &'static str,
    pub request: AdmissionRequest,
}

impl Review {
    /// Decodes a body exactly as kube-apiserver sends it.
    pub fn decode(body: &[u8]) -> Result<Review, ReviewError> {
        // An AdmissionReview is a JSON object; say so rather than what serde met first.
        if let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace())
            && *first != b'{'
        {
            return Err(ReviewError::Json(
                "expected a JSON object ({\"apiVersion\": ..., \"kind\": \"AdmissionReview\", ...})".into(),
            ));
        }
        let env: Envelope = match serde_json::from_slice(body) {
            Ok(env) => env,
            Err(e) => {
                // Say what is wrong with the envelope first, if anything: a wrong kind or
                // version explains a request that does not decode.
                if let Ok(outer) = serde_json::from_slice::<OuterEnvelope>(body) {
                    check_envelope(&outer.api_version, &outer.kind)?;
                }
                return Err(ReviewError::Json(one_line(&redacted(&e.to_string()))));
            }
        };
        let api_version = check_envelope(&env.api_version, &env.kind)?;
        let request = env.request.ok_or(ReviewError::MissingRequest)?;
        if request.uid.is_empty() {
            return Err(ReviewError::MissingUid);
        }
        for (name, v) in [("object", &request.object), ("oldObject", &request.old_object)] {
            if v.as_ref().is_some_and(|v| !v.is_object()) {
                return Err(ReviewError::NotAnObject(name));
            }
        }
        Ok(Review { api_version, request })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    /// `request.operation` as kube-apiserver writes it (`CREATE`, `UPDATE`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub groups: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The part of `options` (Create/Update/DeleteOptions) that hallmark reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RequestOptions {
    #[serde(rename = "fieldManager", default)]
    pub field_manager: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    #[serde(default)]
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: UserInfo,
    /// The object after the write. Its `metadata.managedFields` is kept as JSON text
    /// (see [`crate::ownership::managed`]).
    #[serde(default, deserialize_with = "lazy::object")]
    pub object: Option<Value>,
    #[serde(default, deserialize_with = "lazy::object")]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default, deserialize_with = "lenient_options")]
    pub options: RequestOptions,
}

impl AdmissionRequest {
    /// The subresource (`status`, `scale`, …), if this write is to one.
    pub fn subresource(&self) -> Option<&str> {
        self.sub_resource.as_deref().filter(|s| !s.is_empty())
    }

    pub fn field_manager(&self) -> Option<&str> {
        self.options.field_manager.as_deref().filter(|s| !s.is_empty())
    }

    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|s| !s.is_empty())
    }
}

/// Decodes an object into a `Value`, except `metadata.managedFields`, which is kept as its
/// JSON text in a `Value::String`: it is a third of a typical review and most of the cost
/// of building the tree, and hallmark reads only a few entries of it, rarely.
mod lazy {
    use serde::Deserializer;
    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::value::RawValue;
    use serde_json::{Map, Value};
    use std::fmt;

    pub fn object<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        d.deserialize_option(Optional)
    }

    struct Optional;

    impl<'de> Visitor<'de> for Optional {
        type Value = Option<Value>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a Kubernetes object or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            Level::Object.deserialize(d).map(Some)
        }
    }

    /// Where in the object the decoder is: only `metadata` of the object itself is special.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Level {
        Object,
        Metadata,
    }

    impl<'de> DeserializeSeed<'de> for Level {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Level {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = match (self, key.as_str()) {
                    (Level::Object, "metadata") => map.next_value_seed(Level::Metadata)?,
                    (Level::Metadata, "managedFields") => {
                        Value::String(map.next_value::<Box<RawValue>>()?.get().to_owned())
                    }
                    _ => map.next_value::<Value>()?,
                };
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
            serde::Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E: de::Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
    }
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `options` is informational: a shape we do not expect must not make the review
/// unreadable, so anything but an object with a string `fieldManager` reads as empty.
fn lenient_options<'de, D>(d: D) -> Result<RequestOptions, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let v = Option::<Value>::deserialize(d)?;
    Ok(RequestOptions {
        field_manager: v.as_ref().and_then(|v| v.get("fieldManager")).and_then(Value::as_str).map(str::to_owned),
    })
}

/// `response.status` of a denied review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub code: u16,
    pub message: String,
    pub reason: &'static str,
    pub status: &'static str,
}

/// What hallmark answers for one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    pub allowed: bool,
    /// The JSONPatch (a JSON array) to apply to `request.object`, if any.
    pub patch: Option<Vec<u8>>,
    pub warnings: Vec<String>,
    pub denial: Option<Status>,
    pub audit_annotations: BTreeMap<String, String>,
}

impl Answer {
    pub fn allow() -> Answer {
        Answer { allowed: true, ..Answer::default() }
    }

    #[must_use]
    pub fn deny(message: String) -> Answer {
        Answer {
            allowed: false,
            denial: Some(Status { code: 403, message, reason: "Forbidden", status: "Failure" }),
            ..Answer::default()
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a Status>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

/// Encodes the AdmissionReview response in the version the request came in.
pub fn encode_response(api_version: &str, uid: &str, answer: &Answer) -> Vec<u8> {
    let out = ReviewOut {
        api_version,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid,
            allowed: answer.allowed,
            patch_type: answer.patch.as_ref().map(|_| "JSONPatch"),
            patch: answer.patch.as_ref().map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
            status: answer.denial.as_ref(),
            warnings: &answer.warnings,
            audit_annotations: &answer.audit_annotations,
        },
    };
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(&out).unwrap_or_default()
}

/// Makes an error text fit on one line of a response or a log.
/// A Kubernetes client error as one line in kubectl's words: for an API error the
/// Status' reason and message (`Error from server (Forbidden): ...`), never the Rust
/// debug form of the Status that the client library's own text carries.
pub fn kube_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => {
            if s.reason.is_empty() || s.reason == "Failed to parse error data" {
                one_line(&s.message)
            } else {
                one_line(&format!("Error from server ({}): {}", s.reason, s.message))
            }
        }
        kube::Error::Api(s) => format!("the server answered {}", s.code),
        other => one_line(&other.to_string()),
    }
}

pub fn one_line(text: &str) -> String {
    truncate(&text.replace(['\n', '\r'], " "), 300)
}

/// Shortens `text` to at most `max` characters, marking the cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_an_object_is_told_so() {
        for body in [&b"[1,2]"[..], b"  42", b"\"x\"", b"null"] {
            let err = Review::decode(body).map(|_| ()).unwrap_err().to_string();
            assert!(err.starts_with("request body is not a valid AdmissionReview: expected a JSON object"), "{err}");
        }
        // An object still gets serde's precise message.
        let err = Review::decode(b"{\"apiVersion\": 1}").map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("invalid type: integer"), "{err}");
    }
}
