//! Clients: registered metadata (RFC 7591 §2) and its validation against the client's
//! profile. Client authentication and dynamic registration build on this.

mod metadata;

pub use metadata::{
    AuthMethod, ClientMetadata, DeliveryMode, GrantType, MetadataError, ValidatedClient,
};
