//! The macros' user interface: misuse is a compile error that names the problem and the fix at
//! the right span (one `.rs` and a reviewed `.stderr` per mistake), and every attribute compiles.

#[test]
fn macro_misuse_is_a_clear_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/fail/*.rs");
}

#[test]
fn every_attribute_compiles_and_behaves() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
}
