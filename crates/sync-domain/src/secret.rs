//! Secrets as newtypes: their `Debug` and `Display` print `***`, never the value.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

macro_rules! secret_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The secret itself; call only where it must leave the process.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "(***)"))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("***")
            }
        }
    };
}

secret_newtype!(
    /// The secret Google echoes in `X-Goog-Channel-Token` on every notification of a channel.
    ChannelToken
);
secret_newtype!(
    /// A user's long-lived Google OAuth refresh token.
    RefreshToken
);
secret_newtype!(
    /// A short-lived Google OAuth access token.
    AccessToken
);

/// Google accepts channel tokens of at most 256 characters.
pub const MAX_CHANNEL_TOKEN_LEN: usize = 256;

/// Bytes of entropy in a generated channel token (256 bits, SPEC section 7).
pub const CHANNEL_TOKEN_BYTES: usize = 32;

impl ChannelToken {
    /// A token made from 32 bytes of OS randomness, base64url (43 characters).
    ///
    /// The caller supplies the bytes, so this crate stays free of I/O.
    pub fn from_random_bytes(bytes: [u8; CHANNEL_TOKEN_BYTES]) -> Self {
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Equality in constant time for equal lengths, so a caller learns nothing
    /// from timing but the length, which is public (43 characters).
    pub fn matches(&self, presented: &str) -> bool {
        constant_time_eq::constant_time_eq(self.0.as_bytes(), presented.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let token = ChannelToken::new("hunter2");
        assert_eq!(format!("{token:?}"), "ChannelToken(***)");
        assert_eq!(format!("{token}"), "***");
        assert_eq!(
            format!("{:?}", RefreshToken::new("1//x")),
            "RefreshToken(***)"
        );
        assert_eq!(
            format!("{:?}", AccessToken::new("ya29.x")),
            "AccessToken(***)"
        );
    }

    #[test]
    fn generated_token_carries_256_bits() {
        let token = ChannelToken::from_random_bytes([7; CHANNEL_TOKEN_BYTES]);
        assert_eq!(token.expose().len(), 43);
        assert!(token.expose().len() <= MAX_CHANNEL_TOKEN_LEN);
    }

    #[test]
    fn matches_only_the_same_token() {
        let token = ChannelToken::new("abc");
        assert!(token.matches("abc"));
        assert!(!token.matches("abd"));
        assert!(!token.matches("ab"));
        assert!(!token.matches(""));
    }
}
