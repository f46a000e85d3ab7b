//! Files and functions at and over the size limits, and the places the limits do
//! not apply: test modules, test functions, test files and generated code.
mod at_limit;
mod functions;
mod gen;
mod long_file;
mod long_tests_only;
#[cfg(test)]
mod tests;
