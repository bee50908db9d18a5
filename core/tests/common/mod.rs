//! Shared test scaffolding: an in-memory client directory.

use std::collections::HashMap;
use std::sync::Arc;

use heartgate_core::client::{ClientDirectory, ClientMetadata, ValidatedClient};
use heartgate_core::jose::JwkSet;

/// Clients by id; their keys are the inline `jwks`.
pub struct Dir(pub HashMap<String, Arc<ValidatedClient>>);

impl ClientDirectory for Dir {
    fn client(&self, id: &str) -> Option<Arc<ValidatedClient>> {
        self.0.get(id).cloned()
    }
    fn keys(&self, c: &ValidatedClient) -> Option<Arc<JwkSet>> {
        c.jwks().cloned().map(Arc::new)
    }
}

/// Parse and validate client metadata, panicking on failure.
#[allow(dead_code)] // reason: not every test file registers clients from JSON
pub fn client(v: serde_json::Value) -> Arc<ValidatedClient> {
    Arc::new(
        ClientMetadata::from_json(v.to_string().as_bytes())
            .unwrap()
            .validate()
            .unwrap(),
    )
}
