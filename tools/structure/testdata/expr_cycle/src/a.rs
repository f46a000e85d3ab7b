//! a -> b through a call path.
pub struct Thing;

pub fn f() -> u32 {
    crate::b::g()
}
