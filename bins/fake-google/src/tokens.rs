//! OAuth tokens by convention: refresh token `fake-refresh-<user_id>` belongs to
//! `<user_id>`; access tokens are `fake-access-<user_id>-<n>` and remembered
//! until revoked or expired through the control API.

use std::collections::{HashMap, HashSet};
use sync_domain::ids::UserId;

/// Every accepted refresh token starts with this; the rest is the user id.
pub(crate) const REFRESH_PREFIX: &str = "fake-refresh-";

/// Access tokens issued, and users whose refresh token is refused.
#[derive(Default)]
pub(crate) struct Tokens {
    access: HashMap<String, UserId>,
    revoked: HashSet<UserId>,
    issued: u64,
    /// Token requests answered, refusals included.
    pub(crate) requests: usize,
}

impl Tokens {
    /// A new access token for the refresh token's user, or `None` (`invalid_grant`).
    pub(crate) fn refresh(&mut self, refresh_token: &str) -> Option<(String, UserId)> {
        self.requests += 1;
        let user = UserId::parse(refresh_token.strip_prefix(REFRESH_PREFIX)?).ok()?;
        if self.revoked.contains(&user) {
            return None;
        }
        self.issued += 1;
        let token = format!("fake-access-{user}-{}", self.issued);
        self.access.insert(token.clone(), user.clone());
        Some((token, user))
    }

    /// The user an access token was issued to.
    pub(crate) fn user_of(&self, access_token: &str) -> Option<UserId> {
        self.access.get(access_token).cloned()
    }

    pub(crate) fn revoke(&mut self, user: &UserId) {
        self.revoked.insert(user.clone());
        self.expire_access(user);
    }

    pub(crate) fn reinstate(&mut self, user: &UserId) {
        self.revoked.remove(user);
    }

    pub(crate) fn expire_access(&mut self, user: &UserId) {
        self.access.retain(|_, owner| owner != user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_name_their_user_and_revocation_refuses_them() {
        let mut tokens = Tokens::default();
        let (access, user) = tokens.refresh("fake-refresh-alice").unwrap();
        assert_eq!(user.as_str(), "alice");
        assert!(access.starts_with("fake-access-alice-"));
        assert_eq!(tokens.user_of(&access), Some(user.clone()));
        assert!(tokens.refresh("revoked").is_none());
        assert!(tokens.refresh("1//real-looking").is_none());
        tokens.revoke(&user);
        assert_eq!(tokens.user_of(&access), None);
        assert!(tokens.refresh("fake-refresh-alice").is_none());
        tokens.reinstate(&user);
        assert!(tokens.refresh("fake-refresh-alice").is_some());
    }
}
