//! The formatter binary over real HTTP: REST, SOAP (from Rust and from Python's zeep), bad input.

use std::process::Command;

use e2e::{http, python_with_zeep, Formatter};

#[test]
fn rest_text_and_json() {
    let f = Formatter::start();
    let answer = http(
        f.port,
        "POST",
        "/normalize",
        Some("text/plain"),
        "  hola   mundo\t\n ñ ".as_bytes(),
    );
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, "hola mundo ñ")
    );
    assert!(answer
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let answer = http(
        f.port,
        "POST",
        "/normalize",
        Some("application/json"),
        br#"{"message": " a \u3000 b "}"#,
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.text(), r#"{"message":"a b"}"#);
    assert_eq!(http(f.port, "GET", "/health", None, b"").status, 200);
}

#[test]
fn bad_requests_get_clear_4xx_answers() {
    let f = Formatter::start();
    let bad_utf8 = http(
        f.port,
        "POST",
        "/normalize",
        Some("text/plain"),
        b"\xff\xfe",
    );
    assert_eq!(bad_utf8.status, 400);
    assert!(bad_utf8.text().contains("not UTF-8"));
    let big = vec![b'a'; 64 * 1024 + 1];
    assert_eq!(
        http(f.port, "POST", "/normalize", Some("text/plain"), &big).status,
        413
    );
    assert_eq!(
        http(f.port, "POST", "/normalize", Some("text/plain"), &big[1..]).status,
        200,
        "64 KiB exactly is fine"
    );
    let malformed = http(
        f.port,
        "POST",
        "/normalize",
        Some("application/json"),
        b"{\"message\": ",
    );
    assert_eq!(malformed.status, 400);
    assert!(malformed.text().contains("malformed JSON"));
    assert_eq!(
        http(
            f.port,
            "POST",
            "/normalize",
            Some("application/json"),
            b"{\"msg\": \"x\"}"
        )
        .status,
        400
    );
    assert_eq!(
        http(f.port, "POST", "/normalize", Some("image/png"), b"x").status,
        415
    );
    assert_eq!(http(f.port, "GET", "/nowhere", None, b"").status, 404);
    let wrong_method = http(f.port, "DELETE", "/normalize", None, b"");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("POST"));
}

fn envelope(argument: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><f:normalize xmlns:f="urn:messenger:formatter"><f:text>{argument}</f:text></f:normalize></soap:Body></soap:Envelope>"#
    )
    .into_bytes()
}

#[test]
fn soap_envelopes_and_faults() {
    let f = Formatter::start();
    let ok = http(
        f.port,
        "POST",
        "/",
        Some("text/xml; charset=utf-8"),
        &envelope("  uno &amp;   dos "),
    );
    assert_eq!(ok.status, 200);
    assert!(
        ok.text().contains("<tns:result>uno &amp; dos</tns:result>"),
        "{}",
        ok.text()
    );
    let malformed = http(
        f.port,
        "POST",
        "/",
        Some("text/xml"),
        b"<soap:Envelope><soap:Body>",
    );
    assert_eq!(malformed.status, 500);
    assert!(malformed
        .text()
        .contains("<faultcode>soap:Client</faultcode>"));
    let xxe =
        br#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
    let refused = http(f.port, "POST", "/", Some("text/xml"), xxe);
    assert_eq!(refused.status, 500);
    assert!(refused.text().contains("DOCTYPE is not allowed"));
    assert!(!refused.text().contains("root:"));
    let bomb = br#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><l>&b;</l>"#;
    assert!(http(f.port, "POST", "/", Some("text/xml"), bomb)
        .text()
        .contains("DOCTYPE is not allowed"));
    let wsdl = http(f.port, "GET", "/?wsdl", None, b"");
    assert_eq!(wsdl.status, 200);
    assert!(wsdl
        .text()
        .contains(&format!("location=\"http://127.0.0.1:{}/\"", f.port)));
}

#[test]
fn a_zeep_client_loads_the_wsdl_and_calls_normalize() {
    let f = Formatter::start();
    let script = r#"
import sys, zeep
client = zeep.Client(sys.argv[1] + "/?wsdl")
print(repr(client.service.normalize(text="  hola   que \t tal  ")))
print(repr(client.service.normalize(text="<b> & ñ   ü")))
try:
    client.service.normalize(text="\x00")
except Exception as e:
    print("error:", type(e).__name__)
"#;
    let out = Command::new(python_with_zeep())
        .args(["-c", script, &f.url()])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "zeep failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "'hola que tal'");
    assert_eq!(lines[1], "'<b> & ñ ü'");
    assert!(
        lines[2].starts_with("error:"),
        "a NUL cannot travel in XML: {stdout}"
    );
}

#[test]
fn concurrent_requests_and_clean_shutdown() {
    let f = Formatter::start();
    let port = f.port;
    let threads: Vec<_> = (0..16)
        .map(|n| {
            std::thread::spawn(move || {
                let text = format!("  hilo   {n}  ");
                let answer = http(
                    port,
                    "POST",
                    "/normalize",
                    Some("text/plain"),
                    text.as_bytes(),
                );
                assert_eq!(answer.text(), format!("hilo {n}"));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(), Some(0));
}
