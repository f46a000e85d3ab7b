//! a depends on b; b names a only where no code is: comments, doc comments,
//! nested block comments, strings of every kind, characters and attributes.
//! There is no cycle.
mod a;
mod b;
