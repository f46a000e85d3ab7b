//! d -> a and d -> c: it depends on the ring but nothing in the ring depends on it.
use crate::a::A;
use crate::c::C;
