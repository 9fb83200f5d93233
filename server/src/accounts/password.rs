//! Passwords as argon2id hashes in the PHC string form, and the secret a client sent.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Longest password or room key, in bytes: the messenger's field limit.
pub const MAX_SECRET: usize = wire::MAX_FIELD_LEN;

/// argon2id's cost: 19 MiB, two passes, one lane (OWASP's recommended minimum). A hash
/// takes tens of milliseconds on one core, which is what makes guessing expensive; the
/// checker's threads bound how many run at once, so memory stays bounded too.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// A password or room key as a client sent it. Never printed, and overwritten when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
        .expect("argon2 parameters are constants within its limits");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// `secret` hashed with a fresh random salt, as a PHC string.
pub fn hash(secret: &Secret) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(secret.expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("hashing a password: {e}"))
}

/// True if `secret` is the one `stored` (a PHC string) was made from. The comparison is in
/// constant time; a stored string that is not a valid hash matches nothing.
pub fn verify(secret: &Secret, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        // The parameters are the stored hash's own, so hashes made with other costs still
        // verify.
        Ok(parsed) => argon2()
            .verify_password(secret.expose().as_bytes(), &parsed)
            .is_ok(),
        Err(e) => {
            log::error!("a stored password hash is not a PHC string ({e}); it matches nothing");
            false
        }
    }
}

/// What an operator or a client may set as a password: 1 to [`MAX_SECRET`] bytes, no NUL
/// (the messenger's fields end in one) and no line break (the line protocols end in one).
pub fn acceptable(secret: &str) -> Result<(), &'static str> {
    if secret.is_empty() {
        Err("a password cannot be empty")
    } else if secret.len() > MAX_SECRET {
        Err("a password holds at most 255 bytes")
    } else if secret.contains(['\0', '\n', '\r']) {
        Err("a password cannot hold NUL or line breaks")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_argon2id_salted_and_verifies_only_its_password() {
        let secret = Secret::new("correct horse".into());
        let one = hash(&secret).unwrap();
        let two = hash(&secret).unwrap();
        assert!(one.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{one}");
        assert_ne!(one, two, "each hash has its own salt");
        assert!(!one.contains("correct horse"));
        assert!(verify(&secret, &one));
        assert!(verify(&secret, &two));
        assert!(!verify(&Secret::new("correct horsf".into()), &one));
        assert!(!verify(&secret, "not a hash"));
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }

    #[test]
    fn only_printable_lines_within_the_field_limit_are_passwords() {
        assert!(acceptable("x").is_ok());
        assert!(acceptable("").is_err());
        assert!(acceptable(&"x".repeat(256)).is_err());
        assert!(acceptable("a\nb").is_err());
        assert!(acceptable("a\0b").is_err());
    }
}
