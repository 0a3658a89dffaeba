//! A stored record through the runtime's decode_record (three state types).
#![no_main]

use libfuzzer_sys::fuzz_target;

/// ASan's fake stack frames (`detect_stack_use_after_return`) put locals off
/// the thread's stack, and accrete's decoders measure nesting by the
/// address of a local: with them every decode is refused as too deep.
#[unsafe(no_mangle)]
pub extern "C" fn __asan_default_options() -> *const std::ffi::c_char {
    c"detect_stack_use_after_return=0".as_ptr()
}

fuzz_target!(|data: &[u8]| {
    accrete::fuzzing::check(accrete::fuzzing::record(data));
});
