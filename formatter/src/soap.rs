//! SOAP 1.1: the WSDL of the `normalize` operation (document/literal, wrapped), the request
//! parser and the answers. The parser never expands entities: a DOCTYPE is refused outright and
//! only XML's five predefined entities and character references are understood.

use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::Reader;

use crate::{normalize, Response, MAX_BODY};

pub const NAMESPACE: &str = "urn:messenger:formatter";
const ENVELOPE_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// The service description, advertising `location` as the endpoint.
pub fn wsdl(location: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<definitions name="Formatter" targetNamespace="{NAMESPACE}"
    xmlns="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:tns="{NAMESPACE}"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <documentation>Collapses every run of white space between words into one space and trims the ends.</documentation>
  <types>
    <xsd:schema targetNamespace="{NAMESPACE}" elementFormDefault="qualified">
      <xsd:element name="normalize">
        <xsd:complexType><xsd:sequence><xsd:element name="text" type="xsd:string"/></xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:element name="normalizeResponse">
        <xsd:complexType><xsd:sequence><xsd:element name="result" type="xsd:string"/></xsd:sequence></xsd:complexType>
      </xsd:element>
    </xsd:schema>
  </types>
  <message name="normalizeRequest"><part name="parameters" element="tns:normalize"/></message>
  <message name="normalizeResponse"><part name="parameters" element="tns:normalizeResponse"/></message>
  <portType name="FormatterPortType">
    <operation name="normalize">
      <input message="tns:normalizeRequest"/>
      <output message="tns:normalizeResponse"/>
    </operation>
  </portType>
  <binding name="FormatterBinding" type="tns:FormatterPortType">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="normalize">
      <soap:operation soapAction="{NAMESPACE}#normalize"/>
      <input><soap:body use="literal"/></input>
      <output><soap:body use="literal"/></output>
    </operation>
  </binding>
  <service name="FormatterService">
    <port name="FormatterPort" binding="tns:FormatterBinding">
      <soap:address location="{location}"/>
    </port>
  </service>
</definitions>
"#
    )
}

/// Answers a POSTed envelope: a `normalizeResponse`, or a Fault.
pub fn call(body: &[u8]) -> Response {
    if body.len() > MAX_BODY {
        return fault(413, "Client", &format!("request over {MAX_BODY} bytes"));
    }
    let Ok(xml) = std::str::from_utf8(body) else {
        return fault(400, "Client", "request is not UTF-8");
    };
    match normalize_argument(xml) {
        Ok(text) => Response {
            status: 200,
            content_type: "text/xml; charset=utf-8",
            body: envelope(&format!(
                r#"<tns:normalizeResponse xmlns:tns="{NAMESPACE}"><tns:result>{}</tns:result></tns:normalizeResponse>"#,
                escape(normalize(&text).as_str())
            ))
            .into_bytes(),
            allow: None,
        },
        Err(why) => fault(500, "Client", &why),
    }
}

/// The `text` argument of the envelope's `normalize` element.
fn normalize_argument(xml: &str) -> Result<String, String> {
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut text: Option<String> = None;
    let mut saw_operation = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("malformed XML at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::DocType(_) => return Err("DOCTYPE is not allowed".into()),
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                saw_operation |= name == "normalize";
                path.push(name);
                if in_argument(&path) {
                    text.get_or_insert_with(String::new);
                }
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                saw_operation |= name == "normalize";
                path.push(name);
                if in_argument(&path) {
                    text.get_or_insert_with(String::new);
                }
                path.pop();
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) if in_argument(&path) => {
                let chunk = t.decode().map_err(|e| format!("bad text: {e}"))?;
                text.get_or_insert_with(String::new).push_str(&chunk);
            }
            Event::GeneralRef(r) if in_argument(&path) => {
                let name = r.decode().map_err(|e| format!("bad reference: {e}"))?;
                let resolved =
                    resolve_reference(&name).ok_or_else(|| format!("unknown entity &{name};"))?;
                text.get_or_insert_with(String::new).push(resolved);
            }
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| format!("bad reference: {e}"))?;
                resolve_reference(&name).ok_or_else(|| format!("unknown entity &{name};"))?;
            }
            Event::CData(c) if in_argument(&path) => {
                let chunk = std::str::from_utf8(&c).map_err(|e| format!("bad CDATA: {e}"))?;
                text.get_or_insert_with(String::new).push_str(chunk);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !path.is_empty() {
        return Err("malformed XML: unclosed elements".into());
    }
    match (saw_operation, text) {
        (true, Some(text)) => Ok(text),
        (true, None) => Err("normalize needs a text argument".into()),
        (false, _) => Err("unknown operation: expected normalize in the SOAP body".into()),
    }
}

fn in_argument(path: &[String]) -> bool {
    matches!(path, [.., op, arg] if op == "normalize" && arg == "text")
}

/// XML's predefined entities and character references; nothing else is ever expanded.
fn resolve_reference(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{ENVELOPE_NS}"><soap:Body>{body}</soap:Body></soap:Envelope>"#
    )
}

/// A SOAP 1.1 Fault. SOAP over HTTP answers faults with 500; we keep 413/400 where the HTTP
/// layer itself is the problem, which zeep reports the same way.
pub fn fault(status: u16, code: &str, message: &str) -> Response {
    Response {
        status,
        content_type: "text/xml; charset=utf-8",
        body: envelope(&format!(
            "<soap:Fault><faultcode>soap:{code}</faultcode><faultstring>{}</faultstring></soap:Fault>",
            escape(message)
        ))
        .into_bytes(),
        allow: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(inner: &str) -> String {
        format!(
            r#"<?xml version="1.0"?><s:Envelope xmlns:s="{ENVELOPE_NS}"><s:Body><n:normalize xmlns:n="{NAMESPACE}">{inner}</n:normalize></s:Body></s:Envelope>"#
        )
    }

    #[test]
    fn reads_the_argument_with_entities_and_cdata() {
        assert_eq!(
            normalize_argument(&request("<n:text> a &amp;  b&#32;&#x20;c </n:text>")).unwrap(),
            " a &  b  c "
        );
        assert_eq!(
            normalize_argument(&request("<n:text><![CDATA[<x>  y]]></n:text>")).unwrap(),
            "<x>  y"
        );
        assert_eq!(normalize_argument(&request("<n:text/>")).unwrap(), "");
    }

    #[test]
    fn refuses_doctype_and_unknown_entities() {
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>"#;
        assert!(normalize_argument(xxe).unwrap_err().contains("DOCTYPE"));
        assert!(normalize_argument(&request("<n:text>&x;</n:text>"))
            .unwrap_err()
            .contains("unknown entity"));
        assert!(normalize_argument("<a><b></a>").is_err());
        assert!(normalize_argument(&request(""))
            .unwrap_err()
            .contains("text argument"));
    }
}
