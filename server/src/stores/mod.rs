//! Store backends for the server: the embedded `redb` file store (the default), the shared
//! Redis store, and, from core, the in-memory store.

pub mod redb;
pub mod redis;
