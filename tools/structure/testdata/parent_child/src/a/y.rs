//! y -> x, a sibling inside a, and y -> a through `crate::`.
use super::x::X;

pub struct Y;

pub fn h() -> Option<X> {
    crate::a::helper()
}
