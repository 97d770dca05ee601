//! Config loader: any text → a `Config` or a non-empty list of problems, never a panic; every
//! location a problem reports lies inside the text, and rendering problems or the summary of a
//! valid configuration never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match airgate::config::parse(text) {
        Ok(config) => {
            let _ = airgate::config::summary(&config);
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "an error with no problem in it");
            let lines = text.split('\n').count();
            for p in problems.iter() {
                if let Some((line, col)) = p.location {
                    assert!(line >= 1 && line <= lines && col >= 1, "{p} outside a text of {lines} lines");
                }
            }
            let _ = problems.to_string();
        }
    }
});
