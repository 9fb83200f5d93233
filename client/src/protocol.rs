//! Requests to the messaging server: one TCP connection per operation, with timeouts so that a
//! dead or silent server costs a few seconds at most.

use std::io::{self, BufReader, Read};
use std::time::Duration;

use crate::link::{self, Stream};

use wire::{read_field, write_fields, MAX_FIELD_LEN};

/// How long any step of a request may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the server is.
#[derive(Debug, Clone)]
pub struct ServerLink {
    pub host: String,
    pub port: u16,
    /// The user's password: every operation that acts as the user proves it with an `AUTH`
    /// before it (docs/accounts.md); without one, requests are the seeds' own.
    pub password: Option<String>,
    /// TLS (`--tls`), or plaintext.
    pub tls: link::Tls,
}

/// A code the protocol does not define for the operation: the server is not speaking it.
fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl ServerLink {
    /// Opens a connection and sends the request.
    fn open(&self, fields: &[&[u8]]) -> io::Result<BufReader<Stream>> {
        let mut stream = link::connect(&self.host, self.port, &self.tls, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        write_fields(&mut stream, fields)?;
        Ok(BufReader::new(stream))
    }

    /// Sends a request and reads the one-byte code, which must be at most `max_code`.
    fn code(&self, fields: &[&[u8]], max_code: u8) -> io::Result<(u8, BufReader<Stream>)> {
        let mut reader = self.open(fields)?;
        let mut code = [0u8; 1];
        reader.read_exact(&mut code).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => malformed("the server closed without answering"),
            _ => e,
        })?;
        if code[0] > max_code {
            return Err(malformed(&format!(
                "result code {} is not one the protocol defines here",
                code[0]
            )));
        }
        Ok((code[0], reader))
    }

    /// `fields` acting as `alias`: behind `AUTH alias password` when there is a password.
    fn code_as(
        &self,
        alias: &str,
        fields: &[&[u8]],
        max_code: u8,
    ) -> io::Result<(u8, BufReader<Stream>)> {
        match &self.password {
            Some(password) => {
                let mut authed: Vec<&[u8]> =
                    vec![wire::AUTH.as_bytes(), alias.as_bytes(), password.as_bytes()];
                authed.extend_from_slice(fields);
                self.code(&authed, max_code)
            }
            None => self.code(fields, max_code),
        }
    }

    /// REGISTER; with a password, a new name is claimed with it.
    pub fn register(&self, alias: &str) -> io::Result<u8> {
        Ok(self.code_as(alias, &[b"REGISTER", alias.as_bytes()], 2)?.0)
    }

    /// SETPASSWORD (ours): sets `alias`'s password to `new` (empty: removes it).
    pub fn set_password(&self, alias: &str, new: &str) -> io::Result<u8> {
        let fields: [&[u8]; 3] = [b"SETPASSWORD", alias.as_bytes(), new.as_bytes()];
        Ok(self.code_as(alias, &fields, 2)?.0)
    }

    /// The 2022-23 form: full name, alias, DD/MM/YYYY.
    pub fn register_profile(
        &self,
        full_name: &str,
        alias: &str,
        birth_date: &str,
    ) -> io::Result<u8> {
        let fields: [&[u8]; 4] = [
            b"REGISTER",
            full_name.as_bytes(),
            alias.as_bytes(),
            birth_date.as_bytes(),
        ];
        Ok(self.code_as(alias, &fields, 2)?.0)
    }

    pub fn unregister(&self, alias: &str) -> io::Result<u8> {
        Ok(self
            .code_as(alias, &[b"UNREGISTER", alias.as_bytes()], 2)?
            .0)
    }

    /// CONNECT; with the pin of a TLS listener, CONNECTTLS (ours: docs/tls.md).
    pub fn connect(&self, alias: &str, port: u16, pin: Option<&str>) -> io::Result<u8> {
        let port = port.to_string();
        let fields: Vec<&[u8]> = match pin {
            Some(pin) => vec![
                b"CONNECTTLS",
                alias.as_bytes(),
                port.as_bytes(),
                pin.as_bytes(),
            ],
            None => vec![b"CONNECT", alias.as_bytes(), port.as_bytes()],
        };
        Ok(self.code_as(alias, &fields, 3)?.0)
    }

    pub fn disconnect(&self, alias: &str) -> io::Result<u8> {
        Ok(self
            .code_as(alias, &[b"DISCONNECT", alias.as_bytes()], 3)?
            .0)
    }

    /// SEND or SENDATTACH: the message id, or the failure code.
    pub fn send(
        &self,
        sender: &str,
        recipient: &str,
        text: &str,
        attachment: Option<&str>,
    ) -> io::Result<Result<u32, u8>> {
        let mut fields: Vec<&[u8]> = vec![
            b"SEND",
            sender.as_bytes(),
            recipient.as_bytes(),
            text.as_bytes(),
        ];
        if let Some(file) = attachment {
            fields[0] = b"SENDATTACH";
            fields.push(file.as_bytes());
        }
        let (code, mut reader) = self.code_as(sender, &fields, 2)?;
        if code != 0 {
            return Ok(Err(code));
        }
        let id = read_field(&mut reader, MAX_FIELD_LEN)?;
        let id = std::str::from_utf8(&id)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("message id is not a number"))?;
        Ok(Ok(id))
    }

    /// USERS or CONNECTEDUSERS (`op`) for `requester`: the entries, or the failure code.
    pub fn users(&self, op: &str, requester: &str) -> io::Result<Result<Vec<String>, u8>> {
        let (code, mut reader) = self.code(&[op.as_bytes(), requester.as_bytes()], 2)?;
        if code != 0 {
            return Ok(Err(code));
        }
        let count = read_field(&mut reader, MAX_FIELD_LEN)?;
        let count: usize = std::str::from_utf8(&count)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("user count is not a number"))?;
        // Each entry is at most an alias, an address and a port.
        let entries = (0..count)
            .map(|_| {
                read_field(&mut reader, 2 * MAX_FIELD_LEN)
                    .map(|e| String::from_utf8_lossy(&e).into_owned())
            })
            .collect::<io::Result<_>>()?;
        Ok(Ok(entries))
    }
}
