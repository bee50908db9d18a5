//! Shared helpers for heartgate's side-by-side benchmarks.
