//! Clients: registered metadata (RFC 7591 §2) and its validation against the client's
//! profile. Client authentication and dynamic registration build on this.

mod auth;
mod metadata;

pub use auth::{
    authenticate, AuthenticatedClient, ClientAuthError, ClientCredentials, ClientDirectory,
    Endpoints, JWT_BEARER_ASSERTION_TYPE, MAX_JTI_LEN,
};

pub(crate) use metadata::https_url;
pub use metadata::{
    AuthMethod, ClientMetadata, DeliveryMode, GrantType, MetadataError, SubjectType,
    ValidatedClient,
};
