//! Fuzz target: `store::fuzzing::coverage_file` must never panic, hang or over-allocate.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = std::hint::black_box(store::fuzzing::coverage_file(data));
});
