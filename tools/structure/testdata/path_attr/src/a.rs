//! a -> b, into b's child.
pub struct A;

pub fn f() {
    let _ = crate::b::inner::I;
}
