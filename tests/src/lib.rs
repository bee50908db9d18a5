//! End-to-end tests of heartgate. They arrive with the server issue.
