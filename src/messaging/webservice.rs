//! The web service of the statement's part 2 (SPEC 7): collapse every run of white space in
//! a text to one space and trim the ends. Spoken as SOAP 1.1 (document/literal, namespace
//! `http://tests.python-zeep.org/`, the three operation names the course's clients use:
//! `format(msg)`, `convert_text(text)`, `modify_text(mensaje)`, WSDL at `/?wsdl`) and as
//! plain JSON (`POST /normalize`), with `GET /health`. Also the client side:
//! [`normalize_remote`], which the console clients call before every SEND.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;
use serde::{Deserialize, Serialize};

/// The namespace the course's zeep clients use.
pub const NAMESPACE: &str = "http://tests.python-zeep.org/";
const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The three operation names in use, each with its parameter's name.
const OPERATIONS: [(&str, &str); 3] = [("format", "msg"), ("convert_text", "text"), ("modify_text", "mensaje")];

/// Collapses every run of white space to one space and trims both ends:
/// `"  hola \t  mundo "` becomes `"hola mundo"`.
pub fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The service's routes; `MAX_BODY` bounds every request body.
pub fn router() -> Router {
    Router::new()
        .route("/", get(wsdl).post(soap))
        .route("/normalize", post(normalize_json))
        .route("/health", get(health))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Serves on `addr` until `shutdown` completes; `ready` gets the bound address.
pub async fn serve(
    addr: SocketAddr,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    ready(listener.local_addr()?);
    axum::serve(listener, router()).with_graceful_shutdown(shutdown).await
}

#[derive(Deserialize)]
struct WsdlQuery {
    wsdl: Option<String>,
}

async fn wsdl(Query(q): Query<WsdlQuery>, headers: HeaderMap) -> Response {
    if q.wsdl.is_none() {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "cartero web service: SOAP at / (WSDL at /?wsdl), JSON at POST /normalize, GET /health\n",
        )
            .into_response();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml; charset=utf-8")], wsdl_document(host)).into_response()
}

fn wsdl_document(host: &str) -> String {
    let mut elements = String::new();
    let mut messages = String::new();
    let mut port_ops = String::new();
    let mut binding_ops = String::new();
    for (op, param) in OPERATIONS {
        elements.push_str(&format!(
            r#"<xsd:element name="{op}"><xsd:complexType><xsd:sequence><xsd:element name="{param}" type="xsd:string"/></xsd:sequence></xsd:complexType></xsd:element>
<xsd:element name="{op}Response"><xsd:complexType><xsd:sequence><xsd:element name="{op}Result" type="xsd:string"/></xsd:sequence></xsd:complexType></xsd:element>
"#
        ));
        messages.push_str(&format!(
            r#"<message name="{op}Input"><part name="parameters" element="tns:{op}"/></message>
<message name="{op}Output"><part name="parameters" element="tns:{op}Response"/></message>
"#
        ));
        port_ops.push_str(&format!(
            r#"<operation name="{op}"><input message="tns:{op}Input"/><output message="tns:{op}Output"/></operation>"#
        ));
        binding_ops.push_str(&format!(
            r#"<operation name="{op}"><soap:operation soapAction="{op}" style="document"/><input><soap:body use="literal"/></input><output><soap:body use="literal"/></output></operation>"#
        ));
    }
    let host = quick_xml::escape::escape(host);
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:tns="{NAMESPACE}" targetNamespace="{NAMESPACE}" name="cartero">
<types><xsd:schema targetNamespace="{NAMESPACE}" elementFormDefault="qualified">
{elements}</xsd:schema></types>
{messages}<portType name="NormalizerPortType">{port_ops}</portType>
<binding name="NormalizerBinding" type="tns:NormalizerPortType"><soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>{binding_ops}</binding>
<service name="Normalizer"><port name="NormalizerPort" binding="tns:NormalizerBinding"><soap:address location="http://{host}/"/></port></service>
</definitions>
"#
    )
}

fn soap_envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:tns="{NAMESPACE}"><soap:Body>{body}</soap:Body></soap:Envelope>"#
    )
}

/// A SOAP 1.1 fault (HTTP 500, as SOAP 1.1 over HTTP answers every fault).
fn fault(code: &str, why: &str) -> Response {
    let body = format!(
        "<soap:Fault><faultcode>soap:{code}</faultcode><faultstring>{}</faultstring></soap:Fault>",
        quick_xml::escape::escape(why)
    );
    (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/xml; charset=utf-8")], soap_envelope(&body))
        .into_response()
}

fn content_type(headers: &HeaderMap) -> String {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase()
}

/// Finds the operation inside the SOAP body and the text of its parameter.
fn parse_soap(xml: &str) -> Result<(&'static str, String), String> {
    let mut reader = NsReader::from_str(xml);
    let mut path: Vec<(Option<String>, String)> = Vec::new();
    let mut operation: Option<(&'static str, &'static str)> = None;
    let mut in_param = false;
    let mut text = String::new();
    let mut found_param = false;
    loop {
        match reader.read_resolved_event() {
            Ok((ns, Event::Start(e))) => {
                let ns = match ns {
                    ResolveResult::Bound(Namespace(n)) => Some(String::from_utf8_lossy(n).into_owned()),
                    _ => None,
                };
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let depth = path.len();
                let parent_is_body =
                    path.last().is_some_and(|(pns, l)| l == "Body" && pns.as_deref() == Some(SOAP_ENV));
                if depth == 0 && (local != "Envelope" || ns.as_deref() != Some(SOAP_ENV)) {
                    return Err("not a SOAP 1.1 envelope".into());
                }
                if parent_is_body && operation.is_none() {
                    if ns.as_deref() != Some(NAMESPACE) {
                        return Err(format!("operation {local} is not in namespace {NAMESPACE}"));
                    }
                    operation = Some(OPERATIONS.iter().find(|(op, _)| *op == local).copied().ok_or_else(|| {
                        format!("unknown operation {local}; this service offers format, convert_text and modify_text")
                    })?);
                } else if let Some((op, param)) = operation {
                    if path.last().is_some_and(|(_, l)| l == op) && local == param {
                        in_param = true;
                        found_param = true;
                    }
                }
                path.push((ns, local));
            }
            Ok((ns, Event::Empty(e))) => {
                let parent_is_body =
                    path.last().is_some_and(|(pns, l)| l == "Body" && pns.as_deref() == Some(SOAP_ENV));
                if parent_is_body && operation.is_none() {
                    // An operation with no parameter at all: name it, then say what is missing.
                    let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                    if !matches!(ns, ResolveResult::Bound(Namespace(n)) if n == NAMESPACE.as_bytes()) {
                        return Err(format!("operation {local} is not in namespace {NAMESPACE}"));
                    }
                    operation = Some(OPERATIONS.iter().find(|(op, _)| *op == local).copied().ok_or_else(|| {
                        format!("unknown operation {local}; this service offers format, convert_text and modify_text")
                    })?);
                } else if let Some((op, param)) = operation {
                    if path.last().is_some_and(|(_, l)| l == op) && e.local_name().as_ref() == param.as_bytes() {
                        found_param = true;
                    }
                }
            }
            Ok((_, Event::End(_))) => {
                in_param = false;
                path.pop();
            }
            Ok((_, Event::Text(t))) if in_param => text.push_str(&t.unescape().map_err(|e| format!("bad text: {e}"))?),
            Ok((_, Event::CData(t))) if in_param => text.push_str(&String::from_utf8_lossy(&t)),
            Ok((_, Event::Eof)) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("malformed XML at byte {}: {e}", reader.buffer_position())),
        }
    }
    match operation {
        None => Err("no operation in the SOAP body".into()),
        Some((_, param)) if !found_param => Err(format!("the operation has no <{param}> parameter")),
        Some((op, _)) => Ok((op, text)),
    }
}

async fn soap(headers: HeaderMap, body: Bytes) -> Response {
    let ct = content_type(&headers);
    if !ct.starts_with("text/xml") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            [(header::CONTENT_TYPE, "text/plain")],
            "SOAP 1.1 requests are text/xml\n",
        )
            .into_response();
    }
    let Ok(xml) = std::str::from_utf8(&body) else { return fault("Client", "the request is not UTF-8") };
    match parse_soap(xml) {
        Ok((op, text)) => {
            let normalized = normalize(&text);
            let result = quick_xml::escape::escape(normalized.as_str()).into_owned();
            let body = format!("<tns:{op}Response><tns:{op}Result>{result}</tns:{op}Result></tns:{op}Response>");
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml; charset=utf-8")], soap_envelope(&body)).into_response()
        }
        Err(why) => fault("Client", &why),
    }
}

#[derive(Serialize, Deserialize)]
struct TextBody {
    text: String,
}

async fn normalize_json(headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let error = |status: StatusCode, why: String| (status, Json(serde_json::json!({ "error": why }))).into_response();
    // A body over MAX_BODY (413) or one that cannot be read answers in JSON like the rest.
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    if !content_type(&headers).starts_with("application/json") {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send application/json: {\"text\": ...}".into());
    }
    match serde_json::from_slice::<TextBody>(&body) {
        Ok(TextBody { text }) => Json(TextBody { text: normalize(&text) }).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, format!("expected {{\"text\": string}}: {e}")),
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Why a text could not be normalized by a remote service.
#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    #[error("the normalizer at {url} cannot be reached: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the normalizer at {url} answered badly: {detail}")]
    BadAnswer { url: String, detail: String },
}

/// Sends `text` to the JSON endpoint of the service at `url` (e.g. `http://127.0.0.1:8000`)
/// and returns the normalized text.
pub fn normalize_remote(url: &str, text: &str, timeout: Duration) -> Result<String, NormalizeError> {
    let endpoint = format!("{}/normalize", url.trim_end_matches('/'));
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into();
    let mut response = agent.post(&endpoint).send_json(TextBody { text: text.to_string() }).map_err(|e| {
        // ureq prefixes its I/O errors with "io: "; the operating system's words are enough.
        let detail = match e {
            ureq::Error::Io(io) => io.to_string(),
            other => other.to_string(),
        };
        NormalizeError::Unreachable { url: url.to_string(), detail }
    })?;
    let bad = |detail: String| NormalizeError::BadAnswer { url: url.to_string(), detail };
    if response.status() != 200 {
        return Err(bad(format!("HTTP {}", response.status())));
    }
    let body: TextBody = response.body_mut().read_json().map_err(|e| bad(e.to_string()))?;
    Ok(body.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_collapses_and_trims() {
        assert_eq!(normalize("  hola \t  mundo "), "hola mundo");
        assert_eq!(normalize("a\n\nb\r\nc"), "a b c");
        assert_eq!(normalize("   "), "");
        assert_eq!(normalize("ya bien"), "ya bien");
    }

    #[test]
    fn soap_requests_are_parsed_for_each_operation() {
        for (op, param) in OPERATIONS {
            let xml = format!(
                r#"<?xml version="1.0"?><soap-env:Envelope xmlns:soap-env="{SOAP_ENV}"><soap-env:Body><ns0:{op} xmlns:ns0="{NAMESPACE}"><ns0:{param}>  a &amp;  b </ns0:{param}></ns0:{op}></soap-env:Body></soap-env:Envelope>"#
            );
            assert_eq!(parse_soap(&xml).unwrap(), (op, "  a &  b ".to_string()));
        }
        assert!(parse_soap("<not xml").is_err());
        assert!(parse_soap(&format!(
            r#"<e:Envelope xmlns:e="{SOAP_ENV}"><e:Body><x:other xmlns:x="{NAMESPACE}"/></e:Body></e:Envelope>"#
        ))
        .unwrap_err()
        .contains("unknown operation"));
        assert!(parse_soap(&format!(r#"<e:Envelope xmlns:e="{SOAP_ENV}"><e:Body><x:format xmlns:x="urn:else"><x:msg>a</x:msg></x:format></e:Body></e:Envelope>"#)).unwrap_err().contains("namespace"));
    }
}
