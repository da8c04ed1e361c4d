//! The windows tracer fallback. Empty until issue 9 fills it; see README.md.
