//! b -> c through a type path in a signature.
pub fn g() -> u32 {
    0
}

pub fn h(_value: super::c::Value) {}
