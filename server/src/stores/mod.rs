//! Store backends for the server: the embedded `redb` file store (the default) and,
//! from core, the in-memory store.

pub mod redb;
