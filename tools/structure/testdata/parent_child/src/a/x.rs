//! x -> its parent a, and x -> y, a sibling inside a.
use super::helper;

pub struct X;

pub fn g() {
    let _ = helper();
    let _ = crate::a::y::Y;
}
