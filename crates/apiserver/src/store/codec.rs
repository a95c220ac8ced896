//! What the store writes for a value: the JSON itself, or for Secrets, when the store was opened
//! with [`Encryption`], its AES-GCM ciphertext ([`crate::encryption`]).

use std::sync::Arc;

use super::{Key, StoreError};
use crate::encryption::Encryption;

/// The resource whose values are encrypted, as kube-apiserver's default encryption
/// configuration names it.
const ENCRYPTED_RESOURCE: &str = "/secrets";

/// Turns stored bytes into JSON and back. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Codec {
    encryption: Option<Arc<Encryption>>,
}

fn aad(key: &Key) -> Vec<u8> {
    format!("{}/{}/{}", key.resource, key.namespace, key.name).into_bytes()
}

impl Codec {
    pub(crate) fn new(encryption: Option<Encryption>) -> Codec {
        Codec { encryption: encryption.map(Arc::new) }
    }

    /// The encryption of `resource`'s values, if they are encrypted.
    pub(crate) fn encryption_of(&self, resource: &str) -> Option<&Encryption> {
        self.encryption.as_deref().filter(|_| resource == ENCRYPTED_RESOURCE)
    }

    /// Whether the values of some resource are encrypted (and which one).
    pub(crate) fn encrypted_resource(&self) -> Option<&'static str> {
        self.encryption.as_ref().map(|_| ENCRYPTED_RESOURCE)
    }

    /// The bytes to store for the JSON `plain` of `key`.
    pub(crate) fn seal(&self, key: &Key, plain: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        match self.encryption_of(&key.resource) {
            Some(enc) => enc
                .seal(&aad(key), &plain)
                .map_err(|source| StoreError::Encryption(Box::new((key.clone(), source)))),
            None => Ok(plain),
        }
    }

    /// The JSON of the stored bytes of `key` (unencrypted values pass through).
    pub(crate) fn open(&self, key: &Key, stored: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        match self.encryption.as_deref() {
            Some(enc) if stored.starts_with(crate::encryption::PREFIX.as_bytes()) => enc
                .open(&aad(key), stored)
                .map_err(|source| StoreError::Encryption(Box::new((key.clone(), source)))),
            _ => Ok(stored),
        }
    }
}
