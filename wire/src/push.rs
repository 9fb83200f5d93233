//! Server-to-listener pushes: a message to its recipient, an ack to its sender.

use std::io::{self, Read};

use crate::fields::{encode_fields, read_field};
use crate::MAX_FIELD_LEN;

/// The attachment request one client's listener answers for another (docs/messenger.md,
/// "Attachments"); some clients write it with an underscore, so listeners accept both.
pub const GET_FILE: &str = "GET FILE";
pub const GET_FILE_UNDERSCORE: &str = "GET_FILE";

/// Real clients are split on the push op names: spaces as the seeds write them, or underscores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushStyle {
    #[default]
    Spaces,
    Underscores,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    Message,
    MessageAttach,
    Ack,
    AttachAck,
}

impl PushKind {
    const ALL: [PushKind; 4] = [
        PushKind::Message,
        PushKind::MessageAttach,
        PushKind::Ack,
        PushKind::AttachAck,
    ];

    pub fn op_name(self, style: PushStyle) -> &'static str {
        match (self, style) {
            (PushKind::Message, PushStyle::Spaces) => "SEND MESSAGE",
            (PushKind::MessageAttach, PushStyle::Spaces) => "SEND MESSAGE ATTACH",
            (PushKind::Ack, PushStyle::Spaces) => "SEND MESS ACK",
            (PushKind::AttachAck, PushStyle::Spaces) => "SEND MESS ATTACH ACK",
            (PushKind::Message, PushStyle::Underscores) => "SEND_MESSAGE",
            (PushKind::MessageAttach, PushStyle::Underscores) => "SEND_MESSAGE_ATTACH",
            (PushKind::Ack, PushStyle::Underscores) => "SEND_MESS_ACK",
            (PushKind::AttachAck, PushStyle::Underscores) => "SEND_MESS_ATTACH_ACK",
        }
    }

    /// Recognises a push op name in either style.
    pub fn from_op_name(name: &[u8]) -> Option<PushKind> {
        PushKind::ALL.into_iter().find(|kind| {
            [PushStyle::Spaces, PushStyle::Underscores]
                .iter()
                .any(|&style| kind.op_name(style).as_bytes() == name)
        })
    }
}

/// One push, decoded or about to be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// `SEND MESSAGE sender id text` or `SEND MESSAGE ATTACH sender id text file`.
    Message {
        sender: String,
        id: u32,
        text: Vec<u8>,
        attachment: Option<Vec<u8>>,
    },
    /// `SEND MESS ACK id` or `SEND MESS ATTACH ACK id file`.
    Ack {
        id: u32,
        attachment: Option<Vec<u8>>,
    },
}

impl Push {
    pub fn kind(&self) -> PushKind {
        match self {
            Push::Message {
                attachment: None, ..
            } => PushKind::Message,
            Push::Message {
                attachment: Some(_),
                ..
            } => PushKind::MessageAttach,
            Push::Ack {
                attachment: None, ..
            } => PushKind::Ack,
            Push::Ack {
                attachment: Some(_),
                ..
            } => PushKind::AttachAck,
        }
    }

    /// The bytes of the whole push, op name first.
    pub fn encode(&self, style: PushStyle) -> Vec<u8> {
        let op = self.kind().op_name(style).as_bytes();
        match self {
            Push::Message {
                sender,
                id,
                text,
                attachment,
            } => {
                let id = id.to_string();
                let mut fields: Vec<&[u8]> = vec![op, sender.as_bytes(), id.as_bytes(), text];
                fields.extend(attachment.as_deref());
                encode_fields(&fields)
            }
            Push::Ack { id, attachment } => {
                let id = id.to_string();
                let mut fields: Vec<&[u8]> = vec![op, id.as_bytes()];
                fields.extend(attachment.as_deref());
                encode_fields(&fields)
            }
        }
    }

    /// Reads the fields that follow an op name already read as `kind`.
    pub fn read_body(kind: PushKind, reader: &mut impl Read) -> io::Result<Push> {
        let field = |reader: &mut dyn Read| read_field(&mut &mut *reader, MAX_FIELD_LEN);
        let number = |bytes: Vec<u8>| -> io::Result<u32> {
            std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "message id is not a number")
                })
        };
        let text = |bytes: Vec<u8>| -> io::Result<String> {
            String::from_utf8(bytes)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "sender is not UTF-8"))
        };
        Ok(match kind {
            PushKind::Message | PushKind::MessageAttach => {
                let sender = text(field(reader)?)?;
                let id = number(field(reader)?)?;
                let body = field(reader)?;
                let attachment = match kind {
                    PushKind::MessageAttach => Some(field(reader)?),
                    _ => None,
                };
                Push::Message {
                    sender,
                    id,
                    text: body,
                    attachment,
                }
            }
            PushKind::Ack | PushKind::AttachAck => {
                let id = number(field(reader)?)?;
                let attachment = match kind {
                    PushKind::AttachAck => Some(field(reader)?),
                    _ => None,
                };
                Push::Ack { id, attachment }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_encode_exactly_as_the_protocol_writes_them() {
        let message = Push::Message {
            sender: "ana".into(),
            id: 7,
            text: b"hola".to_vec(),
            attachment: None,
        };
        assert_eq!(
            message.encode(PushStyle::Spaces),
            b"SEND MESSAGE\0ana\x007\0hola\0"
        );
        assert_eq!(
            message.encode(PushStyle::Underscores),
            b"SEND_MESSAGE\0ana\x007\0hola\0"
        );
        let attach = Push::Message {
            sender: "ana".into(),
            id: 8,
            text: b"t".to_vec(),
            attachment: Some(b"/f".to_vec()),
        };
        assert_eq!(
            attach.encode(PushStyle::Spaces),
            b"SEND MESSAGE ATTACH\0ana\x008\0t\0/f\0"
        );
        let ack = Push::Ack {
            id: 9,
            attachment: None,
        };
        assert_eq!(ack.encode(PushStyle::Underscores), b"SEND_MESS_ACK\x009\0");
        let attach_ack = Push::Ack {
            id: 10,
            attachment: Some(b"/f".to_vec()),
        };
        assert_eq!(
            attach_ack.encode(PushStyle::Spaces),
            b"SEND MESS ATTACH ACK\x0010\0/f\0"
        );
    }

    #[test]
    fn pushes_decode_in_both_styles() {
        for style in [PushStyle::Spaces, PushStyle::Underscores] {
            for push in [
                Push::Message {
                    sender: "b".into(),
                    id: 1,
                    text: b"x y".to_vec(),
                    attachment: None,
                },
                Push::Message {
                    sender: "b".into(),
                    id: 2,
                    text: b"x".to_vec(),
                    attachment: Some(b"/tmp/a".to_vec()),
                },
                Push::Ack {
                    id: 3,
                    attachment: None,
                },
                Push::Ack {
                    id: 4,
                    attachment: Some(b"/tmp/a".to_vec()),
                },
            ] {
                let bytes = push.encode(style);
                let mut reader = bytes.as_slice();
                let op = read_field(&mut reader, 32).unwrap();
                let kind = PushKind::from_op_name(&op).unwrap();
                assert_eq!(Push::read_body(kind, &mut reader).unwrap(), push);
                assert!(reader.is_empty());
            }
        }
    }
}
