//! Fake peers and process harnesses for tests.
