//! The `#[cached]` compile-fail suite: each misuse must fail with one readable error that points
//! at the offending token (checked against `ui/fail/*.stderr`), and the pass cases must compile
//! and run. Regenerate the expected output with `TRYBUILD=overwrite`, then read every diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/fail/*.rs");
    cases.pass("ui/pass/*.rs");
}
