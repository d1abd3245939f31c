//! Compile-time checks of errand's macros: see `tests/ui.rs` and the cases under `ui/`.
