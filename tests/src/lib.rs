//! Helpers shared by vt's end-to-end suites (see `tests/tests/`).
