//! Tracing and jailing of task process trees.
