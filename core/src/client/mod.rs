//! Clients: registered metadata (RFC 7591 §2) and its validation against the client's
//! profile, client authentication, and dynamic registration with its management
//! protocol (RFC 7591, RFC 7592).

mod auth;
mod metadata;
mod registration;

pub use auth::{
    authenticate, AuthenticatedClient, ClientAuthError, ClientCredentials, ClientDirectory,
    Endpoints, JWT_BEARER_ASSERTION_TYPE, MAX_JTI_LEN,
};

pub(crate) use metadata::https_url;
pub use metadata::{
    forbidden_ip, AuthMethod, ClientMetadata, DeliveryMode, GrantType, MetadataError, SubjectType,
    ValidatedClient,
};
pub use registration::{
    ClientInformation, Provenance, Registrar, RegistrarConfig, RegistrationError,
    SoftwareStatementPolicy, StoreClientDirectory, TrustedStatementIssuer, CLIENT_RECORD_EXPIRY,
    MAX_CLIENT_ID_LEN, MAX_REGISTRATION_BODY_LEN, REGISTRATION_TOKEN_PREFIX,
};
