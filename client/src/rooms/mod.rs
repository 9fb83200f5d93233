//! The rooms of seed 004 (Wassop) as our clients speak them: what the server's lines mean
//! and the original client's emoji commands, shared by the console client ([`console`]) and
//! the window ([`window`]).

pub mod console;
pub mod window;

pub use console::run;

const JOINED_ROOM: &str = "Te has unido a la sala";
const LEFT_ROOM: &str = "Has salido de la sala";

/// What the server answers to a JOIN of a name with a password, sent without one.
const PASSWORD_NEEDED: &str = "ERROR: Se necesita contraseña.";

/// What the server answers to `ROOM r` for a room with a key, sent without it.
const KEY_NEEDED: &str = "ERROR: La sala tiene clave.";

/// The first line of the answer to `LIST_ROOMS`.
const ROOM_LIST: &str = "Salas disponibles:";

/// The original client's emoji commands and what each sends.
pub const EMOJI: [(&str, &str); 3] = [("LOVE", "❤️❤️❤️"), ("LIKE", "👍"), ("DISLIKE", "👎")];

/// What an emoji command (`LOVE`, `LIKE`, `DISLIKE`) sends, if `command` is one.
pub fn emoji(command: &str) -> Option<&'static str> {
    EMOJI
        .iter()
        .find(|(name, _)| *name == command)
        .map(|(_, text)| *text)
}

/// A room of the answer to `LIST_ROOMS`: `name (members)`, ` [clave]` if it has a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomEntry {
    pub name: String,
    pub members: u32,
    pub keyed: bool,
}

impl RoomEntry {
    pub fn parse(line: &str) -> Option<RoomEntry> {
        let (line, keyed) = match line.strip_suffix(" [clave]") {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        let (name, count) = line.strip_suffix(')')?.rsplit_once(" (")?;
        Some(RoomEntry {
            name: name.to_string(),
            members: count.parse().ok()?,
            keyed,
        })
    }
}

/// The room `line` says we are in now (`Te has unido a la sala r.`), if it says so.
fn joined(line: &str) -> Option<&str> {
    line.strip_prefix(JOINED_ROOM)?
        .strip_prefix(' ')?
        .strip_suffix('.')
}

/// The room `line` says we left (`Has salido de la sala r.`), if it says so.
fn left(line: &str) -> Option<&str> {
    line.strip_prefix(LEFT_ROOM)?
        .strip_prefix(' ')?
        .strip_suffix('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_lists_and_room_changes_are_understood() {
        assert_eq!(
            RoomEntry::parse("Sala Secreta (2) [clave]"),
            Some(RoomEntry {
                name: "Sala Secreta".into(),
                members: 2,
                keyed: true
            })
        );
        assert_eq!(
            RoomEntry::parse("Sala (1) (0)").map(|r| (r.name, r.members)),
            Some(("Sala (1)".into(), 0))
        );
        assert_eq!(RoomEntry::parse("ana: hola"), None);
        assert_eq!(joined("Te has unido a la sala Sala 1."), Some("Sala 1"));
        assert_eq!(left("Has salido de la sala Patio."), Some("Patio"));
        assert_eq!(joined("ana se ha unido a la sala."), None);
        assert_eq!(emoji("LIKE"), Some("👍"));
        assert_eq!(emoji("hola"), None);
    }
}
