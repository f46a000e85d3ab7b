//! A ring made only of paths in expressions, types and a macro, no `use` lines.
mod a;
mod b;
mod c;
