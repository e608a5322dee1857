//! Answers for a Pusher auth endpoint: channel authorization (private,
//! presence, encrypted) and user authentication (`pusher:signin`), and the
//! checks a server makes of them.
//!
//! The signed strings are `socket_id:channel`, `socket_id:channel:channel_data`
//! and `socket_id::user::user_data`; `auth` is `key:hex(HMAC-SHA256)`.

use serde::{Deserialize, Serialize};

use crate::channel::{ChannelKind, ChannelName, SocketId};
use crate::config::Credentials;
use crate::error::{Result, ValidationError};

/// What an auth endpoint answers for a channel subscription. Serialises to
/// exactly the JSON pusher-js expects: `{auth}`, `{auth,channel_data}` or
/// `{auth,shared_secret}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelAuth {
    /// `key:signature`.
    pub auth: String,
    /// The signed presence data, for presence channels.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub channel_data: Option<String>,
    /// The channel's key in base64, for encrypted channels.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shared_secret: Option<String>,
}

/// What a user authentication endpoint answers: `{auth,user_data}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAuth {
    /// `key:signature`.
    pub auth: String,
    /// The signed user data.
    pub user_data: String,
}

/// A presence channel member as the auth endpoint presents it; serialises to
/// `{"user_id":…,"user_info":…}` (no `user_info` when it is `None`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresenceMember<'a, I: Serialize + ?Sized = serde_json::Value> {
    /// The member's id; the same user on several connections counts once.
    pub user_id: &'a str,
    /// What other members see of this one (a name, an avatar, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_info: Option<&'a I>,
}

impl Credentials {
    /// Authorizes a subscription to a private or encrypted channel.
    ///
    /// Public channels need no authorization and presence channels need member
    /// data ([`Credentials::authorize_presence_channel`]); both are errors here.
    /// Encrypted channels need an encryption master key and answer with the
    /// channel's `shared_secret`.
    ///
    /// ```
    /// use realtime_core::Credentials;
    /// let creds = Credentials::new("3", "278d425bdf160c739803", "7ad3773142a6692b25b8");
    /// let answer = creds.authorize_channel("1234.1234", "private-foobar").unwrap();
    /// assert_eq!(answer.auth, "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4");
    /// ```
    pub fn authorize_channel(&self, socket_id: &str, channel: &str) -> Result<ChannelAuth> {
        let socket_id = SocketId::parse(socket_id)?;
        let channel = ChannelName::parse(channel)?;
        let shared_secret = match channel.kind() {
            ChannelKind::Private => None,
            ChannelKind::PrivateEncrypted => {
                let key = self.encryption_master_key().ok_or_else(|| {
                    ValidationError::MissingEncryptionMasterKey(channel.to_string())
                })?;
                Some(key.shared_secret_base64(channel.as_str()))
            }
            ChannelKind::Presence => {
                return Err(ValidationError::MissingPresenceUserId.into());
            }
            ChannelKind::Public | ChannelKind::ServerToUser => {
                return Err(not_applicable(&channel, "it is not a private channel"))
            }
        };
        let signature = self.signer().sign_hex(&[
            socket_id.as_str().as_bytes(),
            b":",
            channel.as_str().as_bytes(),
        ]);
        Ok(ChannelAuth {
            auth: self.token(&signature),
            channel_data: None,
            shared_secret,
        })
    }

    /// Authorizes a subscription to a presence channel for `member`.
    ///
    /// ```
    /// use realtime_core::{Credentials, PresenceMember};
    /// let creds = Credentials::new("3", "278d425bdf160c739803", "7ad3773142a6692b25b8");
    /// let info = serde_json::json!({"name": "Alice"});
    /// let member = PresenceMember { user_id: "42", user_info: Some(&info) };
    /// let answer = creds.authorize_presence_channel("1234.1234", "presence-foobar", &member).unwrap();
    /// assert_eq!(answer.channel_data.as_deref(), Some(r#"{"user_id":"42","user_info":{"name":"Alice"}}"#));
    /// ```
    pub fn authorize_presence_channel<I: Serialize + ?Sized>(
        &self,
        socket_id: &str,
        channel: &str,
        member: &PresenceMember<'_, I>,
    ) -> Result<ChannelAuth> {
        let socket_id = SocketId::parse(socket_id)?;
        let channel = ChannelName::parse(channel)?;
        if channel.kind() != ChannelKind::Presence {
            return Err(not_applicable(&channel, "it is not a presence channel"));
        }
        if member.user_id.is_empty() {
            return Err(ValidationError::MissingPresenceUserId.into());
        }
        let channel_data = serde_json::to_string(member).map_err(crate::Error::Serialize)?;
        Ok(self.sign_presence(&socket_id, &channel, channel_data))
    }

    /// Authorizes a presence channel subscription with presence data of any
    /// shape: `channel_data` must serialise to an object with a non-empty
    /// string `user_id`; its keys keep their order.
    pub fn authorize_presence_channel_with_data<T: Serialize + ?Sized>(
        &self,
        socket_id: &str,
        channel: &str,
        channel_data: &T,
    ) -> Result<ChannelAuth> {
        let socket_id = SocketId::parse(socket_id)?;
        let channel = ChannelName::parse(channel)?;
        if channel.kind() != ChannelKind::Presence {
            return Err(not_applicable(&channel, "it is not a presence channel"));
        }
        let value = serde_json::to_value(channel_data).map_err(crate::Error::Serialize)?;
        match value.get("user_id").and_then(|id| id.as_str()) {
            Some(id) if !id.is_empty() => {}
            _ => return Err(ValidationError::MissingPresenceUserId.into()),
        }
        Ok(self.sign_presence(&socket_id, &channel, value.to_string()))
    }

    fn sign_presence(
        &self,
        socket_id: &SocketId,
        channel: &ChannelName,
        channel_data: String,
    ) -> ChannelAuth {
        let signature = self.signer().sign_hex(&[
            socket_id.as_str().as_bytes(),
            b":",
            channel.as_str().as_bytes(),
            b":",
            channel_data.as_bytes(),
        ]);
        ChannelAuth {
            auth: self.token(&signature),
            channel_data: Some(channel_data),
            shared_secret: None,
        }
    }

    /// Authenticates a user (`pusher:signin`). `user_data` must serialise to a
    /// JSON object with a non-empty string `id`; `user_info` and `watchlist`
    /// are optional. Keys keep the order in which `user_data` gives them.
    ///
    /// ```
    /// use realtime_core::Credentials;
    /// let creds = Credentials::new("3", "278d425bdf160c739803", "7ad3773142a6692b25b8");
    /// let answer = creds.authenticate_user("1234.1234", &serde_json::json!({"id": "12345"})).unwrap();
    /// assert_eq!(answer.auth, "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba");
    /// ```
    pub fn authenticate_user<T: Serialize + ?Sized>(
        &self,
        socket_id: &str,
        user_data: &T,
    ) -> Result<UserAuth> {
        let socket_id = SocketId::parse(socket_id)?;
        let value = serde_json::to_value(user_data).map_err(crate::Error::Serialize)?;
        match value.get("id").and_then(|id| id.as_str()) {
            Some(id) if !id.is_empty() => {}
            _ => return Err(ValidationError::MissingUserDataId.into()),
        }
        let user_data = value.to_string();
        let signature = self.signer().sign_hex(&[
            socket_id.as_str().as_bytes(),
            b"::user::",
            user_data.as_bytes(),
        ]);
        Ok(UserAuth {
            auth: self.token(&signature),
            user_data,
        })
    }

    /// Checks, as a server does, the `auth` a client presents to subscribe:
    /// `channel_data` is the presence data exactly as the client sent it.
    /// Constant time in the signature.
    pub fn verify_channel_auth(
        &self,
        socket_id: &str,
        channel: &str,
        channel_data: Option<&str>,
        auth: &str,
    ) -> bool {
        let Some(signature) = self.signature_of_token(auth) else {
            return false;
        };
        let mut parts: Vec<&[u8]> = vec![socket_id.as_bytes(), b":", channel.as_bytes()];
        if let Some(data) = channel_data {
            parts.extend_from_slice(&[b":", data.as_bytes()]);
        }
        self.signer().verify_hex(&parts, signature)
    }

    /// Checks, as a server does, the `auth` of a `pusher:signin`.
    pub fn verify_user_auth(&self, socket_id: &str, user_data: &str, auth: &str) -> bool {
        let Some(signature) = self.signature_of_token(auth) else {
            return false;
        };
        self.signer().verify_hex(
            &[socket_id.as_bytes(), b"::user::", user_data.as_bytes()],
            signature,
        )
    }

    fn token(&self, signature: &str) -> String {
        let mut token = String::with_capacity(self.key().len() + 1 + signature.len());
        token.push_str(self.key());
        token.push(':');
        token.push_str(signature);
        token
    }

    fn signature_of_token<'a>(&self, auth: &'a str) -> Option<&'a str> {
        let (key, signature) = auth.split_once(':')?;
        (key == self.key()).then_some(signature)
    }
}

fn not_applicable(channel: &ChannelName, reason: &'static str) -> crate::Error {
    ValidationError::ChannelAuthNotApplicable {
        channel: channel.to_string(),
        reason,
    }
    .into()
}

/// The spec's named cases for channel authorization and user authentication.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::Error;

    // The fixture of Pusher's reference test suite.
    fn creds() -> Credentials {
        Credentials::new("123", "b5390e69136683c40d2d", "24aaea961cfe1335f796")
            .with_encryption_master_key(
                MasterKey::from_base64("a7QyXV8eYrtJBehbuix68XCPO6+LrpnNNReWOkaXW7A=").unwrap(),
            )
    }

    #[test]
    fn authenticate_private_channel_succeeds() {
        let answer = creds()
            .authorize_channel("123.456", "private-my-channel")
            .unwrap();
        assert_eq!(
            answer.auth,
            "b5390e69136683c40d2d:077ffe22dd122b1752d77a3fac2a4d53a08f9e5e19799e9266e7b243bc619100"
        );
        assert_eq!(answer.channel_data, None);
        assert_eq!(answer.shared_secret, None);
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"auth":"b5390e69136683c40d2d:077ffe22dd122b1752d77a3fac2a4d53a08f9e5e19799e9266e7b243bc619100"}"#
        );
    }

    #[test]
    fn authenticate_encrypted_channel_succeeds() {
        let answer = creds()
            .authorize_channel("123.456", "private-encrypted-my-channel")
            .unwrap();
        assert_eq!(
            answer.auth,
            "b5390e69136683c40d2d:215d060a09b11d609dd6640ebe89a9ec256eea269a75a8a5474e5b598e12e214"
        );
        // SHA-256 over the channel name and the decoded key bytes, as the Node SDK does.
        assert_eq!(
            answer.shared_secret.as_deref(),
            Some("oLenBlpbknbWkkw0l6pS68jXxEEbpQcduFm0du0hpOM=")
        );
        assert_eq!(answer.channel_data, None);
    }

    #[test]
    fn authenticate_encrypted_channel_without_master_key_fails() {
        let creds = Credentials::new("1", "key", "secret");
        assert!(matches!(
            creds.authorize_channel("1.1", "private-encrypted-x"),
            Err(Error::Validation(
                ValidationError::MissingEncryptionMasterKey(_)
            ))
        ));
    }

    #[test]
    fn authenticate_presence_channel_succeeds() {
        let member: PresenceMember<'_> = PresenceMember {
            user_id: "user_1",
            user_info: None,
        };
        let answer = creds()
            .authorize_presence_channel("123.456", "presence-my-channel", &member)
            .unwrap();
        assert_eq!(
            answer.channel_data.as_deref(),
            Some(r#"{"user_id":"user_1"}"#)
        );
        assert_eq!(
            answer.auth,
            "b5390e69136683c40d2d:9f80a404199ac45a69b836a25fc88f09efb9ffef44d6fded36ac91b9d10887a2"
        );
        assert_eq!(answer.shared_secret, None);
    }

    #[test]
    fn authenticate_presence_channel_with_user_info_succeeds() {
        let info = serde_json::json!({"name": "Joe Bloggs"});
        let member = PresenceMember {
            user_id: "user_1",
            user_info: Some(&info),
        };
        let answer = creds()
            .authorize_presence_channel("123.456", "presence-my-channel", &member)
            .unwrap();
        assert_eq!(
            answer.channel_data.as_deref(),
            Some(r#"{"user_id":"user_1","user_info":{"name":"Joe Bloggs"}}"#)
        );
        assert_eq!(
            answer.auth,
            "b5390e69136683c40d2d:7709a34e0bd1f12fcadb52d9cc85feebfef414e59166a357bf777c4043c6aa5e"
        );
    }

    #[test]
    fn authenticate_presence_channel_with_missing_user_data_fails() {
        assert!(matches!(
            creds().authorize_channel("123.456", "presence-my-channel"),
            Err(Error::Validation(ValidationError::MissingPresenceUserId))
        ));
        let member: PresenceMember<'_> = PresenceMember {
            user_id: "",
            user_info: None,
        };
        assert!(matches!(
            creds().authorize_presence_channel("123.456", "presence-my-channel", &member),
            Err(Error::Validation(ValidationError::MissingPresenceUserId))
        ));
    }

    #[test]
    fn authenticate_public_channel_fails() {
        assert!(matches!(
            creds().authorize_channel("123.456", "my-channel"),
            Err(Error::Validation(
                ValidationError::ChannelAuthNotApplicable { .. }
            ))
        ));
        let member: PresenceMember<'_> = PresenceMember {
            user_id: "u",
            user_info: None,
        };
        assert!(matches!(
            creds().authorize_presence_channel("123.456", "private-my-channel", &member),
            Err(Error::Validation(
                ValidationError::ChannelAuthNotApplicable { .. }
            ))
        ));
    }

    #[test]
    fn authenticate_with_invalid_socket_id_fails() {
        for bad in ["", "1234", "1.1:private-x", "1.1\n"] {
            assert!(matches!(
                creds().authorize_channel(bad, "private-x"),
                Err(Error::Validation(ValidationError::InvalidSocketId(_)))
            ));
        }
    }

    #[test]
    fn authenticate_user_signs_user_data_and_requires_an_id() {
        let creds = Credentials::new("3", "278d425bdf160c739803", "7ad3773142a6692b25b8");
        let answer = creds
            .authenticate_user("1234.1234", &serde_json::json!({"id": "12345"}))
            .unwrap();
        assert_eq!(answer.user_data, r#"{"id":"12345"}"#);
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"id": ""}),
            serde_json::json!({"id": 12345}),
            serde_json::json!("12345"),
        ] {
            assert!(matches!(
                creds.authenticate_user("1234.1234", &bad),
                Err(Error::Validation(ValidationError::MissingUserDataId))
            ));
        }
    }

    #[test]
    fn a_server_accepts_exactly_the_signatures_an_auth_endpoint_makes() {
        let creds = creds();
        let private = creds.authorize_channel("1.2", "private-a").unwrap();
        assert!(creds.verify_channel_auth("1.2", "private-a", None, &private.auth));
        assert!(!creds.verify_channel_auth("1.3", "private-a", None, &private.auth));
        assert!(!creds.verify_channel_auth("1.2", "private-b", None, &private.auth));
        assert!(!creds.verify_channel_auth("1.2", "private-a", None, "other:abc"));
        assert!(!creds.verify_channel_auth("1.2", "private-a", None, "garbage"));

        let member: PresenceMember<'_> = PresenceMember {
            user_id: "7",
            user_info: None,
        };
        let presence = creds
            .authorize_presence_channel("1.2", "presence-a", &member)
            .unwrap();
        let data = presence.channel_data.as_deref();
        assert!(creds.verify_channel_auth("1.2", "presence-a", data, &presence.auth));
        assert!(!creds.verify_channel_auth(
            "1.2",
            "presence-a",
            Some(r#"{"user_id":"8"}"#),
            &presence.auth
        ));

        let user = creds
            .authenticate_user("1.2", &serde_json::json!({"id": "7"}))
            .unwrap();
        assert!(creds.verify_user_auth("1.2", &user.user_data, &user.auth));
        assert!(!creds.verify_user_auth("1.2", r#"{"id":"8"}"#, &user.auth));
    }
}
