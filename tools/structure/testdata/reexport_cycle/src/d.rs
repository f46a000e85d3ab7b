//! d -> c: `crate::c::Inner` is d's own `Inner`, but the path goes through c.
pub struct Inner;

pub fn again() -> crate::c::Inner {
    Inner
}
