//! a reaches into its children and they reach back.
mod x;
mod y;

use self::x::X;

pub fn helper() -> Option<X> {
    None
}

mod inline {
    //! An inline child that uses its parent and its siblings.
    use super::y::Y;

    pub fn f() -> Option<Y> {
        super::helper().map(|_| crate::a::y::Y)
    }
}
