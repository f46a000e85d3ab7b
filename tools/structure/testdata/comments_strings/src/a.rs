//! The one real edge: a -> b.
use crate::b::B;

pub fn make() -> B {
    B
}
