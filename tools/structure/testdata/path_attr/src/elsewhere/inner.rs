//! b::inner -> a.
pub struct I;

pub fn g() -> crate::a::A {
    crate::a::A
}
