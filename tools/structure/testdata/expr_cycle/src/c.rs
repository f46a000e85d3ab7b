//! c -> a through a path inside a macro, written with `$crate`.
pub struct Value;

#[macro_export]
macro_rules! make_thing {
    () => {
        $crate::a::Thing
    };
}
