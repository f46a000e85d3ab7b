//! The buffer.
